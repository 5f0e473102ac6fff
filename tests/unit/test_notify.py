"""Broadcast kernel notifications reach exactly the connections whose matches select them
(KDBUS-SPEC.md §5.8, §7.4), and visit no others: a HELLO must not cost more as the bus fills."""

from __future__ import annotations

import errno
import itertools
import struct
from collections.abc import Iterator

import pytest
from helpers import Conn, cmd_bytes, connect, make_bus, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import MATCH_ID_ANY, MATCH_REPLACE, Cmd, Item
from kdbusfs.abi.items import item, string_item
from kdbusfs.bus import connection, notify
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.match import KERNEL_NOTIFICATIONS, MatchDb

SERVICE = "org.example.service"
_ITEM_HEADER = struct.Struct("<QQ")


def _bus() -> Bus:
    bus = make_bus(Domain()).bus
    assert bus is not None
    return bus


def _id_rule(kind: int, conn_id: int = MATCH_ID_ANY) -> bytes:
    return item(kind, structs.NOTIFY_ID_CHANGE.pack(conn_id, 0))


def _name_rule(kind: int, name: str | None = None) -> bytes:
    ids = struct.pack("<QQQQ", MATCH_ID_ANY, 0, MATCH_ID_ANY, 0)
    return item(kind, ids + (name.encode() + b"\0" if name is not None else b""))


BLOOM_RULE = item(Item.BLOOM_MASK, bytes(64))


def _match(conn: Conn, rules: bytes, cookie: int = 1, flags: int = 0) -> None:
    run(conn.handle, conn.caller, Cmd.MATCH_ADD, cmd_bytes(structs.CMD_MATCH, rules, cookie=cookie,
                                                            flags=flags))


def _unmatch(conn: Conn, cookie: int = 1) -> None:
    run(conn.handle, conn.caller, Cmd.MATCH_REMOVE, cmd_bytes(structs.CMD_MATCH, cookie=cookie))


