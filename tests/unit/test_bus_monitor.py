"""Monitors: eavesdroppers that get a copy of every message on the bus, before its recipients, and
that the bus does not announce (KDBUS-SPEC.md §3.1, §5.5, §5.11, §8.2)."""

from __future__ import annotations

import errno

import pytest
from bus_helpers import (
    FAR_FUTURE,
    SERVICE,
    FilesCaller,
    Message,
    acquire,
    add_match,
    broadcast,
    call,
    call_sync,
    conn_of,
    connect_on,
    drain,
    fds_item,
    from_connections,
    make_endpoint,
    monitor,
    msg_bytes,
    notifications,
    queued,
    recv,
    recv_eagain,
    reply,
    send,
    send_raw,
    unicast_signal,
    vec_item,
)
from helpers import PAGE, STRANGER, cmd_bytes, connect, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    DST_ID_BROADCAST,
    HELLO_ACCEPT_FD,
    HELLO_MONITOR,
    MSG_EXPECT_REPLY,
    RECV_RETURN_INCOMPLETE_FDS,
    SEND_SYNC_REPLY,
    Attach,
    Cmd,
    Item,
)
from kdbusfs.abi.items import string_item, u64_item
from kdbusfs.bus.bus import Bus


def cookies(messages: list[Message]) -> list[int]:
    return [m.header.cookie for m in messages]


def test_a_monitor_gets_unicasts_calls_and_replies_alongside_their_recipients(bus: Bus) -> None:
    watching = monitor(bus)
    caller, callee = connect(bus), connect(bus)
    send(caller, callee.id, vec_item(caller.caller, b"payload"), cookie=1)
    call(caller, callee.id, cookie=2)
    reply(callee, caller.id, 2, cookie=3)
    seen = from_connections(watching)
    assert [(m.header.src_id, m.header.dst_id, m.header.cookie) for m in seen] == [
        (caller.id, callee.id, 1), (caller.id, callee.id, 2), (callee.id, caller.id, 3)]
    assert seen[0].payload == b"payload" and seen[2].header.timeout_ns == 2
    assert cookies(drain(callee)) == [1, 2] and cookies(drain(caller)) == [3]


def test_a_monitor_sees_a_synchronous_reply_that_no_queue_gets(bus: Bus) -> None:
    watching = monitor(bus)
    caller, callee = connect(bus), connect(bus)
    pending = call_sync(caller, callee.id, cookie=1)
    reply(callee, caller.id, 1, cookie=2)
    assert pending.wait.errno == 0 and not conn_of(caller).queue
    assert cookies(from_connections(watching)) == [1, 2]


def test_a_monitor_has_its_copy_even_when_the_recipient_refuses_the_message(bus: Bus) -> None:
    watching = monitor(bus, pool_size=64 * PAGE)
    sender, receiver = connect(bus), connect(bus, pool_size=PAGE)
    # kdbus queues the monitor's copy first, so the monitor never misses a cause.
    with raises_errno(errno.ENOBUFS):
        send(sender, receiver.id, vec_item(sender.caller, b"x" * 1000), cookie=1)
    assert cookies(from_connections(watching)) == [1]
    assert not conn_of(receiver).queue


def test_a_monitor_does_not_see_what_is_refused_before_delivery(bus: Bus) -> None:
    watching = monitor(bus)
    sender = connect(bus)
    stranger = connect(bus, STRANGER)
    with raises_errno(errno.EPERM):
        send(stranger, sender.id, cookie=1)
    with raises_errno(errno.ENXIO):
        send(sender, 999_999, cookie=2)
    with raises_errno(errno.EINVAL):
        send(sender, stranger.id, payload_type=0, cookie=3)
    assert from_connections(watching) == []


def test_a_monitor_gets_broadcasts_and_signals_nobody_else_takes(bus: Bus) -> None:
    watching = monitor(bus)
    sender, deaf = connect(bus), connect(bus)
    broadcast(sender, cookie=1)
    unicast_signal(sender, deaf.id, cookie=2)  # dropped: the addressee has no match
    assert not conn_of(deaf).queue
    seen = from_connections(watching)
    assert [(m.header.dst_id, m.header.cookie) for m in seen] == [(DST_ID_BROADCAST, 1), (deaf.id, 2)]


def test_a_monitor_gets_every_notification_unicast_ones_included(bus: Bus) -> None:
    watching = monitor(bus)
    caller, callee = connect(bus), connect(bus)
    acquire(callee)
    call(caller, callee.id, cookie=7, timeout_ns=100)
    bus.domain.expire(100)
    drain(caller)
    seen = [m for m in drain(watching) if m.header.src_id == 0]
    assert [m.notification[0] for m in seen] == [Item.ID_ADD, Item.ID_ADD, Item.NAME_ADD,
                                                 Item.REPLY_TIMEOUT]
    assert (seen[-1].header.dst_id, seen[-1].header.timeout_ns) == (caller.id, 7)


