"""Calls and replies: reply trackers, REPLY_TIMEOUT and REPLY_DEAD, synchronous calls and how they
end, and the per-caller limit of pending calls (KDBUS-SPEC.md §5.6-5.8, §3.5).

Deadlines are absolute CLOCK_MONOTONIC values the tests choose; Domain.expire(now) stands for the
edge's timer, so no test waits for time to pass.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from bus_helpers import (
    FAR_FUTURE,
    MSG_AT,
    SERVICE,
    FilesCaller,
    acquire,
    activator,
    call,
    call_sync,
    cancel_fd_item,
    conn_of,
    connect_on,
    drain,
    dst_name_item,
    fds_item,
    free,
    msg_bytes,
    queued,
    read_message,
    receive,
    recv,
    reply,
    send,
    send_raw,
    vec_item,
)
from helpers import BASE, PAGE, STRANGER, Conn, cmd_bytes, connect, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    HELLO_ACCEPT_FD,
    LIST_UNIQUE,
    MSG_EXPECT_REPLY,
    RECV_DROP,
    SEND_SYNC_REPLY,
    Cmd,
    Item,
)
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.message import Passed
from kdbusfs.bus.reply import SyncWait
from kdbusfs.handle import Pending
from kdbusfs.limits import CONN_MAX_REQUESTS_PENDING

DEADLINE = 1_000_000_000



def pair(bus: Bus, **caller_hello: Any) -> tuple[Conn, Conn]:
    return connect(bus, **caller_hello), connect(bus)


def kernel_notes(conn: Conn) -> list[tuple[int, int]]:
    """(notification type, cookie_reply) of every message RECV finds, which must all be the bus's."""
    found = []
    for msg in drain(conn):
        kind, payload = msg.notification
        assert payload == b""  # REPLY_* items carry nothing
        found.append((kind, msg.header.timeout_ns))
    return found


# -- asynchronous calls -------------------------------------------------------------------------

def test_a_reply_reaches_the_caller_once(bus: Bus) -> None:
    caller, replier = pair(bus)
    call(caller, replier.id, cookie=5)
    question = receive(replier)
    assert (question.header.flags, question.header.timeout_ns) == (MSG_EXPECT_REPLY, FAR_FUTURE)
    reply(replier, caller.id, 5, vec_item(replier.caller, b"answer"))
    (answer,) = drain(caller)
    assert (answer.header.src_id, answer.header.timeout_ns, answer.payload) == (replier.id, 5, b"answer")
    with raises_errno(errno.EBADSLT):
        reply(replier, caller.id, 5)
    # Nothing is left to time out.
    assert bus.domain.next_deadline() is None


def test_only_the_called_connection_may_answer_and_only_a_pending_call(bus: Bus) -> None:
    caller, replier = pair(bus)
    intruder = connect(bus)
    call(caller, replier.id, cookie=5)
    with raises_errno(errno.EBADSLT):
        reply(intruder, caller.id, 5)
    with raises_errno(errno.EBADSLT):
        reply(replier, caller.id, 6)
    reply(replier, caller.id, 5)
    assert [m.header.timeout_ns for m in drain(caller)] == [5]


def test_a_reply_needs_no_talk_permission(bus: Bus) -> None:
    caller = connect(bus)
    stranger = connect(bus, STRANGER)
    with raises_errno(errno.EPERM):
        send(stranger, caller.id)
    # The bus creator's connection may call the stranger; the pending call lets the answer through.
    call(caller, stranger.id, cookie=1)
    reply(stranger, caller.id, 1)
    assert [m.header.src_id for m in drain(caller)] == [stranger.id]


