"""The name registry: acquiring, queueing, replacing and releasing well-known names, activators and
the hand-over of what was queued through a name, and the NAME_* notifications on the way
(KDBUS-SPEC.md §6, §5.7, §5.8)."""

from __future__ import annotations

import errno

import pytest
from bus_helpers import (
    SERVICE,
    FilesCaller,
    Listed,
    access_item,
    acquire,
    activator,
    add_match,
    bloom_filter_item,
    broadcast,
    call,
    conn_info,
    conn_of,
    connect_on,
    drain,
    fds_item,
    free,
    list_bus,
    name_change,
    name_rule,
    notifications,
    queued,
    receive,
    recv,
    recv_eagain,
    release,
    reply,
    send,
    send_to_name,
    vec_item,
)
from helpers import (
    BASE,
    CREATOR,
    PAGE,
    Conn,
    FakeCaller,
    cmd_bytes,
    connect,
    hello_cmd,
    raises_errno,
    run,
)

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    HELLO_ACCEPT_FD,
    HELLO_ACTIVATOR,
    LIST_ACTIVATORS,
    LIST_NAMES,
    LIST_QUEUED,
    LIST_UNIQUE,
    MSG_EXPECT_REPLY,
    MSG_NO_AUTO_START,
    MSG_SIGNAL,
    NAME_ACQUIRED,
    NAME_ACTIVATOR,
    NAME_ALLOW_REPLACEMENT,
    NAME_IN_QUEUE,
    NAME_PRIMARY,
    NAME_QUEUE,
    NAME_REPLACE_EXISTING,
    POLICY_ACCESS_USER,
    POLICY_OWN,
    RECV_PEEK,
    RECV_RETURN_DROPPED_MSGS,
    Attach,
    Cmd,
    Item,
)
from kdbusfs.abi.items import string_item
from kdbusfs.bus.bus import Bus
from kdbusfs.errors import KdbusError
from kdbusfs.handle import Handle, HandleType
from kdbusfs.limits import CONN_MAX_MSGS, CONN_MAX_NAMES

PRIMARY = NAME_PRIMARY
ALLOW = NAME_ALLOW_REPLACEMENT
# The pool size kdbus's selftests use.
SELFTEST_POOL = 16 * 1024 * 1024


def fill(sender: Conn, name: str | None = None, dst_id: int = 0) -> int:
    """Send bare messages until the destination's quota refuses one (ENOBUFS); how many went."""
    for sent in range(CONN_MAX_MSGS + 1):
        try:
            if name is not None:
                send_to_name(sender, name)
            else:
                send(sender, dst_id)
        except KdbusError as exc:
            assert exc.errno == errno.ENOBUFS
            return sent
    raise AssertionError("the destination took more than its quota")



def watcher(bus: Bus) -> Conn:
    """A connection that takes every NAME_* notification (and no ID_* ones)."""
    conn = connect(bus)
    for cookie, kind in enumerate((Item.NAME_ADD, Item.NAME_CHANGE, Item.NAME_REMOVE)):
        add_match(conn, name_rule(kind), cookie=cookie)
    return conn


ALL_RECORDS = LIST_NAMES | LIST_QUEUED | LIST_ACTIVATORS


def names_of(conn: Conn, flags: int = ALL_RECORDS) -> list[tuple[int, int, str]]:
    """(owner id, record flags, name) of every listed name record."""
    return [(r.id, r.name_flags or 0, r.name or "") for r in list_bus(conn, flags) if r.name is not None]


# -- acquiring (§6.3) ---------------------------------------------------------------------------

def test_a_free_name_is_acquired_and_announced(bus: Bus) -> None:
    names = watcher(bus)
    owner = connect(bus)
    assert acquire(owner, flags=ALLOW) == ALLOW | PRIMARY | NAME_ACQUIRED
    assert notifications(names) == [
        (Item.NAME_ADD, name_change(SERVICE, (0, 0), (owner.id, ALLOW | PRIMARY)))]
    assert names_of(owner) == [(owner.id, ALLOW | PRIMARY, SERVICE)]


def test_acquiring_an_owned_name_again_only_updates_its_flags(bus: Bus) -> None:
    owner = connect(bus)
    acquire(owner, flags=ALLOW)
    names = watcher(bus)
    assert acquire(owner, flags=NAME_QUEUE) == NAME_QUEUE | PRIMARY  # no ACQUIRED, no EALREADY
    assert notifications(names) == []
    assert names_of(owner) == [(owner.id, NAME_QUEUE | PRIMARY, SERVICE)]


