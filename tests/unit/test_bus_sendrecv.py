"""SEND and RECV through the ioctl frame: what lands where in the receiver's pool, the queue's order
and priorities, PEEK / DROP / FREE, quotas and lost broadcasts (KDBUS-SPEC.md §2.13-2.14, §4, §5)."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from bus_helpers import (
    ANY_SIGNAL,
    FAR_FUTURE,
    FilesCaller,
    access_item,
    acquire,
    activator,
    add_match,
    bloom_filter_item,
    broadcast,
    call,
    cancel_fd_item,
    conn_of,
    connect_on,
    drain,
    dst_name_item,
    fds_item,
    free,
    id_rule,
    monitor,
    msg_bytes,
    null_vec_item,
    policy_holder,
    queued,
    read_message,
    receive,
    recv,
    recv_eagain,
    send,
    send_raw,
    vec_item,
)
from helpers import PAGE, POOL_SIZE, STRANGER, Conn, cmd_bytes, connect, make_bus, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    DST_ID_BROADCAST,
    HELLO_ACCEPT_FD,
    LIST_UNIQUE,
    MSG_EXPECT_REPLY,
    MSG_SIGNAL,
    PAYLOAD_DBUS,
    POLICY_ACCESS_WORLD,
    POLICY_TALK,
    RECV_DROP,
    RECV_PEEK,
    RECV_RETURN_DROPPED_MSGS,
    RECV_USE_PRIORITY,
    SEND_SYNC_REPLY,
    Attach,
    Cmd,
    Item,
)
from kdbusfs.abi.items import item, string_item
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.domain import Domain, DomainLimits
from kdbusfs.bus.message import NULL_VEC_OFFSET
from kdbusfs.limits import CONN_MAX_MSGS

# The pool size kdbus's selftests use.
SELFTEST_POOL = 16 * 1024 * 1024



def pair(bus: Bus, **receiver_hello: Any) -> tuple[Conn, Conn]:
    return connect(bus), connect(bus, **receiver_hello)


# -- what a receiver finds (§5.10) --------------------------------------------------------------

def test_a_unicast_lands_as_sent_with_vectors_turned_into_offsets_into_the_slice(bus: Bus) -> None:
    sender, receiver = pair(bus)
    caller = sender.caller
    items = vec_item(caller, b"hello", 0x8000) + null_vec_item(3) + vec_item(caller, b"world!!!", 0x8100)
    out = send(sender, receiver.id, items, priority=-3, cookie=0xC0FFEE)
    # No synchronous reply: the reply field reads "empty".
    assert (out.reply_offset, out.reply_msg_size, out.reply_return_flags) == (POOL_SIZE, 0, 0)
    got = recv(receiver)
    msg = read_message(conn_of(receiver).pool, got.msg_offset)
    header = msg.header
    # Three 32-byte PAYLOAD_OFF items, no metadata (the receiver asked for none).
    assert header.size == 64 + 3 * 32
    assert (header.flags, header.priority, header.dst_id, header.src_id) == (0, -3, receiver.id, sender.id)
    assert (header.payload_type, header.cookie, header.timeout_ns) == (PAYLOAD_DBUS, 0xC0FFEE, 0)
    offsets = [structs.VEC.unpack(payload) for payload in msg.all(Item.PAYLOAD_OFF)]
    # The payload stream starts at ALIGN8(msg.size): "hello", the NULL vec's 3 % 8 zero bytes,
    # then the 8-aligned second vector; NULL vectors read ~0.
    assert [(v.size, v.address) for v in offsets] == [(5, 160), (3, NULL_VEC_OFFSET), (8, 168)]
    slice_bytes = bytes(conn_of(receiver).pool.buffer[got.msg_offset : got.msg_offset + got.msg_msg_size])
    assert slice_bytes[160:176] == b"hello\0\0\0world!!!"
    assert got.msg_msg_size == 176  # header, items and payload, 8-aligned
    assert msg.payload == b"helloworld!!!"


def test_metadata_comes_after_the_items_and_pushes_the_payload_further(bus: Bus) -> None:
    sender = connect(bus, items=string_item(Item.CONN_DESCRIPTION, "sender"))
    receiver = connect(bus, attach_recv=Attach.TIMESTAMP | Attach.NAMES | Attach.CONN_DESCRIPTION)
    acquire(sender, "org.example.sender")
    send(sender, receiver.id, vec_item(sender.caller, b"data"))
    msg = receive(receiver)
    # The sender attaches names, description and timestamp whatever its own send mask (implicit
    # items), in kdbus's order.
    assert msg.types == [Item.PAYLOAD_OFF, Item.OWNED_NAME, Item.CONN_DESCRIPTION, Item.TIMESTAMP]
    assert msg.first(Item.OWNED_NAME)[8:] == b"org.example.sender\0"
    assert msg.first(Item.CONN_DESCRIPTION) == b"sender\0"
    size, offset = structs.VEC.struct.unpack(msg.first(Item.PAYLOAD_OFF))
    assert (size, offset) == (4, (msg.header.size + 7) & ~7)
    assert msg.payload == b"data"


def test_every_send_gets_the_next_bus_sequence_number(bus: Bus) -> None:
    sender, receiver = pair(bus, attach_recv=Attach.TIMESTAMP)
    for _ in range(3):
        send(sender, receiver.id)
    seqnums = [m.seqnum for m in drain(receiver)]
    assert seqnums == sorted(seqnums) and len(set(seqnums)) == 3


def test_a_connection_may_send_to_itself(bus: Bus) -> None:
    conn = connect(bus)
    send(conn, conn.id, cookie=5)
    assert receive(conn).header.src_id == conn.id


def test_src_id_may_be_zero_or_the_senders_own(bus: Bus) -> None:
    sender, receiver = pair(bus)
    send(sender, receiver.id, src_id=sender.id)
    with raises_errno(errno.EINVAL):
        send(sender, receiver.id, src_id=receiver.id)
    assert [m.header.src_id for m in drain(receiver)] == [sender.id]


# -- refusals (§5.2, §5.3, §5.12) ---------------------------------------------------------------

@pytest.mark.parametrize(("fields", "items", "cmd_flags", "expected"), [
    ({"payload_type": 0}, b"", 0, errno.EINVAL),
    ({"dst_id": DST_ID_BROADCAST}, b"", 0, errno.EBADMSG),
    ({"dst_id": DST_ID_BROADCAST, "flags": MSG_SIGNAL, "timeout_or_reply": 1}, bloom_filter_item(), 0,
     errno.ENOTUNIQ),
    ({"flags": MSG_EXPECT_REPLY}, b"", 0, errno.EINVAL),
    ({"flags": MSG_EXPECT_REPLY | MSG_SIGNAL, "timeout_or_reply": FAR_FUTURE}, bloom_filter_item(), 0,
     errno.ENOTUNIQ),
    ({}, b"", SEND_SYNC_REPLY, errno.EINVAL),
    ({"flags": MSG_SIGNAL, "timeout_or_reply": 7}, bloom_filter_item(), 0, errno.EINVAL),
    ({"flags": MSG_SIGNAL}, b"", 0, errno.EBADMSG),
    ({}, bloom_filter_item(), 0, errno.EBADMSG),
    ({"flags": MSG_SIGNAL}, bloom_filter_item(bytes(32)), 0, errno.EDOM),
    ({"dst_id": 0}, b"", 0, errno.EDESTADDRREQ),
    ({"dst_id": DST_ID_BROADCAST, "flags": MSG_SIGNAL}, bloom_filter_item() + dst_name_item("a.b"), 0,
     errno.EBADMSG),
    ({"dst_id": 0}, dst_name_item("not-a-name"), 0, errno.EINVAL),
    ({"dst_id": 0}, dst_name_item("org.example.nobody"), 0, errno.ESRCH),
], ids=["payload-type-0", "broadcast-not-signal", "broadcast-timeout", "call-no-timeout",
        "call-signal", "sync-not-call", "signal-reply", "signal-no-bloom", "bloom-not-signal",
        "bloom-size", "no-destination", "broadcast-dst-name", "bad-dst-name", "unowned-dst-name"])
def test_malformed_messages_are_refused_with_kdbus_errno(
        bus: Bus, fields: dict[str, int], items: bytes, cmd_flags: int, expected: int) -> None:
    sender, receiver = pair(bus)
    fields = {"dst_id": receiver.id, **fields}
    with raises_errno(expected):
        send_raw(sender, msg_bytes(items=items, **fields), cmd_flags)
    assert not conn_of(receiver).queue


def test_a_wrong_src_id_is_refused_before_the_message_is_examined(bus: Bus) -> None:
    sender, other = pair(bus)
    with raises_errno(errno.EINVAL):
        send(sender, DST_ID_BROADCAST, src_id=other.id)


def test_the_message_is_parsed_before_the_cancel_fd_is_looked_up(bus: Bus) -> None:
    sender, receiver = pair(bus)  # the fake task has no open fds: fd 9 is EBADF
    with raises_errno(errno.EINVAL):
        send_raw(sender, msg_bytes(receiver.id, flags=1 << 10), cmd_items=cancel_fd_item(9))


@pytest.mark.parametrize("kind", ["unknown", "activator", "monitor", "policy holder"])
def test_only_ordinary_connections_are_addressable_by_id(bus: Bus, kind: str) -> None:
    sender = connect(bus)
    if kind == "activator":
        target_id = activator(bus).id
    elif kind == "monitor":
        target_id = monitor(bus).id
    elif kind == "policy holder":
        target_id = policy_holder(bus, "org.example.policy").id
    else:
        target_id = 999_999
    with raises_errno(errno.ENXIO):
        send(sender, target_id)


def test_only_ordinary_connections_may_send(bus: Bus) -> None:
    watcher = monitor(bus)
    receiver = connect(bus)
    with raises_errno(errno.EOPNOTSUPP):
        send(watcher, receiver.id)


def test_fds_to_a_receiver_that_does_not_accept_them_are_ecomm(bus: Bus) -> None:
    sender = connect_on(bus.default_endpoint, caller=FilesCaller())
    receiver = connect(bus)
    with raises_errno(errno.ECOMM):
        send(sender, receiver.id, fds_item(3))
    accepting = connect(bus, flags=HELLO_ACCEPT_FD)
    send(sender, accepting.id, fds_item(3))
    assert len(conn_of(accepting).queue) == 1


def test_a_cancel_fd_on_an_asynchronous_send_is_checked_and_let_go(bus: Bus) -> None:
    caller = FilesCaller()
    sender = connect_on(bus.default_endpoint, caller=caller)
    receiver = connect(bus)
    send_raw(sender, msg_bytes(receiver.id), cmd_items=cancel_fd_item(9))
    # The daemon's duplicate is closed at once: only synchronous calls watch it.
    assert caller.closed == [1001]
    assert len(conn_of(receiver).queue) == 1


# -- RECV, PEEK, DROP, FREE (§2.9, §4, §5.9) ----------------------------------------------------

def test_recv_takes_messages_in_fifo_order(bus: Bus) -> None:
    sender, receiver = pair(bus)
    for cookie in (1, 2, 3):
        send(sender, receiver.id, cookie=cookie)
    assert [m.header.cookie for m in drain(receiver)] == [1, 2, 3]


def test_recv_on_an_empty_queue_is_eagain_and_reports_no_message(bus: Bus) -> None:
    receiver = connect(bus)
    got = recv_eagain(receiver)
    assert (got.msg_offset, got.msg_msg_size, got.dropped_msgs, got.return_flags) == (POOL_SIZE, 0, 0, 0)


def test_a_received_slice_stays_until_freed_and_is_freed_once(bus: Bus) -> None:
    sender, receiver = pair(bus)
    pool = conn_of(receiver).pool
    free_before = pool.free_size()
    send(sender, receiver.id, vec_item(sender.caller, b"x" * 100))
    got = recv(receiver)
    assert pool.free_size() == free_before - got.msg_msg_size
    free(receiver, got.msg_offset)
    assert pool.free_size() == free_before
    with raises_errno(errno.ENXIO):
        free(receiver, got.msg_offset)


def test_a_queued_but_unpublished_slice_cannot_be_freed(bus: Bus) -> None:
    sender, receiver = pair(bus)
    send(sender, receiver.id)
    entry = conn_of(receiver).queue.peek()
    assert entry is not None
    with raises_errno(errno.ENXIO):
        free(receiver, entry.slice.offset)


def test_peek_leaves_the_message_queued_and_free_after_peek_only_drops_the_clients_reference(
        bus: Bus) -> None:
    sender, receiver = pair(bus)
    send(sender, receiver.id, cookie=1)
    send(sender, receiver.id, cookie=2)
    first = recv(receiver, RECV_PEEK)
    again = recv(receiver, RECV_PEEK)
    assert first.msg_offset == again.msg_offset
    free(receiver, first.msg_offset)
    assert len(conn_of(receiver).queue) == 2
    # The next RECV republishes the same slice.
    got = recv(receiver)
    assert got.msg_offset == first.msg_offset
    assert read_message(conn_of(receiver).pool, got.msg_offset).header.cookie == 1
    assert [m.header.cookie for m in queued(receiver)] == [2]


def test_drop_removes_the_next_message_without_publishing_it(bus: Bus) -> None:
    sender, receiver = pair(bus)
    pool = conn_of(receiver).pool
    free_before = pool.free_size()
    send(sender, receiver.id, cookie=1)
    send(sender, receiver.id, cookie=2)
    got = recv(receiver, RECV_DROP)
    assert (got.msg_offset, got.msg_msg_size) == (POOL_SIZE, 0)
    assert [m.header.cookie for m in drain(receiver)] == [2]
    assert pool.free_size() == free_before


def test_a_peeked_then_dropped_message_keeps_its_slice_until_freed(bus: Bus) -> None:
    sender, receiver = pair(bus)
    pool = conn_of(receiver).pool
    free_before = pool.free_size()
    send(sender, receiver.id)
    peeked = recv(receiver, RECV_PEEK)
    recv(receiver, RECV_DROP)
    recv_eagain(receiver)
    assert pool.free_size() < free_before  # the client may still be reading it
    free(receiver, peeked.msg_offset)
    assert pool.free_size() == free_before


def test_drop_by_priority_is_einval(bus: Bus) -> None:
    sender, receiver = pair(bus)
    send(sender, receiver.id)
    with raises_errno(errno.EINVAL):
        recv(receiver, RECV_DROP | RECV_USE_PRIORITY)
    assert len(conn_of(receiver).queue) == 1


def test_priorities_take_the_lowest_value_within_the_limit_fifo_among_equals(bus: Bus) -> None:
    """kdbus's message-prio selftest, step by step."""
    sender, receiver = pair(bus)
    for cookie, priority in enumerate([25, -600, 10, -35, -100, 20, -15, -800, -150, 10, -800, -10]):
        send(sender, receiver.id, priority=priority, cookie=cookie)

    def next_with_priority(limit: int) -> tuple[int, int]:
        msg = receive(receiver, RECV_USE_PRIORITY, limit)
        free(receiver, msg.offset)
        return msg.header.priority, msg.header.cookie

    # The two -800s come out in the order they were sent.
    assert next_with_priority(-200) == (-800, 7)
    assert next_with_priority(-100) == (-800, 10)
    assert next_with_priority(-400) == (-600, 1)
    recv_eagain(receiver, RECV_USE_PRIORITY, -400)
    assert next_with_priority(10) == (-150, 8)
    assert next_with_priority(10) == (-100, 4)
    # Without USE_PRIORITY the oldest remaining message comes first.
    assert [m.header.priority for m in drain(receiver)] == [25, 10, -35, 20, -15, 10, -10]