def _items(buffer: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    offset = start
    while offset < end:
        size, kind = _ITEM_HEADER.unpack_from(buffer, offset)
        yield kind, bytes(buffer[offset + 16 : offset + size])
        offset += (size + 7) & ~7


def _notifications(conn: Conn) -> list[tuple[int, bytes]]:
    """The kernel notification items queued on `conn`, oldest first: (type, payload)."""
    c = conn.handle.conn
    assert c is not None
    found = []
    for entry in c.queue.entries.values():
        start = entry.slice.offset
        size = struct.unpack_from("<Q", c.pool.buffer, start)[0]
        for kind, payload in _items(c.pool.buffer, start + structs.MSG.size, start + size):
            if kind in KERNEL_NOTIFICATIONS:
                found.append((kind, payload))
    return found


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Ids of the connections whose matches a kernel notification consulted, in order."""
    consulted: list[int] = []

    class Recording(MatchDb):
        # MatchDb is compiled and cannot be patched: connections get this subclass instead.
        def match_kernel(self, item_type: int, payload: bytes) -> bool:
            assert self.owner_id is not None
            consulted.append(self.owner_id)
            return super().match_kernel(item_type, payload)

    monkeypatch.setattr(connection, "MatchDb", Recording)
    return consulted


def test_hello_visits_no_connection_without_notification_matches(asked: list[int]) -> None:
    bus = _bus()
    bystanders = [connect(bus) for _ in range(50)]
    _match(bystanders[0], BLOOM_RULE)  # a signal subscriber: no notification can match it
    watcher = connect(bus)
    _match(watcher, _id_rule(Item.ID_ADD))
    asked.clear()
    newcomer = connect(bus)
    assert asked == [watcher.id]
    assert _notifications(watcher) == [(Item.ID_ADD, structs.NOTIFY_ID_CHANGE.pack(newcomer.id, 0))]
    assert all(_notifications(b) == [] for b in bystanders)


def test_an_id_add_match_for_one_id_is_asked_and_takes_only_that_id(asked: list[int]) -> None:
    bus = _bus()
    watcher = connect(bus)
    next_id = bus.domain._last_id + 2  # the second connection from now
    _match(watcher, _id_rule(Item.ID_ADD, next_id))
    connect(bus)
    second = connect(bus)
    assert second.id == next_id
    assert asked == [watcher.id, watcher.id]
    assert _notifications(watcher) == [(Item.ID_ADD, structs.NOTIFY_ID_CHANGE.pack(next_id, 0))]


def test_an_entry_without_rules_takes_every_notification() -> None:
    bus = _bus()
    watcher = connect(bus)
    _match(watcher, b"")
    other = connect(bus)
    run(other.handle, other.caller, Cmd.NAME_ACQUIRE, cmd_bytes(structs.CMD, string_item(Item.NAME, SERVICE)))
    run(other.handle, other.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    assert [kind for kind, _ in _notifications(watcher)] == [Item.ID_ADD, Item.NAME_ADD, Item.NAME_REMOVE,
                                                            Item.ID_REMOVE]


def test_an_entry_mixing_notification_types_is_never_asked(asked: list[int]) -> None:
    bus = _bus()
    watcher = connect(bus)
    _match(watcher, _id_rule(Item.ID_ADD) + _id_rule(Item.ID_REMOVE))
    _match(watcher, _id_rule(Item.ID_ADD) + BLOOM_RULE, cookie=2)
    leaver = connect(bus)
    run(leaver.handle, leaver.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    assert asked == []
    assert _notifications(watcher) == []


def test_name_notifications_go_to_name_matches_only(asked: list[int]) -> None:
    bus = _bus()
    id_watcher = connect(bus)
    _match(id_watcher, _id_rule(Item.ID_ADD))
    name_watcher = connect(bus)
    _match(name_watcher, _name_rule(Item.NAME_ADD, SERVICE))
    owner = connect(bus)
    asked.clear()
    run(owner.handle, owner.caller, Cmd.NAME_ACQUIRE, cmd_bytes(structs.CMD, string_item(Item.NAME, SERVICE)))
    assert asked == [name_watcher.id]
    assert [kind for kind, _ in _notifications(name_watcher)] == [Item.NAME_ADD]


def test_removing_or_replacing_the_match_stops_the_visits(asked: list[int]) -> None:
    bus = _bus()
    watcher = connect(bus)
    _match(watcher, _id_rule(Item.ID_ADD))
    _match(watcher, _id_rule(Item.ID_ADD), cookie=2)
    _unmatch(watcher, cookie=1)
    connect(bus)
    assert asked == [watcher.id]  # the entry with cookie 2 still selects ID_ADD
    _match(watcher, BLOOM_RULE, cookie=2, flags=MATCH_REPLACE)
    asked.clear()
    connect(bus)
    assert asked == []
    assert len(_notifications(watcher)) == 1


def test_a_full_database_keeps_its_subscription_until_the_entry_is_replaced(asked: list[int]) -> None:
    bus = _bus()
    watcher = connect(bus)
    _match(watcher, _id_rule(Item.ID_ADD), cookie=0)
    for cookie in range(1, 256):
        _match(watcher, BLOOM_RULE, cookie=cookie)
    with raises_errno(errno.EMFILE):
        _match(watcher, _id_rule(Item.ID_REMOVE), cookie=300)
    connect(bus)
    assert asked == [watcher.id]
    # Replacing cookie 0 removes its ID_ADD entry first (so 256 entries are not exceeded).
    _match(watcher, BLOOM_RULE, cookie=0, flags=MATCH_REPLACE)
    asked.clear()
    leaver = connect(bus)
    run(leaver.handle, leaver.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    assert asked == []
    assert len(_notifications(watcher)) == 1


def test_a_leaving_subscriber_gets_not_its_own_id_remove_and_is_forgotten(asked: list[int]) -> None:
    bus = _bus()
    leaver = connect(bus)
    _match(leaver, _id_rule(Item.ID_REMOVE))
    stayer = connect(bus)
    _match(stayer, _id_rule(Item.ID_REMOVE))
    run(leaver.handle, leaver.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    assert asked == [stayer.id]
    assert _notifications(stayer) == [(Item.ID_REMOVE, structs.NOTIFY_ID_CHANGE.pack(leaver.id, 0))]
    assert bus.notification_subscribers.candidates(Item.ID_REMOVE) == [stayer.id]


RULES = {
    "none": b"", "bloom": BLOOM_RULE, "id_add": _id_rule(Item.ID_ADD),
    "id_remove": _id_rule(Item.ID_REMOVE), "name_add": _name_rule(Item.NAME_ADD),
    "name_remove": _name_rule(Item.NAME_REMOVE, SERVICE), "name_change": _name_rule(Item.NAME_CHANGE),
    "id_add+id_remove": _id_rule(Item.ID_ADD) + _id_rule(Item.ID_REMOVE),
    "id_add+id_add": _id_rule(Item.ID_ADD) + _id_rule(Item.ID_ADD, 1),
}


def test_the_index_delivers_to_exactly_those_every_connections_matches_select(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the entries, each notification reaches the connections that asking every
    connection's matches (as kdbus does) would pick, and only those."""
    bus = _bus()
    watchers = {}
    for pair in itertools.combinations_with_replacement(RULES, 2):
        conn = connect(bus)
        for cookie, name in enumerate(pair):
            _match(conn, RULES[name], cookie=cookie)
        watchers[pair] = conn
    selected: dict[tuple[str, str], list[int]] = {pair: [] for pair in watchers}
    # What the watchers got while the others connected is not under test here.
    earlier = {pair: len(_notifications(conn)) for pair, conn in watchers.items()}
    original = notify._broadcast

    def expect(bus: Bus, item_type: int, payload: bytes, name: str | None = None) -> None:
        for pair, conn in watchers.items():
            c = conn.handle.conn
            assert c is not None and c.matches is not None
            if c.active and c.matches.match_kernel(item_type, payload):
                selected[pair].append(item_type)
        original(bus, item_type, payload, name)

    monkeypatch.setattr(notify, "_broadcast", expect)
    owner = connect(bus)
    run(owner.handle, owner.caller, Cmd.NAME_ACQUIRE, cmd_bytes(structs.CMD, string_item(Item.NAME, SERVICE)))
    run(owner.handle, owner.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    for pair, conn in watchers.items():
        assert [kind for kind, _ in _notifications(conn)[earlier[pair]:]] == selected[pair], pair
    assert selected[("none", "bloom")] == [Item.ID_ADD, Item.NAME_ADD, Item.NAME_REMOVE, Item.ID_REMOVE]
    assert selected[("bloom", "id_add+id_remove")] == []
