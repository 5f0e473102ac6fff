"""Match rules and bloom filters: which signals and kernel notifications a connection takes, and how
entries are added, replaced and removed by cookie (KDBUS-SPEC.md §7, §5.5, §5.8).

test_notify.py covers which connections a notification visits; here: what each rule selects.
"""

from __future__ import annotations

import errno

import pytest
from bus_helpers import (
    ANY_SIGNAL,
    BLOOM_SIZE,
    SERVICE,
    acquire,
    activator,
    add_match,
    bits,
    bloom_mask_rule,
    broadcast,
    conn_of,
    drain,
    from_connections,
    id_change,
    id_rule,
    name_change,
    name_rule,
    notifications,
    release,
    remove_match,
    send,
    unicast_signal,
    vec_item,
)
from helpers import PAGE, STRANGER, Conn, connect, raises_errno

from kdbusfs.abi.constants import (
    DST_ID_BROADCAST,
    HELLO_ACCEPT_FD,
    HELLO_ACTIVATOR,
    MATCH_ID_ANY,
    MATCH_REPLACE,
    NAME_ALLOW_REPLACEMENT,
    NAME_PRIMARY,
    NAME_QUEUE,
    NAME_REPLACE_EXISTING,
    Item,
)
from kdbusfs.abi.items import item, string_item, u64_item
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.match import KERNEL_NOTIFICATIONS, MatchDb, notifications_selectable_by
from kdbusfs.bus.match import Rule as MatchRule


def taken(conn: Conn) -> list[int]:
    """Cookies of the messages from connections that `conn` got (RECV'd and freed)."""
    return [m.header.cookie for m in from_connections(conn)]


# -- bloom masks (§7.1, §7.3) -------------------------------------------------------------------

def test_bloom_masks_select_filters_holding_all_their_bits_per_generation(bus: Bus) -> None:
    """kdbus's match-bloom selftest: a 64-byte bloom, a mask of two generations."""
    sender, receiver = connect(bus), connect(bus)
    gen0 = bits(b0=0x55, b63=0x80)
    gen1 = bits(b1=0xAA, b9=0x02)
    add_match(receiver, bloom_mask_rule(gen0, gen1))
    broadcast(sender, bits(), cookie=1)  # no bits: not selected
    broadcast(sender, gen0, cookie=2)  # exactly the mask
    broadcast(sender, bits(b0=0xFF, b1=0x01, b63=0x80), cookie=3)  # a superset
    broadcast(sender, bits(b0=0xFF, b1=0x01, b63=0x80), generation=1, cookie=4)  # gen 1 wants other bits
    broadcast(sender, bits(b1=0xAA, b9=0x02, b20=0x10), generation=1, cookie=5)
    # Generations past the mask's last one use its last one.
    broadcast(sender, gen1, generation=7, cookie=6)
    broadcast(sender, gen0, generation=7, cookie=7)
    assert taken(receiver) == [2, 3, 5, 6]


def test_an_all_zero_mask_selects_every_signal_and_no_notification(bus: Bus) -> None:
    sender, receiver = connect(bus), connect(bus)
    add_match(receiver, ANY_SIGNAL)
    broadcast(sender, bits(b5=0x01), cookie=1)
    connect(bus)
    assert [m.header.cookie for m in drain(receiver)] == [1]


@pytest.mark.parametrize("size", [8, 32, BLOOM_SIZE + 8, 3 * BLOOM_SIZE - 8])
def test_a_mask_that_is_not_whole_generations_is_edom(bus: Bus, size: int) -> None:
    with raises_errno(errno.EDOM):
        add_match(connect(bus), bloom_mask_rule(bytes(size)))


# -- rules about the sender and the destination (§7.3) ------------------------------------------

def test_a_name_rule_selects_senders_that_own_the_name_as_primary(bus: Bus) -> None:
    owner, sender, receiver = connect(bus), connect(bus), connect(bus)
    add_match(receiver, string_item(Item.NAME, SERVICE))
    acquire(owner)
    acquire(sender, flags=NAME_QUEUE)
    broadcast(sender, cookie=1)  # only queued for it
    release(owner)  # now the sender is the primary owner
    broadcast(sender, cookie=2)
    broadcast(owner, cookie=3)
    assert taken(receiver) == [2]


def test_a_name_rule_must_be_a_valid_name(bus: Bus) -> None:
    with raises_errno(errno.EINVAL):
        add_match(connect(bus), string_item(Item.NAME, "no-dots"))


