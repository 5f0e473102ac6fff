"""A classic client's match rules: bounded in number (CLASSIC_MATCH_RULES_MAX, LimitsExceeded past
it), standing on kdbus entries shared between rules and widened to fit MATCH_MAX, while each rule
still selects exactly what it says."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_classic_endpoint import DRIVER, Loop, Peer, _client_of, setup

from kdbusfs import limits
from kdbusfs.abi.constants import Item
from kdbusfs.classic.endpoint import ClassicEndpoint
from kdbusfs.classic.matchrule import parse, signal_mask
from kdbusfs.classic.subscriptions import (
    ENTRY_BUDGET,
    DriverNotes,
    PeerSignals,
    Subscriptions,
    TooManySenders,
    plan,
    selectors,
)
from kdbusfs.client import match
from kdbusfs.dbus import DBusMessage, MessageType

__all__ = ["setup"]

BLOOM = (64, 8)
LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"


class Entries:
    """A kdbus connection's match entries as Subscriptions sees them (a MatchTarget)."""

    def __init__(self, room: int = limits.MATCH_MAX) -> None:
        self.room = room
        self.by_cookie: dict[int, tuple[bytes, ...]] = {}
        self.added = 0
        self.removed = 0

    def match_add(self, cookie: int, rules: list[bytes], replace: bool = False) -> None:
        from kdbusfs.errors import KdbusError

        if len(self.by_cookie) >= self.room:
            raise KdbusError(24, "no room")
        assert cookie not in self.by_cookie
        self.by_cookie[cookie] = tuple(rules)
        self.added += 1

    def match_remove(self, cookie: int) -> None:
        del self.by_cookie[cookie]
        self.removed += 1

    def entries(self) -> set[tuple[bytes, ...]]:
        return set(self.by_cookie.values())


def _add(subscriptions: Subscriptions, text: str, target: Entries) -> None:
    rule = parse(text)
    subscriptions.add(rule, selectors(rule, *BLOOM), target)


def test_a_few_rules_get_the_entries_they_always_had() -> None:
    """Unwidened, a peer rule is its bloom mask (and sender), a NameOwnerChanged rule its names."""
    subscriptions, target = Subscriptions(), Entries()
    rule = parse("type='signal',sender='org.example.Clock',interface='org.example.Clock',arg0='tick'")
    _add(subscriptions, rule.text, target)
    mask = bytes(signal_mask(rule, *BLOOM))
    assert target.entries() == {(match.bloom_mask(mask).item, match.sender_name("org.example.Clock").item)}
    _add(subscriptions, "type='signal',sender='org.freedesktop.DBus',arg0='org.example.Clock'", target)
    assert {
        (match.name_added("org.example.Clock").item,),
        (match.name_removed("org.example.Clock").item,),
        (match.name_changed("org.example.Clock").item,),
    } < target.entries()
    _add(subscriptions, "type='signal',member='NameOwnerChanged',arg0=':1.7'", target)
    assert {(match.id_added(7).item,), (match.id_removed(7).item,)} < target.entries()


def test_equal_selectors_share_an_entry_until_the_last_rule_wanting_it_goes() -> None:
    subscriptions, target = Subscriptions(), Entries()
    name_owner_changed = "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"
    _add(subscriptions, name_owner_changed, target)
    alone = target.entries()
    assert len(alone) == 5  # three NAME_* kinds and two ID_* kinds, about anything
    _add(subscriptions, name_owner_changed + ",arg0='org.example.A'", target)
    _add(subscriptions, name_owner_changed, target)
    # The arg0 rule's names are covered by the wide entries of the same kinds.
    assert target.entries() == alone
    assert subscriptions.remove(parse(name_owner_changed), target)
    assert target.entries() == alone
    assert subscriptions.remove(parse(name_owner_changed), target)
    assert (match.name_added("org.example.A").item,) in target.entries()
    assert (match.name_added(None).item,) not in target.entries()
    assert subscriptions.remove(parse(name_owner_changed + ",arg0='org.example.A'"), target)
    assert target.entries() == set() and not subscriptions.wanted
    assert not subscriptions.remove(parse(name_owner_changed), target)


def test_many_arg0_rules_need_few_entries() -> None:
    subscriptions, target = Subscriptions(), Entries()
    for index in range(300):
        _add(subscriptions, f"type='signal',arg0='org.example.N{index}'", target)
    # One entry for every peer signal with the bits all 300 masks share, one per NAME_* kind.
    assert len(target.entries()) == 4
    assert (match.name_added(None).item,) in target.entries()
    common = target.entries() - {(match.name_added(None).item,), (match.name_removed(None).item,),
                                 (match.name_changed(None).item,)}
    (peer_entry,) = common
    assert peer_entry == (match.bloom_mask(
        bytes(signal_mask(parse("type='signal'"), *BLOOM))).item,)
    for index in range(300):
        assert subscriptions.remove(parse(f"type='signal',arg0='org.example.N{index}'"), target)
    assert target.entries() == set()


def test_widening_stops_at_the_budget_and_comes_back() -> None:
    wanted = [DriverNotes(kind, f"org.example.N{i}") for kind in (Item.NAME_ADD, Item.NAME_REMOVE)
              for i in range(3)]
    assert len(plan(wanted, budget=6)) == 6
    assert len(plan(wanted, budget=5)) == 4  # the larger (or first) group is widened
    assert len(plan(wanted, budget=2)) == 2