def test_an_unanswered_call_times_out_with_a_reply_timeout_notification(bus: Bus) -> None:
    caller, replier = pair(bus, attach_recv=0)
    call(caller, replier.id, cookie=5, timeout_ns=DEADLINE)
    domain = bus.domain
    assert domain.next_deadline() == DEADLINE
    domain.expire(DEADLINE - 1)
    assert not conn_of(caller).queue
    domain.expire(DEADLINE)
    (note,) = drain(caller)
    header = note.header
    # A unicast from the kernel: to the caller, not a signal, answering the call's cookie.
    assert (header.dst_id, header.src_id, header.flags, header.payload_type) == (caller.id, 0, 0, 0)
    assert (header.cookie, header.timeout_ns, header.priority) == (0, 5, 0)
    # Exactly the notification item (16 bytes, no payload) and a TIMESTAMP, whatever the
    # caller's attach flags.
    assert note.types == [Item.REPLY_TIMEOUT, Item.TIMESTAMP]
    assert note.pool_bytes[64:80] == structs.ITEM_HEADER.pack(16, Item.REPLY_TIMEOUT)
    assert domain.next_deadline() is None
    # The call itself stays with the replier, but answering it is too late.
    assert [m.header.cookie for m in queued(replier)] == [5]
    with raises_errno(errno.EBADSLT):
        reply(replier, caller.id, 5)


def test_deadlines_fire_in_their_order_and_answered_calls_never(bus: Bus) -> None:
    caller, replier = pair(bus)
    call(caller, replier.id, cookie=1, timeout_ns=300)
    call(caller, replier.id, cookie=2, timeout_ns=100)
    call(caller, replier.id, cookie=3, timeout_ns=200)
    reply(replier, caller.id, 2)
    drain(caller)
    assert bus.domain.next_deadline() == 200
    bus.domain.expire(250)
    assert kernel_notes(caller) == [(Item.REPLY_TIMEOUT, 3)]
    assert bus.domain.next_deadline() == 300
    bus.domain.expire(10_000)
    assert kernel_notes(caller) == [(Item.REPLY_TIMEOUT, 1)]


def test_a_deadline_already_past_fires_at_the_next_expiry(bus: Bus) -> None:
    caller, replier = pair(bus)
    call(caller, replier.id, cookie=9, timeout_ns=1)
    assert len(conn_of(replier).queue) == 1  # still delivered
    bus.domain.expire(2)
    assert kernel_notes(caller) == [(Item.REPLY_TIMEOUT, 9)]


def test_a_dropped_call_is_answered_with_reply_dead(bus: Bus) -> None:
    caller, replier = pair(bus)
    call(caller, replier.id, cookie=4)
    recv(replier, RECV_DROP)
    assert kernel_notes(caller) == [(Item.REPLY_DEAD, 4)]
    with raises_errno(errno.EBADSLT):
        reply(replier, caller.id, 4)
    bus.domain.expire(FAR_FUTURE)
    assert not conn_of(caller).queue


@pytest.mark.parametrize("received", [False, True], ids=["still-queued", "already-received"])
def test_a_replier_that_leaves_sends_one_reply_dead_per_pending_call(bus: Bus, received: bool) -> None:
    caller, replier = pair(bus)
    call(caller, replier.id, cookie=1)
    call(caller, replier.id, cookie=2)
    if received:
        drain(replier)
    conn_of(replier).disconnect()
    assert kernel_notes(caller) == [(Item.REPLY_DEAD, 1), (Item.REPLY_DEAD, 2)]
    assert list(conn_of(caller).trackers) == []


def test_a_caller_that_leaves_forgets_its_calls(bus: Bus) -> None:
    caller, replier = pair(bus)
    call(caller, replier.id, cookie=1, timeout_ns=DEADLINE)
    conn_of(caller).disconnect()
    assert conn_of(replier).awaited == []
    bus.domain.expire(DEADLINE)
    assert bus.domain.next_deadline() is None
    # The call is still there to read, but there is nobody to answer.
    assert [m.header.cookie for m in drain(replier)] == [1]
    with raises_errno(errno.ENXIO):
        reply(replier, caller.id, 1)


def test_a_caller_has_at_most_128_calls_pending(bus: Bus) -> None:
    caller, replier = pair(bus)
    for cookie in range(1, CONN_MAX_REQUESTS_PENDING + 1):
        call(caller, replier.id, cookie=cookie)
    with raises_errno(errno.EMLINK):
        call(caller, replier.id, cookie=1000)
    assert len(conn_of(replier).queue) == CONN_MAX_REQUESTS_PENDING
    # Plain messages are not calls: they still go.
    send(caller, replier.id)
    # An answer frees a slot.
    reply(replier, caller.id, 1)
    call(caller, replier.id, cookie=1000)