def test_an_id_rule_selects_one_sender_or_any(bus: Bus) -> None:
    first, second, receiver = connect(bus), connect(bus), connect(bus)
    add_match(receiver, u64_item(Item.ID, first.id), cookie=1)
    broadcast(first, cookie=1)
    broadcast(second, cookie=2)
    remove_match(receiver, 1)
    add_match(receiver, u64_item(Item.ID, MATCH_ID_ANY), cookie=1)
    broadcast(second, cookie=3)
    assert taken(receiver) == [1, 3]


def test_a_dst_id_rule_selects_signals_by_their_destination(bus: Bus) -> None:
    sender, anything, mine_only = connect(bus), connect(bus), connect(bus)
    # DST_ID_BROADCAST is ~0, which is also MATCH_ID_ANY: it selects every signal, as in kdbus.
    add_match(anything, u64_item(Item.DST_ID, DST_ID_BROADCAST))
    add_match(mine_only, u64_item(Item.DST_ID, mine_only.id))
    broadcast(sender, cookie=1)
    unicast_signal(sender, anything.id, cookie=2)
    unicast_signal(sender, mine_only.id, cookie=3)
    assert taken(anything) == [1, 2]
    assert taken(mine_only) == [3]


def test_an_entry_needs_all_its_rules_and_any_entry_will_do(bus: Bus) -> None:
    first, second, receiver = connect(bus), connect(bus), connect(bus)
    add_match(receiver, u64_item(Item.ID, first.id) + bloom_mask_rule(bits(b0=0x01)), cookie=1)
    add_match(receiver, u64_item(Item.ID, second.id), cookie=2)
    broadcast(first, bits(), cookie=1)  # the first entry's mask is not met
    broadcast(first, bits(b0=0x03), cookie=2)
    broadcast(second, bits(), cookie=3)
    assert taken(receiver) == [2, 3]


def test_a_unicast_signal_reaches_its_addressee_only_through_a_match(bus: Bus) -> None:
    sender, receiver = connect(bus), connect(bus)
    out = unicast_signal(sender, receiver.id, cookie=1)  # dropped silently: the SEND succeeds
    assert out.return_flags == 0 and not conn_of(receiver).queue
    add_match(receiver, ANY_SIGNAL)
    unicast_signal(sender, receiver.id, cookie=2)
    # Messages that are not signals ignore matches altogether.
    remove_match(receiver)
    send(sender, receiver.id, cookie=3)
    assert taken(receiver) == [2, 3]


def test_a_unicast_signal_needs_the_addressee_to_be_allowed_to_talk_to_the_sender(bus: Bus) -> None:
    sender = connect(bus)
    stranger = connect(bus, STRANGER)
    add_match(stranger, ANY_SIGNAL)
    unicast_signal(sender, stranger.id, cookie=1)
    assert not conn_of(stranger).queue


def test_a_unicast_signal_that_does_not_fit_is_dropped_without_counting_it(bus: Bus) -> None:
    sender, receiver = connect(bus), connect(bus, pool_size=PAGE)
    add_match(receiver, ANY_SIGNAL)
    unicast_signal(sender, receiver.id, items=vec_item(sender.caller, b"s" * 1000), cookie=1)
    c = conn_of(receiver)
    assert (len(c.queue), c.lost) == (0, 0)


# -- adding, replacing, removing (§7.2) ---------------------------------------------------------

def test_remove_takes_every_entry_with_the_cookie_and_unknown_cookies_are_ebadslt(bus: Bus) -> None:
    sender, receiver = connect(bus), connect(bus)
    add_match(receiver, u64_item(Item.ID, sender.id), cookie=5)
    add_match(receiver, ANY_SIGNAL, cookie=5)
    add_match(receiver, u64_item(Item.ID, receiver.id), cookie=6)
    remove_match(receiver, 5)
    broadcast(sender, cookie=1)
    assert taken(receiver) == []
    with raises_errno(errno.EBADSLT):
        remove_match(receiver, 5)
    remove_match(receiver, 6)
    matches = conn_of(receiver).matches
    assert matches is not None and matches.entries == []


def test_replace_swaps_the_entries_of_a_cookie(bus: Bus) -> None:
    first, second, receiver = connect(bus), connect(bus), connect(bus)
    add_match(receiver, u64_item(Item.ID, first.id), cookie=5)
    add_match(receiver, u64_item(Item.ID, second.id), cookie=5, flags=MATCH_REPLACE)
    broadcast(first, cookie=1)
    broadcast(second, cookie=2)
    assert taken(receiver) == [2]
    # Without REPLACE, entries accumulate under one cookie.
    add_match(receiver, u64_item(Item.ID, first.id), cookie=5)
    broadcast(first, cookie=3)
    assert taken(receiver) == [3]


# -- kernel notifications (§7.4) ----------------------------------------------------------------

