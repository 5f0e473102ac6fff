"""Match rules: which broadcasts, unicast signals and kernel notifications a connection takes.

A database holds entries, each tagged with a cookie; an entry matches when all its rules do, and
the connection takes a message when any entry matches. An entry without rules matches everything,
kernel notifications included (KDBUS-SPEC.md §7).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import limits
from ..abi import structs
from ..abi.constants import MATCH_ID_ANY, MATCH_REPLACE, Item
from ..abi.walk import ParsedItem
from ..errors import KdbusError
from .command import Args, Caller
from .names import is_valid_name

if TYPE_CHECKING:
    from .connection import Connection
    from .message import Staged

_NOTIFY_ID = structs.NOTIFY_ID_CHANGE.struct
_NAME_CHANGE = struct.Struct("<QQQQ")
# The broadcast kernel notifications, which go to connections whose matches select them.
KERNEL_NOTIFICATIONS = frozenset({Item.NAME_ADD, Item.NAME_REMOVE, Item.NAME_CHANGE, Item.ID_ADD,
                                  Item.ID_REMOVE})


@dataclass(frozen=True, slots=True)
class Rule:
    type: int
    # BLOOM_MASK: the mask words, generation after generation.
    mask: tuple[int, ...] = ()
    generations: int = 0
    # NAME (sender owns it), NAME_* notifications (optional name).
    name: str | None = None
    # ID (sender id), DST_ID (message destination), *_ADD / *_REMOVE / *_CHANGE ids.
    id: int = 0
    old_id: int = 0
    new_id: int = 0


@dataclass(slots=True)
class Entry:
    cookie: int
    rules: tuple[Rule, ...]


def _rule(parsed: ParsedItem, bloom_size: int) -> Rule:
    payload = parsed.payload
    kind = parsed.type
    if kind == Item.BLOOM_MASK:
        if len(payload) < bloom_size or len(payload) % bloom_size:
            raise KdbusError(errno.EDOM, f"bloom mask of {len(payload)} bytes, bus uses {bloom_size}")
        words = tuple(int.from_bytes(payload[i : i + 8], "little") for i in range(0, len(payload), 8))
        return Rule(kind, mask=words, generations=len(payload) // bloom_size)
    if kind == Item.NAME:
        name = parsed.string
        if not is_valid_name(name):
            raise KdbusError(errno.EINVAL, f"invalid name {name!r} in a match")
        return Rule(kind, name=name)
    if kind in (Item.ID, Item.DST_ID):
        return Rule(kind, id=parsed.u64)
    if kind in (Item.ID_ADD, Item.ID_REMOVE):
        changed = _NOTIFY_ID.unpack_from(payload)[0]
        return Rule(kind, new_id=changed, old_id=changed)
    # NAME_ADD / NAME_REMOVE / NAME_CHANGE: {old {id, flags}, new {id, flags}, optional name}.
    old_id, _, new_id, _ = _NAME_CHANGE.unpack_from(payload)
    watched = payload[32:-1].decode("utf-8", "surrogateescape") if len(payload) > 32 else None
    return Rule(kind, old_id=old_id, new_id=new_id, name=watched)



def notifications_selectable_by(rules: tuple[Rule, ...]) -> frozenset[int]:
    """The kernel notification types an entry with these rules can select (KDBUS-SPEC.md §7.4):
    every type without rules, the one type that all its rules share, or none (an entry mixing
    types, or holding a rule for messages from connections, never matches a notification)."""
    if not rules:
        return KERNEL_NOTIFICATIONS
    first = rules[0].type
    if first in KERNEL_NOTIFICATIONS and all(r.type == first for r in rules):
        return frozenset((first,))
    return frozenset()


class NotificationSubscribers:
    """Per bus: for each broadcast kernel notification type, the connections with a match entry
    that can select it.

    A notification goes through the matches of these connections only. kdbus walks every
    connection of the bus, which in C costs next to nothing; a Python loop over all of them on
    every HELLO (ID_ADD) and disconnect (ID_REMOVE) made connecting dearer as the bus filled. The
    index only narrows whose matches are asked: who receives what stays the matches' decision.

    Connections are listed by id (the bus maps ids to connections): a match database refers to
    the index, and a reference back to its connection would make every connection a reference
    cycle, left for the cyclic garbage collector instead of being freed when it goes.
    """

    __slots__ = ("_by_type",)

    def __init__(self) -> None:
        # Ordered sets of connection ids (dicts keep the order of subscription).
        self._by_type: dict[int, dict[int, None]] = {kind: {} for kind in KERNEL_NOTIFICATIONS}

    def subscribe(self, conn_id: int, types: frozenset[int]) -> None:
        """Connection `conn_id` can now take exactly these notification types."""
        for kind, ids in self._by_type.items():
            if kind in types:
                ids[conn_id] = None
            else:
                ids.pop(conn_id, None)

    def forget(self, conn_id: int) -> None:
        """The connection is leaving the bus: no notification from now on, its own ID_REMOVE included."""
        for ids in self._by_type.values():
            ids.pop(conn_id, None)

    def candidates(self, item_type: int) -> list[int]:
        """Ids of who may take a notification of `item_type`: a copy, safe to iterate while delivering."""
        ids = self._by_type.get(item_type)
        return list(ids) if ids else []


@dataclass(slots=True, eq=False)
class MatchDb:
    entries: list[Entry] = field(default_factory=list)
    # The bus's index of notification subscribers and this database's connection id in it; without
    # them (a database on its own, as in tests) nothing is announced.
    subscribers: NotificationSubscribers | None = None
    owner_id: int | None = None
    # How many entries can select each notification type, and the types last announced.
    _selecting: dict[int, int] = field(default_factory=dict)
    _announced: frozenset[int] = frozenset()

    def add(self, cookie: int, items: list[ParsedItem], bloom_size: int, replace: bool) -> None:
        rules = tuple(_rule(parsed, bloom_size) for parsed in items)
        # A replacement that removed entries has made room, so EMFILE comes only before any change.
        if replace:
            self._drop(cookie)
        if len(self.entries) >= limits.MATCH_MAX:
            raise KdbusError(errno.EMFILE, f"{limits.MATCH_MAX} match entries already")
        entry = Entry(cookie, rules)
        self.entries.append(entry)
        self._count(entry, 1)
        self._announce()

    def remove(self, cookie: int) -> None:
        if not self._drop(cookie):
            raise KdbusError(errno.EBADSLT, f"no match with cookie {cookie}")
        self._announce()

    def _drop(self, cookie: int) -> bool:
        """Delete every entry with `cookie`; whether there was one."""
        kept = [e for e in self.entries if e.cookie != cookie]
        if len(kept) == len(self.entries):
            return False
        for entry in self.entries:
            if entry.cookie == cookie:
                self._count(entry, -1)
        self.entries = kept
        return True

    def _count(self, entry: Entry, delta: int) -> None:
        for kind in notifications_selectable_by(entry.rules):
            self._selecting[kind] = self._selecting.get(kind, 0) + delta

    def notification_types(self) -> frozenset[int]:
        """The kernel notification types some entry of this database can select."""
        return frozenset(kind for kind, count in self._selecting.items() if count > 0)

    def _announce(self) -> None:
        if self.subscribers is None or self.owner_id is None:
            return
        types = self.notification_types()
        if types != self._announced:
            self._announced = types
            self.subscribers.subscribe(self.owner_id, types)

    def match(self, msg: Staged, src: Connection) -> bool:
        """A signal or broadcast from `src`."""
        return any(all(_rule_matches(r, msg, src) for r in e.rules) for e in self.entries)

    def match_kernel(self, item_type: int, payload: bytes) -> bool:
        """A kernel notification of `item_type` carrying `payload`."""
        return any(all(_kernel_rule_matches(r, item_type, payload) for r in e.rules) for e in self.entries)


def _bloom_matches(rule: Rule, bloom: bytes | None) -> bool:
    if bloom is None:
        return False
    words = len(bloom) // 8 - 1
    generation = int.from_bytes(bloom[:8], "little")
    start = min(generation, rule.generations - 1) * words
    for i in range(words):
        mask = rule.mask[start + i]
        if mask and int.from_bytes(bloom[8 + 8 * i : 16 + 8 * i], "little") & mask != mask:
            return False
    return True


def _rule_matches(rule: Rule, msg: Staged, src: Connection) -> bool:
    kind = rule.type
    if kind == Item.BLOOM_MASK:
        return _bloom_matches(rule, msg.bloom)
    if kind == Item.ID:
        return rule.id == src.id or rule.id == MATCH_ID_ANY
    if kind == Item.DST_ID:
        return rule.id == msg.dst_id or rule.id == MATCH_ID_ANY
    if kind == Item.NAME:
        return any(r.entry.name == rule.name for r in src.bus.names.owned_names(src))
    return False


def _kernel_rule_matches(rule: Rule, item_type: int, payload: bytes) -> bool:
    if rule.type != item_type or rule.type not in KERNEL_NOTIFICATIONS:
        return False
    if item_type == Item.ID_ADD:
        return rule.new_id == MATCH_ID_ANY or rule.new_id == _NOTIFY_ID.unpack_from(payload)[0]
    if item_type == Item.ID_REMOVE:
        return rule.old_id == MATCH_ID_ANY or rule.old_id == _NOTIFY_ID.unpack_from(payload)[0]
    old_id, _, new_id, _ = _NAME_CHANGE.unpack_from(payload)
    name = payload[32:-1].decode("utf-8", "surrogateescape")
    return ((rule.old_id == MATCH_ID_ANY or rule.old_id == old_id)
            and (rule.new_id == MATCH_ID_ANY or rule.new_id == new_id)
            and (rule.name is None or rule.name == name))


# -- commands ---------------------------------------------------------------------------------

def cmd_match_add(conn: Connection, args: Args[structs.CmdMatch], caller: Caller) -> None:
    assert conn.matches is not None
    # The rules in the order the caller wrote them, whatever their types.
    rules = sorted((p for t, ps in args.items.items() if t != Item.NEGOTIATE for p in ps),
                   key=lambda p: p.offset)
    conn.matches.add(args.fields.cookie, rules, conn.bus.bloom_size,
                     bool(args.fields.flags & MATCH_REPLACE))


def cmd_match_remove(conn: Connection, args: Args[structs.CmdMatch], caller: Caller) -> None:
    assert conn.matches is not None
    conn.matches.remove(args.fields.cookie)