def test_monitors_are_not_announced(bus: Bus) -> None:
    everything = connect(bus)
    add_match(everything, b"")
    watching = monitor(bus)
    conn_of(watching).disconnect()
    assert notifications(everything) == []


@pytest.mark.parametrize(("cmd", "data"), [
    (Cmd.SEND, cmd_bytes(structs.CMD_SEND)),
    (Cmd.NAME_ACQUIRE, cmd_bytes(structs.CMD, string_item(Item.NAME, SERVICE))),
    (Cmd.NAME_RELEASE, cmd_bytes(structs.CMD, string_item(Item.NAME, SERVICE))),
    (Cmd.MATCH_ADD, cmd_bytes(structs.CMD_MATCH)),
    (Cmd.MATCH_REMOVE, cmd_bytes(structs.CMD_MATCH)),
    (Cmd.BYEBYE, cmd_bytes(structs.CMD)),
], ids=lambda v: v.name if isinstance(v, Cmd) else "")
def test_a_monitor_only_listens(bus: Bus, cmd: Cmd, data: bytes) -> None:
    watching = monitor(bus)
    with raises_errno(errno.EOPNOTSUPP):
        run(watching.handle, watching.caller, cmd, data)


def test_a_monitor_may_change_both_attach_masks(bus: Bus) -> None:
    watching = monitor(bus)
    items = u64_item(Item.ATTACH_FLAGS_SEND, Attach.CREDS) + u64_item(Item.ATTACH_FLAGS_RECV, Attach.PIDS)
    run(watching.handle, watching.caller, Cmd.UPDATE, cmd_bytes(structs.CMD, items))
    c = conn_of(watching)
    assert (c.attach_flags_send, c.attach_flags_recv) == (Attach.CREDS, Attach.PIDS)


def test_a_monitor_that_cannot_take_a_message_counts_it_lost(bus: Bus) -> None:
    sender, receiver = connect(bus), connect(bus)
    watching = monitor(bus, pool_size=PAGE)
    send(sender, receiver.id, vec_item(sender.caller, b"x" * 1000), cookie=1)
    assert cookies(drain(receiver)) == [1]
    got = recv_eagain(watching)
    assert got.dropped_msgs == 1


@pytest.mark.parametrize(("mask", "expected"), [
    (0, []),
    (Attach.TIMESTAMP | Attach.CREDS, [Item.CREDS, Item.TIMESTAMP]),
])
def test_a_monitor_gets_the_metadata_it_asked_for(bus: Bus, mask: int, expected: list[int]) -> None:
    watching = monitor(bus, attach_recv=mask)
    sender, receiver = connect(bus), connect(bus)
    send(sender, receiver.id)
    (seen,) = from_connections(watching)
    assert seen.types == expected


def test_a_monitor_gets_messages_with_fds_but_never_the_fds(bus: Bus) -> None:
    sender = connect_on(bus.default_endpoint, caller=FilesCaller())
    receiver = connect_on(bus.default_endpoint, caller=FilesCaller(), flags=HELLO_ACCEPT_FD)
    watching = monitor(bus)  # without ACCEPT_FD
    send(sender, receiver.id, fds_item(3, 4))
    got = recv(watching)
    assert got.msg_return_flags == RECV_RETURN_INCOMPLETE_FDS
    fds = conn_of(watching).pool.buffer[got.msg_offset + 64 + 16 : got.msg_offset + 64 + 24]
    assert bytes(fds) == b"\xff" * 8


def test_every_monitor_gets_its_own_copy(bus: Bus) -> None:
    sender = connect(bus)
    first, second = monitor(bus), monitor(bus)
    send(sender, sender.id, cookie=4)
    assert cookies(queued(first)) == cookies(queued(second)) == [4]


def test_monitors_are_refused_on_custom_endpoints(bus: Bus) -> None:
    owner = make_endpoint(bus)
    with raises_errno(errno.EOPNOTSUPP):
        connect_on(owner.endpoint, flags=HELLO_MONITOR)


def test_a_monitor_sees_a_synchronous_call_only_once_it_is_sent(bus: Bus) -> None:
    watching = monitor(bus)
    caller, callee = connect(bus), connect(bus)
    # A deadline already past: refused before anything is sent.
    with raises_errno(errno.ETIMEDOUT):
        send_raw(caller, msg_bytes(callee.id, flags=MSG_EXPECT_REPLY, cookie=1, timeout_or_reply=1),
                 SEND_SYNC_REPLY)
    call_sync(caller, callee.id, cookie=2, timeout_ns=FAR_FUTURE)
    assert cookies(from_connections(watching)) == [2]