def test_unique_senders_are_merged_and_well_known_ones_never() -> None:
    mask = bytes(8)
    by_id = [PeerSignals(conn_id, mask) for conn_id in range(10, 20)]
    assert len(plan(by_id, budget=3)) == 1
    by_name = [PeerSignals(f"org.example.S{i}", mask) for i in range(4)]
    assert len(plan(by_name, budget=4)) == 4
    with pytest.raises(TooManySenders):
        plan(by_name, budget=3)


def test_a_refused_rule_leaves_the_entries_as_they_were() -> None:
    subscriptions, target = Subscriptions(budget=3), Entries()
    for index in range(3):
        _add(subscriptions, f"type='signal',sender='org.example.S{index}'", target)
    before, rules = target.entries(), list(subscriptions.rules)
    with pytest.raises(TooManySenders):
        _add(subscriptions, "type='signal',sender='org.example.S3'", target)
    assert target.entries() == before and subscriptions.rules == rules


def test_no_room_for_the_new_entry_before_the_old_go_drops_the_old_first() -> None:
    subscriptions, target = Subscriptions(budget=3), Entries(room=3)
    for index in range(3):
        _add(subscriptions, f"type='signal',arg0='x{index}',sender=':1.{index + 10}'", target)
    # A fourth unique sender: the three merge into one entry, which only fits once they are gone.
    _add(subscriptions, "type='signal',arg0='x3',sender=':1.13'", target)
    assert len(target.entries()) == 1


def test_selectors_of_rules_that_can_never_match_a_peer_or_the_driver() -> None:
    assert selectors(parse("type='method_call'"), *BLOOM) == ()
    assert selectors(parse("type='signal',sender=':1.x'"), *BLOOM) == ()
    assert selectors(parse("type='signal',sender='org.freedesktop.DBus',arg0=':1.x'"), *BLOOM) == ()
    assert set(selectors(parse("sender='org.freedesktop.DBus'"), *BLOOM)) == {
        DriverNotes(kind) for kind in (Item.NAME_ADD, Item.NAME_REMOVE, Item.NAME_CHANGE, Item.ID_ADD,
                                       Item.ID_REMOVE)}


# -- through the endpoint ---------------------------------------------------------------------------

def test_hundreds_of_rules_fit_and_each_selects_exactly(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    endpoint, loop, path = setup
    watcher, owner = Peer(path, loop), Peer(path, loop)
    watcher.authenticate()
    owner.authenticate()
    for index in range(300):
        reply = watcher.call(DRIVER, "AddMatch", "s", (f"type='signal',arg0='org.example.N{index}'",))
        assert reply.type == MessageType.METHOD_RETURN, reply.body
    kdbus = _client_of(endpoint, watcher).conn
    assert kdbus is not None and kdbus.conn is not None and kdbus.conn.matches is not None
    assert len(kdbus.conn.matches.entries) < 16
    list(watcher.messages())
    owner.call(DRIVER, "RequestName", "su", ("org.example.N150", 0))
    owner.call(DRIVER, "RequestName", "su", ("org.example.Unwatched", 0))
    for arg in ("org.example.N7", "org.example.N300"):
        owner.send(DBusMessage.signal("/x", "org.example.X", "Said", "s", (arg,), serial=owner.next_serial()))
    got = list(watcher.messages())
    changes = [m.body for m in got if m.member == "NameOwnerChanged"]
    assert changes == [("org.example.N150", "", owner.name)]
    assert [m.body for m in got if m.member == "Said"] == [("org.example.N7",)]


def test_rules_past_the_limit_are_refused_as_dbus_daemon_refuses_them(
        setup: tuple[ClassicEndpoint, Loop, Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    _, loop, path = setup
    monkeypatch.setattr(limits, "CLASSIC_MATCH_RULES_MAX", 20)
    peer = Peer(path, loop)
    peer.authenticate()
    for index in range(20):
        assert peer.call(DRIVER, "AddMatch", "s", (f"arg0='n{index}'",)).type == MessageType.METHOD_RETURN
    with caplog.at_level(logging.WARNING, "kdbusfs.classic"):
        refused = peer.call(DRIVER, "AddMatch", "s", ("arg0='one more'",))
        # dbus-daemon counts before it reads the rule.
        invalid = peer.call(DRIVER, "AddMatch", "s", ("no rule at all",))
    assert refused.error_name == LIMITS_EXCEEDED and invalid.error_name == LIMITS_EXCEEDED
    assert "is not allowed to add more match rules" in refused.body[0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "match rules per classic client (20)" in warnings[0].getMessage()
    assert peer.call(DRIVER, "RemoveMatch", "s", ("arg0='n3'",)).type == MessageType.METHOD_RETURN
    assert peer.call(DRIVER, "AddMatch", "s", ("arg0='one more'",)).type == MessageType.METHOD_RETURN


def test_more_well_known_senders_than_entries_is_limits_exceeded(
        setup: tuple[ClassicEndpoint, Loop, Path], caplog: pytest.LogCaptureFixture) -> None:
    _, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    with caplog.at_level(logging.WARNING, "kdbusfs.classic"):
        answers = [peer.call(DRIVER, "AddMatch", "s", (f"sender='org.example.S{index}'",)).error_name
                   for index in range(ENTRY_BUDGET + 1)]
    assert answers == [None] * ENTRY_BUDGET + [LIMITS_EXCEEDED]
    assert any("well-known senders" in record.getMessage() for record in caplog.records)