def test_a_notification_that_does_not_fit_is_lost_silently(bus: Bus) -> None:
    caller = connect(bus, pool_size=PAGE)
    replier = connect(bus)
    call(caller, replier.id, cookie=1, timeout_ns=DEADLINE)
    # Fill the caller's pool with query results it keeps.
    while conn_of(caller).pool.free_size() >= 48:  # two 24-byte records per LIST
        run(caller.handle, caller.caller, Cmd.LIST, cmd_bytes(structs.CMD_LIST, flags=LIST_UNIQUE))
    bus.domain.expire(DEADLINE)
    c = conn_of(caller)
    # Unlike a lost broadcast, a lost unicast notification is not counted.
    assert (len(c.queue), c.lost, c.trackers) == (0, 0, [])


def test_a_call_through_a_name_is_answered_by_whoever_takes_the_name(bus: Bus) -> None:
    activator(bus)
    caller, implementer = connect(bus), connect(bus)
    pending = call_sync(caller, 0, cookie=8, items=dst_name_item(SERVICE))
    acquire(implementer)
    receive(implementer)
    reply(implementer, caller.id, 8)
    assert (pending.wait.errno, pending.wait.caller) == (0, conn_of(caller))


# -- synchronous calls --------------------------------------------------------------------------

def test_a_synchronous_reply_lands_in_the_callers_pool_not_in_its_queue(bus: Bus) -> None:
    caller, replier = pair(bus)
    pending = call_sync(caller, replier.id, cookie=3)
    wait = pending.wait
    assert not wait.done and bus.domain.completed == ()
    assert conn_of(caller).sync_waits == [wait]
    question = receive(replier)
    assert question.header.cookie == 3
    reply(replier, caller.id, 3, vec_item(replier.caller, b"the answer"))
    assert (wait.errno, bus.domain.completed) == (0, (wait,))
    assert wait.reply is not None
    offset, size, return_flags = wait.reply
    assert return_flags == 0
    assert not conn_of(caller).queue and conn_of(caller).sync_waits == []
    answer = read_message(conn_of(caller).pool, offset)
    assert (answer.header.timeout_ns, answer.header.src_id, answer.payload) == (3, replier.id, b"the answer")
    assert size == (answer.header.size + 7 & ~7) + 16
    # The slice is published: the caller frees it like a received message.
    free(caller, offset)


def test_a_synchronous_call_past_its_deadline_is_etimedout_and_not_sent(bus: Bus) -> None:
    caller, replier = pair(bus)
    with raises_errno(errno.ETIMEDOUT):
        send_raw(caller, msg_bytes(replier.id, flags=MSG_EXPECT_REPLY, cookie=1, timeout_or_reply=1),
                 SEND_SYNC_REPLY)
    assert not conn_of(replier).queue and conn_of(caller).trackers == []


def test_a_synchronous_call_times_out_with_etimedout_and_no_notification(bus: Bus) -> None:
    caller, replier = pair(bus)
    pending = call_sync(caller, replier.id, cookie=1)
    bus.domain.expire(FAR_FUTURE)
    assert pending.wait.errno == errno.ETIMEDOUT
    assert not conn_of(caller).queue
    with raises_errno(errno.EBADSLT):
        reply(replier, caller.id, 1)


@pytest.mark.parametrize("how", ["drop", "disconnect"])
def test_a_synchronous_caller_whose_call_dies_gets_epipe(bus: Bus, how: str) -> None:
    caller, replier = pair(bus)
    pending = call_sync(caller, replier.id, cookie=1)
    if how == "drop":
        recv(replier, RECV_DROP)
    else:
        conn_of(replier).disconnect()
    assert pending.wait.errno == errno.EPIPE
    assert not conn_of(caller).queue  # no REPLY_DEAD for a blocked caller