def test_a_taken_name_is_eexist_and_return_flags_are_still_written(bus: Bus) -> None:
    owner, other = connect(bus), connect(bus)
    acquire(owner)
    with raises_errno(errno.EEXIST):
        acquire(other, flags=ALLOW | NAME_REPLACE_EXISTING)
    assert other.caller.u64(BASE + 16) == ALLOW
    assert names_of(owner) == [(owner.id, PRIMARY, SERVICE)]


@pytest.mark.parametrize("name", ["foo", ".bla.blaz", "foo.", "foo..bar", "foo.1a", "a.b.*", "a b.c",
                                  "a." + "b" * 254])
def test_an_invalid_name_is_einval(bus: Bus, name: str) -> None:
    with raises_errno(errno.EINVAL):
        acquire(connect(bus), name)


@pytest.mark.parametrize("name", ["foo.bar", "com.example.kdbus-test", "_a.-b", "a.b0.c_d"])
def test_valid_names_are_accepted(bus: Bus, name: str) -> None:
    assert acquire(connect(bus), name) == PRIMARY | NAME_ACQUIRED


def test_a_connection_holds_at_most_256_names(bus: Bus) -> None:
    conn = connect(bus)
    for i in range(CONN_MAX_NAMES):
        acquire(conn, f"org.example.n{i}")
    with raises_errno(errno.E2BIG):
        acquire(conn, "org.example.one.more")
    # Nothing of the refused name remains in the registry.
    assert bus.names.lookup("org.example.one.more") is None


def test_flags_other_than_replace_allow_and_queue_are_einval(bus: Bus) -> None:
    with raises_errno(errno.EINVAL):
        acquire(connect(bus), flags=NAME_ACTIVATOR)


def test_only_ordinary_connections_acquire_names(bus: Bus) -> None:
    holder = activator(bus, "org.example.activatable")
    with raises_errno(errno.EOPNOTSUPP):
        acquire(holder)


# -- queueing (§6.3) ----------------------------------------------------------------------------

def test_waiters_queue_silently_and_keep_their_place(bus: Bus) -> None:
    owner, first, second = connect(bus), connect(bus), connect(bus)
    acquire(owner)
    names = watcher(bus)
    assert acquire(first, flags=NAME_QUEUE) == NAME_QUEUE | NAME_IN_QUEUE | NAME_ACQUIRED
    assert acquire(second, flags=NAME_QUEUE) == NAME_QUEUE | NAME_IN_QUEUE | NAME_ACQUIRED
    # Asking again keeps the place (and is not a new acquisition).
    assert acquire(first, flags=NAME_QUEUE | ALLOW) == NAME_QUEUE | ALLOW | NAME_IN_QUEUE
    assert notifications(names) == []
    assert names_of(owner, LIST_QUEUED) == [(first.id, NAME_QUEUE | ALLOW | NAME_IN_QUEUE, SERVICE),
                                            (second.id, NAME_QUEUE | NAME_IN_QUEUE, SERVICE)]
    # Queued names are not owned: LIST_NAMES shows the primary only.
    assert names_of(owner, LIST_NAMES) == [(owner.id, PRIMARY, SERVICE)]


def test_acquiring_without_queue_takes_a_waiter_out_of_the_queue(bus: Bus) -> None:
    owner, waiter = connect(bus), connect(bus)
    acquire(owner)
    acquire(waiter, flags=NAME_QUEUE)
    assert acquire(waiter, flags=ALLOW) == ALLOW
    assert names_of(owner, LIST_QUEUED) == []
    assert conn_of(waiter).name_records == []


def test_a_released_name_goes_to_the_next_waiter_then_away(bus: Bus) -> None:
    owner, first, second = connect(bus), connect(bus), connect(bus)
    acquire(owner)
    acquire(first, flags=NAME_QUEUE)
    acquire(second, flags=NAME_QUEUE)
    names = watcher(bus)
    release(owner)
    release(first)
    release(second)
    assert notifications(names) == [
        (Item.NAME_CHANGE, name_change(SERVICE, (owner.id, PRIMARY), (first.id, NAME_QUEUE | PRIMARY))),
        (Item.NAME_CHANGE, name_change(SERVICE, (first.id, NAME_QUEUE | PRIMARY),
                                       (second.id, NAME_QUEUE | PRIMARY))),
        (Item.NAME_REMOVE, name_change(SERVICE, (second.id, NAME_QUEUE | PRIMARY), (0, 0))),
    ]
    assert bus.names.lookup(SERVICE) is None