def test_id_rules_select_the_added_or_removed_connection(bus: Bus) -> None:
    watcher = connect(bus)
    first = connect(bus)
    second_id = first.id + 1
    add_match(watcher, id_rule(Item.ID_REMOVE, first.id), cookie=1)
    add_match(watcher, id_rule(Item.ID_ADD, second_id), cookie=2)
    second = connect(bus)
    assert second.id == second_id
    conn_of(second).disconnect()
    conn_of(first).disconnect()
    assert notifications(watcher) == [(Item.ID_ADD, id_change(second_id)),
                                      (Item.ID_REMOVE, id_change(first.id))]


def test_id_notifications_carry_the_hello_flags(bus: Bus) -> None:
    watcher = connect(bus)
    add_match(watcher, id_rule(Item.ID_ADD), cookie=1)
    add_match(watcher, id_rule(Item.ID_REMOVE), cookie=2)
    accepting = connect(bus, flags=HELLO_ACCEPT_FD)
    holder = activator(bus)
    conn_of(holder).disconnect()
    assert notifications(watcher) == [(Item.ID_ADD, id_change(accepting.id, HELLO_ACCEPT_FD)),
                                      (Item.ID_ADD, id_change(holder.id, HELLO_ACTIVATOR)),
                                      (Item.ID_REMOVE, id_change(holder.id, HELLO_ACTIVATOR))]


def test_name_rules_select_by_old_owner_new_owner_and_name(bus: Bus) -> None:
    old, new = connect(bus), connect(bus)
    by_name, by_new, by_zero = connect(bus), connect(bus), connect(bus)
    add_match(by_name, name_rule(Item.NAME_ADD, SERVICE))
    add_match(by_new, name_rule(Item.NAME_CHANGE, new_id=new.id))
    # 0 is not a wildcard: it selects a NAME_ADD (old owner 0) but no change between owners.
    add_match(by_zero, name_rule(Item.NAME_ADD, old_id=0), cookie=1)
    add_match(by_zero, name_rule(Item.NAME_CHANGE, old_id=0), cookie=2)
    acquire(old, "org.example.other")
    acquire(old, flags=NAME_QUEUE | NAME_ALLOW_REPLACEMENT)
    acquire(new, flags=NAME_REPLACE_EXISTING)
    old_flags = NAME_QUEUE | NAME_ALLOW_REPLACEMENT | NAME_PRIMARY
    assert notifications(by_name) == [(Item.NAME_ADD, name_change(SERVICE, (0, 0), (old.id, old_flags)))]
    assert notifications(by_new) == [
        (Item.NAME_CHANGE, name_change(SERVICE, (old.id, old_flags), (new.id, NAME_PRIMARY)))]
    assert [kind for kind, _ in notifications(by_zero)] == [Item.NAME_ADD, Item.NAME_ADD]


def test_notifications_ignore_talk_permissions(bus: Bus) -> None:
    stranger = connect(bus, STRANGER)
    add_match(stranger, id_rule(Item.ID_ADD))
    creators = connect(bus)
    assert notifications(stranger) == [(Item.ID_ADD, id_change(creators.id))]


def test_a_notification_a_subscriber_cannot_take_is_counted_lost(bus: Bus) -> None:
    watcher = connect(bus, pool_size=PAGE)
    add_match(watcher, id_rule(Item.ID_ADD))
    # 136 bytes each (header, ID_ADD item, TIMESTAMP); the kernel's share of a one-page pool is
    # a third of 2048 bytes: five fit.
    for _ in range(6):
        connect(bus)
    c = conn_of(watcher)
    assert (len(c.queue), c.lost) == (5, 1)


def test_a_match_database_knows_which_notifications_it_can_select() -> None:
    db = MatchDb()  # on its own: no bus index to announce to
    assert db.notification_types() == frozenset()
    db.add(1, [], BLOOM_SIZE, replace=False)
    assert db.notification_types() == KERNEL_NOTIFICATIONS
    db.remove(1)
    assert db.notification_types() == frozenset()
    assert notifications_selectable_by((MatchRule(Item.ID_ADD), MatchRule(Item.ID_ADD))) == {Item.ID_ADD}
    assert notifications_selectable_by((MatchRule(Item.ID_ADD), MatchRule(Item.NAME_ADD))) == frozenset()
    assert notifications_selectable_by((MatchRule(Item.BLOOM_MASK),)) == frozenset()


def test_a_notification_rule_never_selects_messages_from_connections(bus: Bus) -> None:
    sender, receiver = connect(bus), connect(bus)
    add_match(receiver, name_rule(Item.NAME_ADD) + item(Item.ID_ADD, id_change(MATCH_ID_ANY)))
    add_match(receiver, id_rule(Item.ID_REMOVE), cookie=2)
    broadcast(sender, cookie=1)
    assert taken(receiver) == []