def test_a_synchronous_caller_that_says_goodbye_gets_econnreset(bus: Bus) -> None:
    caller, replier = pair(bus)
    pending = call_sync(caller, replier.id, cookie=1)
    # Another thread of the caller: BYEBYE does not wait for the blocked SEND.
    run(caller.handle, caller.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    assert pending.wait.errno == errno.ECONNRESET
    drain(replier)
    with raises_errno(errno.ENXIO):
        reply(replier, caller.id, 1)


def test_a_cancelled_synchronous_call_is_ecanceled_and_a_late_reply_finds_nothing(bus: Bus) -> None:
    caller_task = FilesCaller()
    caller = connect_on(bus.default_endpoint, caller=caller_task)
    replier = connect(bus)
    pending = call_sync(caller, replier.id, cookie=1, cmd_items=cancel_fd_item(9))
    wait = pending.wait
    # The edge watches the daemon's duplicate of the cancel fd.
    assert wait.cancel_fd == 1001 and caller_task.closed == []
    wait.cancel()
    assert wait.errno == errno.ECANCELED and conn_of(caller).trackers == []
    wait.cancel()  # a second readiness changes nothing
    assert bus.domain.completed == (wait,)
    with raises_errno(errno.EBADSLT):
        reply(replier, caller.id, 1)


def test_a_reply_with_fds_to_a_caller_that_refuses_them_is_eremoteio_for_the_caller(bus: Bus) -> None:
    caller = connect(bus)
    replier = connect_on(bus.default_endpoint, caller=FilesCaller())
    pending = call_sync(caller, replier.id, cookie=1)
    with raises_errno(errno.ECOMM):
        reply(replier, caller.id, 1, fds_item(4))
    assert pending.wait.errno == errno.EREMOTEIO


def test_a_reply_with_fds_to_an_accepting_caller_is_handed_to_the_edge(bus: Bus) -> None:
    caller = connect(bus, flags=HELLO_ACCEPT_FD)
    replier_task = FilesCaller()
    replier = connect_on(bus.default_endpoint, caller=replier_task)
    pending = call_sync(caller, replier.id, cookie=1)
    reply(replier, caller.id, 1, fds_item(4))
    wait = pending.wait
    assert wait.errno == 0 and wait.reply is not None and wait.passed is not None
    # The fd numbers read -1 until the edge installs them, hence INCOMPLETE_FDS for now.
    assert wait.reply[2] == 1 and wait.passed.fds == [1001]


def test_a_synchronous_reply_that_does_not_fit_the_callers_pool_fails_on_both_sides(bus: Bus) -> None:
    caller = connect(bus, pool_size=PAGE)
    replier = connect(bus)
    pending = call_sync(caller, replier.id, cookie=1)
    with raises_errno(errno.EXFULL):
        reply(replier, caller.id, 1, vec_item(replier.caller, b"r" * (PAGE - 100)))
    assert pending.wait.errno == errno.EXFULL


def test_a_reply_to_a_caller_that_was_killed_while_waiting_is_taken_and_dropped(bus: Bus) -> None:
    caller, replier = pair(bus)
    pending = call_sync(caller, replier.id, cookie=1)
    pending.wait.finish(errno.EINTR)  # the edge ends the call of a dying task
    free_before = conn_of(caller).pool.free_size()
    reply(replier, caller.id, 1)
    assert pending.wait.errno == errno.EINTR
    assert conn_of(caller).pool.free_size() == free_before and not conn_of(caller).queue


def test_a_result_arriving_after_the_wait_ended_releases_its_descriptors(bus: Bus) -> None:
    caller = connect(bus)
    released: list[int] = []
    wait = SyncWait(conn_of(caller))
    wait.finish(errno.ETIMEDOUT)
    wait.finish(0, (0, 64, 0), Passed([7, 8], [80, 84], released.extend))
    assert (wait.errno, wait.reply, wait.passed, released) == (errno.ETIMEDOUT, None, None, [7, 8])


def test_a_synchronous_send_returns_pending_for_the_edge(bus: Bus) -> None:
    caller, replier = pair(bus)
    pending = call_sync(caller, replier.id, cookie=1)
    assert isinstance(pending, Pending)
    # Where to write the answer: the command struct and the message the caller passed.
    assert (pending.address, pending.msg_address) == (BASE, BASE + MSG_AT)