def test_releasing_a_queued_record_is_silent(bus: Bus) -> None:
    owner, waiter = connect(bus), connect(bus)
    acquire(owner)
    acquire(waiter, flags=NAME_QUEUE)
    names = watcher(bus)
    release(waiter)
    assert notifications(names) == []
    assert names_of(owner) == [(owner.id, PRIMARY, SERVICE)]


def test_release_of_an_unknown_name_is_esrch_and_of_someone_elses_eaddrinuse(bus: Bus) -> None:
    owner, other = connect(bus), connect(bus)
    acquire(owner)
    with raises_errno(errno.ESRCH):
        release(other, "org.example.unknown")
    with raises_errno(errno.ESRCH):
        release(other, "not a name")  # release does not check syntax
    with raises_errno(errno.EADDRINUSE):
        release(other)
    assert names_of(owner) == [(owner.id, PRIMARY, SERVICE)]


# -- replacement (§6.3) -------------------------------------------------------------------------

def test_replacing_an_owner_that_allows_it_drops_the_old_owner(bus: Bus) -> None:
    old, new = connect(bus), connect(bus)
    acquire(old, flags=ALLOW)
    names = watcher(bus)
    assert acquire(new, flags=NAME_REPLACE_EXISTING) == PRIMARY | NAME_ACQUIRED
    assert notifications(names) == [
        (Item.NAME_CHANGE, name_change(SERVICE, (old.id, ALLOW | PRIMARY), (new.id, PRIMARY)))]
    assert names_of(old) == [(new.id, PRIMARY, SERVICE)]
    assert conn_of(old).name_records == []


def test_a_replaced_owner_that_asked_to_queue_waits_second_ahead_of_other_waiters(bus: Bus) -> None:
    old, waiter, new = connect(bus), connect(bus), connect(bus)
    acquire(old, flags=ALLOW | NAME_QUEUE)
    acquire(waiter, flags=NAME_QUEUE)
    acquire(new, flags=NAME_REPLACE_EXISTING)
    assert names_of(old) == [(old.id, ALLOW | NAME_QUEUE | NAME_IN_QUEUE, SERVICE),
                             (waiter.id, NAME_QUEUE | NAME_IN_QUEUE, SERVICE),
                             (new.id, PRIMARY, SERVICE)]
    release(new)
    assert names_of(old, LIST_NAMES) == [(old.id, ALLOW | NAME_QUEUE | PRIMARY, SERVICE)]


def test_a_waiter_may_jump_the_queue_by_replacing(bus: Bus) -> None:
    old, first, second = connect(bus), connect(bus), connect(bus)
    acquire(old, flags=ALLOW)
    acquire(first, flags=NAME_QUEUE)
    acquire(second, flags=NAME_QUEUE)
    assert acquire(second, flags=NAME_QUEUE | NAME_REPLACE_EXISTING) == NAME_QUEUE | PRIMARY | NAME_ACQUIRED
    assert [(owner, name) for owner, _, name in names_of(old, LIST_NAMES | LIST_QUEUED)] == [
        (first.id, SERVICE), (second.id, SERVICE)]
    release(second)
    assert names_of(old, LIST_NAMES) == [(first.id, NAME_QUEUE | PRIMARY, SERVICE)]


def test_an_owner_that_does_not_allow_replacement_keeps_the_name(bus: Bus) -> None:
    owner, other = connect(bus), connect(bus)
    acquire(owner)
    with raises_errno(errno.EEXIST):
        acquire(other, flags=NAME_REPLACE_EXISTING)
    queued_flags = acquire(other, flags=NAME_REPLACE_EXISTING | NAME_QUEUE)
    assert queued_flags == NAME_QUEUE | NAME_IN_QUEUE | NAME_ACQUIRED


# -- disconnecting (§3.5, §6.4) -----------------------------------------------------------------

