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

from ..abi import structs
from ..abi.constants import MATCH_ID_ANY, Item
from ..abi.items import ParsedItem
from . import limits
from .errors import KdbusError
from .names import is_valid_name

if TYPE_CHECKING:
    from .connection import Connection
    from .message import Staged

_NOTIFY_ID = structs.NOTIFY_ID_CHANGE.struct
_NAME_CHANGE = struct.Struct("<QQQQ")
_KERNEL_RULES = frozenset({Item.NAME_ADD, Item.NAME_REMOVE, Item.NAME_CHANGE, Item.ID_ADD, Item.ID_REMOVE})


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



@dataclass(slots=True, eq=False)
class MatchDb:
    entries: list[Entry] = field(default_factory=list)

    def add(self, cookie: int, items: list[ParsedItem], bloom_size: int, replace: bool) -> None:
        rules = tuple(_rule(parsed, bloom_size) for parsed in items)
        if replace:
            self.entries = [e for e in self.entries if e.cookie != cookie]
        if len(self.entries) >= limits.MATCH_MAX:
            raise KdbusError(errno.EMFILE, f"{limits.MATCH_MAX} match entries already")
        self.entries.append(Entry(cookie, rules))

    def remove(self, cookie: int) -> None:
        kept = [e for e in self.entries if e.cookie != cookie]
        if len(kept) == len(self.entries):
            raise KdbusError(errno.EBADSLT, f"no match with cookie {cookie}")
        self.entries = kept

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
    if rule.type != item_type or rule.type not in _KERNEL_RULES:
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