def test_byebye_with_queued_messages_is_ebusy(bus: Bus) -> None:
    sender, receiver = pair(bus)
    send(sender, receiver.id)
    with raises_errno(errno.EBUSY):
        run(receiver.handle, receiver.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    assert conn_of(receiver).active
    drain(receiver)
    run(receiver.handle, receiver.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    assert not conn_of(receiver).active


# -- quotas (§4) --------------------------------------------------------------------------------

def test_one_sending_user_may_fill_a_third_of_the_receivers_incoming_half(bus: Bus) -> None:
    sender, receiver = pair(bus)
    # Bare 64-byte messages into a 64 KiB pool: the user's share is (32768 - used + own) / 3 =
    # 10922 bytes, so 170 messages fit (10880 bytes) and the 171st would pass it.
    for _ in range(170):
        send(sender, receiver.id)
    with raises_errno(errno.ENOBUFS):
        send(sender, receiver.id)
    # Receiving one gives its bytes back to the sender's share.
    free(receiver, recv(receiver).msg_offset)
    send(sender, receiver.id)


def test_one_sending_user_may_queue_256_messages(bus: Bus) -> None:
    sender, receiver = pair(bus, pool_size=64 * PAGE)
    for _ in range(256):
        send(sender, receiver.id)
    with raises_errno(errno.ENOBUFS):
        send(sender, receiver.id)
    assert len(conn_of(receiver).queue) == 256


def test_kernel_notifications_have_their_own_quota(bus: Bus) -> None:
    sender, receiver = pair(bus, pool_size=64 * PAGE)
    add_match(receiver, b"")  # every notification
    for _ in range(256):
        send(sender, receiver.id)
    newcomer = connect(bus)
    last = queued(receiver)[-1]
    assert last.notification == (Item.ID_ADD, structs.NOTIFY_ID_CHANGE.pack(newcomer.id, 0))


def test_kernel_notifications_past_their_quota_are_lost_and_counted(bus: Bus) -> None:
    """kdbus's message-quota selftest, notify_kernel_quota part (16 MiB pools, as there)."""
    reader = connect(bus, pool_size=SELFTEST_POOL)
    conn = connect(bus, pool_size=SELFTEST_POOL)
    add_match(reader, id_rule(Item.ID_ADD), cookie=1)
    add_match(reader, id_rule(Item.ID_REMOVE), cookie=2)
    # Each iteration two notifications: 256 fill the kernel's message quota.
    for _ in range(CONN_MAX_MSGS // 2):
        conn_of(connect(bus, pool_size=SELFTEST_POOL)).disconnect()
    # As a user, conn still has room.
    send(conn, reader.id, cookie=0xDEADBEEF)
    # Three more notifications are lost (conn's ID_REMOVE, a newcomer's ID_ADD and ID_REMOVE).
    conn_of(conn).disconnect()
    conn_of(connect(bus, pool_size=SELFTEST_POOL)).disconnect()
    got = recv(reader)
    assert (got.dropped_msgs, got.return_flags) == (3, RECV_RETURN_DROPPED_MSGS)
    free(reader, got.msg_offset)
    for _ in range(CONN_MAX_MSGS - 1):
        got = recv(reader)
        assert got.return_flags == 0
        free(reader, got.msg_offset)
    assert receive(reader).header.cookie == 0xDEADBEEF
    recv_eagain(reader)


def test_a_receiver_whose_pool_is_full_refuses_with_exfull(bus: Bus) -> None:
    sender, receiver = pair(bus, pool_size=PAGE)
    # Query results (here: LIST answers it never frees) are unaccounted: they may take more than
    # the owner's half, and then a message within the sender's quota finds no room.
    while conn_of(receiver).pool.free_size() >= 300:
        run(receiver.handle, receiver.caller, Cmd.LIST, cmd_bytes(structs.CMD_LIST, flags=LIST_UNIQUE))
    with raises_errno(errno.EXFULL):
        send(sender, receiver.id, vec_item(sender.caller, b"y" * 400))
    assert not conn_of(receiver).queue and conn_of(receiver).quota[1000].msgs == 0


def test_a_stranger_has_a_share_of_its_own(bus: Bus) -> None:
    # A stranger may talk to the receiver only through a name the policy opens to the world.
    policy_holder(bus, "org.example.open", access_item(POLICY_ACCESS_WORLD, POLICY_TALK))
    sender, receiver = pair(bus)
    acquire(receiver, "org.example.open")
    stranger = connect(bus, STRANGER)
    for _ in range(170):
        send(sender, receiver.id)
    with raises_errno(errno.ENOBUFS):
        send(sender, receiver.id)
    # The stranger's share is a third of what is left: (32768 - 10880) / 3 = 7296 bytes.
    for _ in range(114):
        send(stranger, receiver.id)
    with raises_errno(errno.ENOBUFS):
        send(stranger, receiver.id)


# -- broadcasts (§5.5) --------------------------------------------------------------------------

def test_a_broadcast_reaches_every_matching_connection_the_sender_included(bus: Bus) -> None:
    sender, matching, deaf = connect(bus), connect(bus), connect(bus)
    for conn in (sender, matching):
        add_match(conn)
    out = broadcast(sender, cookie=9)
    assert (out.reply_offset, out.reply_msg_size) == (POOL_SIZE, 0)
    for conn in (sender, matching):
        (msg,) = drain(conn)
        assert (msg.header.dst_id, msg.header.src_id, msg.header.cookie) == (DST_ID_BROADCAST, sender.id, 9)
        assert msg.header.flags == MSG_SIGNAL
        # The bloom filter is delivered unchanged.
        assert msg.first(Item.BLOOM_FILTER) == bytes(8 + 64)
    assert not conn_of(deaf).queue


def test_all_receivers_of_one_broadcast_see_one_sequence_number(bus: Bus) -> None:
    sender = connect(bus)
    receivers = [connect(bus, attach_recv=Attach.TIMESTAMP) for _ in range(3)]
    for conn in receivers:
        add_match(conn)
    broadcast(sender)
    assert len({drain(conn)[0].seqnum for conn in receivers}) == 1


def test_a_broadcast_a_receiver_cannot_take_is_counted_lost_not_reported(bus: Bus) -> None:
    sender = connect(bus)
    small = connect(bus, pool_size=PAGE)
    add_match(small)
    # One page: 2048 bytes for incoming messages, a third of it for this sender.
    broadcast(sender, items=vec_item(sender.caller, b"z" * 1000))
    c = conn_of(small)
    assert not c.queue and c.readable  # poll says POLLIN for the lost counter alone
    got = recv_eagain(small)
    assert (got.dropped_msgs, got.return_flags) == (1, RECV_RETURN_DROPPED_MSGS)
    assert not c.readable
    assert recv_eagain(small).dropped_msgs == 0


def test_a_successful_recv_reports_and_clears_the_lost_counter(bus: Bus) -> None:
    sender = connect(bus)
    small = connect(bus, pool_size=PAGE)
    add_match(small)
    broadcast(sender, items=vec_item(sender.caller, b"z" * 1000))
    broadcast(sender)
    got = recv(small)
    assert (got.dropped_msgs, got.return_flags) == (1, RECV_RETURN_DROPPED_MSGS)
    assert read_message(conn_of(small).pool, got.msg_offset).header.src_id == sender.id


def test_broadcasts_cannot_carry_fds(bus: Bus) -> None:
    sender = connect_on(bus.default_endpoint, caller=FilesCaller())
    with raises_errno(errno.ENOTUNIQ):
        broadcast(sender, items=fds_item(3))


def test_a_receiver_must_be_allowed_to_talk_to_the_broadcaster(bus: Bus) -> None:
    creators = connect(bus)
    stranger = connect(bus, STRANGER)
    add_match(stranger, ANY_SIGNAL)
    broadcast(creators)
    # The stranger may not talk to a connection of another user that owns no open name.
    assert not conn_of(stranger).queue
    policy_holder(bus, "org.example.open", access_item(POLICY_ACCESS_WORLD, POLICY_TALK))
    acquire(creators, "org.example.open")
    broadcast(creators)
    assert [m.header.src_id for m in queued(stranger)] == [creators.id]


def test_a_call_needs_talk_to_the_destination(bus: Bus) -> None:
    creators = connect(bus)
    stranger = connect(bus, STRANGER)
    with raises_errno(errno.EPERM):
        call(stranger, creators.id, cookie=1)
    # The bus creator's connections are owners: they talk to anyone.
    call(creators, stranger.id, cookie=2)
    assert [m.header.cookie for m in queued(stranger)] == [2]


# -- layout details (§5.10) ---------------------------------------------------------------------

def test_metadata_starts_8_aligned_after_unpadded_items_and_the_size_ends_unpadded(bus: Bus) -> None:
    sender = connect(bus, items=string_item(Item.CONN_DESCRIPTION, "sender"))
    receiver = connect(bus, attach_recv=Attach.CONN_DESCRIPTION)
    acquire(receiver, "org.example.receiver")
    # DST_NAME "org.example.receiver" makes a 37-byte item: the items end at 101, unpadded.
    send_raw(sender, msg_bytes(0, dst_name_item("org.example.receiver")))
    msg = receive(receiver)
    assert msg.types == [Item.DST_NAME, Item.CONN_DESCRIPTION]
    # Metadata at ALIGN8(101) = 104; "sender\0" makes a 23-byte item: size = 104 + 23.
    assert msg.header.size == 104 + 23
    assert msg.pool_bytes[101:104] == bytes(3)
    assert structs.ITEM_HEADER.unpack(msg.pool_bytes, 104) == (23, Item.CONN_DESCRIPTION)


def test_a_memfd_adds_its_size_mod_8_zero_bytes_to_the_payload_stream(bus: Bus) -> None:
    sender = connect_on(bus.default_endpoint, caller=FilesCaller())
    receiver = connect(bus)
    memfd = item(Item.PAYLOAD_MEMFD, structs.MEMFD.pack(0, 13, 5, 0))
    send(sender, receiver.id, memfd + vec_item(sender.caller, b"after"))
    (msg,) = queued(receiver)
    # The memfd item is delivered as sent, its fd reading -1 until RECV installs it.
    start, size, fd, _ = structs.MEMFD.struct.unpack(msg.first(Item.PAYLOAD_MEMFD))
    assert (start, size, fd) == (0, 13, -1)
    vec_size, vec_offset = structs.VEC.struct.unpack(msg.first(Item.PAYLOAD_OFF))
    payload_start = (msg.header.size + 7) & ~7
    assert (vec_size, vec_offset) == (5, payload_start + 13 % 8)
    assert msg.payload == b"after"


def test_a_pool_larger_than_the_mount_allows_is_einval() -> None:
    bus = make_bus(Domain(limits=DomainLimits(max_pool_size=4 * PAGE))).bus
    assert bus is not None
    connect(bus, pool_size=4 * PAGE)
    with raises_errno(errno.EINVAL):
        connect(bus, pool_size=8 * PAGE)