def test_a_leaving_connection_gives_up_its_names_in_order_before_its_id_goes(bus: Bus) -> None:
    leaver, other = connect(bus), connect(bus)
    acquire(leaver, "org.example.first")
    acquire(leaver, "org.example.second")
    acquire(other, "org.example.third")
    acquire(leaver, "org.example.third", NAME_QUEUE)
    names = watcher(bus)
    add_match(names, b"", cookie=9)  # and everything else
    run(leaver.handle, leaver.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    assert notifications(names) == [
        (Item.NAME_REMOVE, name_change("org.example.first", (leaver.id, PRIMARY), (0, 0))),
        (Item.NAME_REMOVE, name_change("org.example.second", (leaver.id, PRIMARY), (0, 0))),
        (Item.ID_REMOVE, structs.NOTIFY_ID_CHANGE.pack(leaver.id, 0)),
    ]
    assert names_of(other) == [(other.id, PRIMARY, "org.example.third")]


def test_senders_attach_only_the_names_they_own_as_primary(bus: Bus) -> None:
    sender, owner = connect(bus), connect(bus)
    receiver = connect(bus, attach_recv=Attach.NAMES)
    acquire(owner, "org.example.taken")
    acquire(sender, "org.example.mine", ALLOW)
    acquire(sender, "org.example.taken", NAME_QUEUE)
    send(sender, receiver.id)
    owned = receive(receiver).all(Item.OWNED_NAME)
    assert owned == [(ALLOW | PRIMARY).to_bytes(8, "little") + b"org.example.mine\0"]


def test_a_name_with_an_id_goes_only_to_that_owner(bus: Bus) -> None:
    owner, other, sender = connect(bus), connect(bus), connect(bus)
    acquire(owner)
    with raises_errno(errno.EREMCHG):
        send_to_name(sender, SERVICE, dst_id=other.id)
    send_to_name(sender, SERVICE, dst_id=owner.id, cookie=1)
    # As sent: the receiver finds the id and the DST_NAME item it was addressed with.
    (msg,) = drain(owner)
    assert (msg.header.dst_id, msg.first(Item.DST_NAME)) == (owner.id, SERVICE.encode() + b"\0")


def test_conn_info_by_name_finds_the_primary_owner(bus: Bus) -> None:
    owner, waiter, asker = connect(bus), connect(bus), connect(bus)
    acquire(owner)
    acquire(waiter, flags=NAME_QUEUE)
    assert conn_info(asker, name=SERVICE).id == owner.id
    assert conn_info(asker, owner.id, name=SERVICE).id == owner.id
    with raises_errno(errno.ESRCH):
        conn_info(asker, waiter.id, name=SERVICE)


# -- activators (§6.5, §5.7) --------------------------------------------------------------------

def test_an_activator_holds_its_name_and_takes_what_is_sent_to_it(bus: Bus) -> None:
    names = watcher(bus)
    holder = activator(bus)
    assert notifications(names) == [
        (Item.NAME_ADD, name_change(SERVICE, (0, 0), (holder.id, NAME_ACTIVATOR | PRIMARY)))]
    asker = connect(bus)
    assert names_of(asker, LIST_ACTIVATORS) == [(holder.id, NAME_ACTIVATOR | PRIMARY, SERVICE)]
    assert names_of(asker, LIST_NAMES | LIST_QUEUED) == []
    assert conn_info(asker, name=SERVICE).id == holder.id
    send_to_name(asker, SERVICE, cookie=1)
    # The activator may PEEK to see who triggered the activation.
    peeked = receive(holder, RECV_PEEK)
    assert (peeked.header.src_id, peeked.header.cookie, peeked.header.dst_id) == (asker.id, 1, 0)
    # It is not addressable by id, and NO_AUTO_START refuses to wake it.
    with raises_errno(errno.ENXIO):
        send(asker, holder.id)
    with raises_errno(errno.EADDRNOTAVAIL):
        send_to_name(asker, SERVICE, flags=MSG_NO_AUTO_START)
    # A signal through the name is not for the activator either: it has no matches.
    send_to_name(asker, SERVICE, bloom_filter_item(), flags=MSG_SIGNAL)
    assert [m.header.cookie for m in queued(holder)] == [1]


def test_an_implementer_takes_over_the_queued_messages_and_calls(bus: Bus) -> None:
    holder = activator(bus)
    sender = connect(bus)
    send_to_name(sender, SERVICE, vec_item(sender.caller, b"first"), cookie=1)
    send_to_name(sender, SERVICE, flags=MSG_EXPECT_REPLY, cookie=2, timeout_or_reply=1 << 62)
    names = watcher(bus)
    implementer = connect(bus)
    assert acquire(implementer) == PRIMARY | NAME_ACQUIRED  # no REPLACE_EXISTING needed
    assert notifications(names) == [(Item.NAME_CHANGE, name_change(
        SERVICE, (holder.id, NAME_ACTIVATOR | PRIMARY), (implementer.id, PRIMARY)))]
    assert not conn_of(holder).queue
    moved = drain(implementer)
    assert [(m.header.cookie, m.payload) for m in moved] == [(1, b"first"), (2, b"")]
    assert names_of(sender, LIST_ACTIVATORS) == [(holder.id, NAME_ACTIVATOR | NAME_IN_QUEUE, SERVICE)]
    # The call's tracker followed the name: the implementer may answer it.
    reply(implementer, sender.id, 2)
    assert [m.header.timeout_ns for m in drain(sender)] == [2]


def test_what_the_activator_received_itself_is_not_handed_over(bus: Bus) -> None:
    holder = activator(bus)
    sender = connect(bus)
    send_to_name(sender, SERVICE, cookie=1)
    send_to_name(sender, SERVICE, cookie=2)
    recv(holder)
    implementer = connect(bus)
    acquire(implementer)
    assert [m.header.cookie for m in queued(implementer)] == [2]


def test_messages_sent_through_the_name_go_back_to_the_activator_when_the_implementer_leaves(
        bus: Bus) -> None:
    holder = activator(bus)
    implementer, sender = connect(bus), connect(bus)
    acquire(implementer)
    send_to_name(sender, SERVICE, cookie=1)
    send(sender, implementer.id, cookie=2)  # by id: stays with the implementer
    names = watcher(bus)
    release(implementer)
    assert notifications(names) == [(Item.NAME_CHANGE, name_change(
        SERVICE, (implementer.id, PRIMARY), (holder.id, NAME_ACTIVATOR | PRIMARY)))]
    assert [m.header.cookie for m in queued(holder)] == [1]
    assert [m.header.cookie for m in queued(implementer)] == [2]


def test_a_dying_implementer_hands_the_name_and_its_messages_back(bus: Bus) -> None:
    holder = activator(bus)
    implementer, sender = connect(bus), connect(bus)
    acquire(implementer)
    call(sender, 0, cookie=7, items=string_item(Item.DST_NAME, SERVICE))
    conn_of(implementer).disconnect()
    assert names_of(sender, LIST_ACTIVATORS) == [(holder.id, NAME_ACTIVATOR | PRIMARY, SERVICE)]
    # The call waits on the activator again, its tracker with it: no REPLY_DEAD.
    assert [m.header.cookie for m in queued(holder)] == [7]
    assert not conn_of(sender).queue
    assert [r.replier for r in conn_of(sender).trackers] == [conn_of(holder)]


def test_a_second_activator_for_a_name_is_eexist_and_leaves_its_handle_fresh(bus: Bus) -> None:
    first = activator(bus)
    ids = watcher(bus)
    add_match(ids, b"", cookie=9)
    handle = Handle(bus.default_endpoint, CREATOR)
    with raises_errno(errno.EEXIST):
        run(handle, FakeCaller(), Cmd.HELLO, hello_cmd(flags=HELLO_ACTIVATOR,
                                                       items=string_item(Item.NAME, SERVICE)))
    assert handle.type is HandleType.NONE and handle.conn is None
    # It was announced before its name was refused, so its departure is announced too.
    (added, removed) = notifications(ids)
    assert (added[0], removed[0]) == (Item.ID_ADD, Item.ID_REMOVE) and added[1] == removed[1]
    assert names_of(ids, LIST_ACTIVATORS) == [(first.id, NAME_ACTIVATOR | PRIMARY, SERVICE)]


def test_an_activator_for_an_owned_name_waits_silently(bus: Bus) -> None:
    owner = connect(bus)
    acquire(owner)
    names = watcher(bus)
    holder = activator(bus)
    assert notifications(names) == []
    assert names_of(owner, LIST_ACTIVATORS) == [(holder.id, NAME_ACTIVATOR | NAME_IN_QUEUE, SERVICE)]
    release(owner)
    assert notifications(names) == [(Item.NAME_CHANGE, name_change(
        SERVICE, (owner.id, PRIMARY), (holder.id, NAME_ACTIVATOR | PRIMARY)))]


def test_a_leaving_activator_is_silent_unless_it_held_the_name(bus: Bus) -> None:
    holder = activator(bus)
    owner = connect(bus)
    acquire(owner)
    names = watcher(bus)
    conn_of(holder).disconnect()
    assert notifications(names) == []
    assert names_of(owner, LIST_NAMES | LIST_ACTIVATORS) == [(owner.id, PRIMARY, SERVICE)]
    other = activator(bus, "org.example.other")
    conn_of(other).disconnect()
    assert notifications(names) == [
        (Item.NAME_ADD, name_change("org.example.other", (0, 0), (other.id, NAME_ACTIVATOR | PRIMARY))),
        (Item.NAME_REMOVE, name_change("org.example.other", (other.id, NAME_ACTIVATOR | PRIMARY), (0, 0))),
    ]


def test_an_activator_name_must_not_be_a_wildcard(bus: Bus) -> None:
    with raises_errno(errno.EINVAL):
        activator(bus, "org.example.*")


def test_a_message_with_fds_is_lost_on_hand_over_to_an_implementer_that_refuses_fds(bus: Bus) -> None:
    holder = activator(bus, flags=HELLO_ACCEPT_FD)
    files_caller = FilesCaller()
    sender = connect_on(bus.default_endpoint, caller=files_caller)
    send_to_name(sender, SERVICE, fds_item(3), cookie=1)
    send_to_name(sender, SERVICE, cookie=2)
    implementer = connect(bus)
    acquire(implementer)
    got = recv(implementer)
    assert (got.dropped_msgs, got.return_flags) == (1, RECV_RETURN_DROPPED_MSGS)
    assert [m.header.cookie for m in queued(implementer)] == []
    # The lost message's descriptors are closed.
    assert files_caller.sender_files.released == [1001]
    assert not conn_of(holder).queue


def test_messages_that_do_not_fit_the_implementers_quota_are_lost(bus: Bus) -> None:
    activator(bus)
    sender = connect(bus)
    for cookie in (1, 2, 3):
        send_to_name(sender, SERVICE, vec_item(sender.caller, b"m" * 400), cookie=cookie)
    # One page: a third of 2048 bytes for this sender, room for one 512-byte message.
    implementer = connect(bus, pool_size=PAGE)
    acquire(implementer)
    got = recv(implementer)
    assert got.dropped_msgs == 2
    assert recv_eagain(implementer).dropped_msgs == 0


def test_hand_over_respects_the_implementers_quota_both_ways(bus: Bus) -> None:
    """kdbus's message-quota selftest, activator_quota part (16 MiB pools, as there)."""
    name = "foo.test.activator"
    holder = activator(bus, name, access_item(POLICY_ACCESS_USER, POLICY_OWN, 1000),
                       pool_size=SELFTEST_POOL)
    conn, sender = connect(bus, pool_size=SELFTEST_POOL), connect(bus, pool_size=SELFTEST_POOL)
    queued_on_activator = fill(sender, name)
    assert queued_on_activator == CONN_MAX_MSGS
    with raises_errno(errno.ENXIO):  # activators are never addressed by id
        send(conn, holder.id)
    with raises_errno(errno.ENOBUFS):  # its queue is full for conn's user too: same uid
        send_to_name(conn, name)
    broadcast(sender)  # no match installed: not counted as dropped
    got = recv(holder)
    assert got.dropped_msgs == 0
    queued_on_activator -= 1
    # Stage 1: conn's queue is full of the sender's messages but for one.
    assert fill(sender, dst_id=conn.id) == CONN_MAX_MSGS
    free(conn, recv(conn).msg_offset)
    assert acquire(conn, name, NAME_REPLACE_EXISTING) == PRIMARY | NAME_ACQUIRED
    got = recv(conn)
    assert 0 < got.dropped_msgs < queued_on_activator
    queued_on_activator -= got.dropped_msgs
    # The ones that moved go back to the activator with the name.
    release(conn, name)
    assert len(conn_of(holder).queue) == queued_on_activator
    assert receive(holder).header.src_id == sender.id
    queued_on_activator -= 1
    # Stage 2: with conn's queue full, everything on the activator is lost on hand-over.
    drain(conn)
    assert fill(sender, dst_id=conn.id) == CONN_MAX_MSGS
    with raises_errno(errno.ENOBUFS):
        send(sender, conn.id)
    acquire(conn, name, NAME_REPLACE_EXISTING)
    assert recv(conn).dropped_msgs == queued_on_activator


def test_list_unique_names_every_connection_once_without_name_records(bus: Bus) -> None:
    owner, bare = connect(bus), connect(bus)
    acquire(owner)
    holder = activator(bus, "org.example.other")
    listed = list_bus(bare, LIST_UNIQUE)
    assert listed == [Listed(owner.id, 0), Listed(bare.id, 0), Listed(holder.id, HELLO_ACTIVATOR)]
    # With NAMES, an owner appears through its name record only.
    assert list_bus(bare, LIST_UNIQUE | LIST_NAMES) == [
        Listed(owner.id, 0, PRIMARY, SERVICE), Listed(bare.id, 0), Listed(holder.id, HELLO_ACTIVATOR)]
