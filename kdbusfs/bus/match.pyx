# cython: language_level=3, boundscheck=False, wraparound=False
"""Match rules: which broadcasts, unicast signals and kernel notifications a connection takes.

A database holds entries, each tagged with a cookie; an entry matches when all its rules do, and
the connection takes a message when any entry matches. An entry without rules matches everything,
kernel notifications included (KDBUS-SPEC.md §7).

Compiled (issue 12: a broadcast asks the matches of every connection on the bus): rules are cdef
classes with C-typed fields, and a bloom mask is compared with the message's bloom filter as
64-bit words read straight from the bytes that hold them.
"""

import errno
import struct

from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport uint64_t

from ..abi.fields cimport u64_at
from .message cimport Staged

from .. import limits
from ..abi import structs
from ..abi.constants import MATCH_ID_ANY, MATCH_REPLACE, Item
from ..errors import KdbusError
from .names import is_valid_name

_NOTIFY_ID = structs.NOTIFY_ID_CHANGE.struct
_NAME_CHANGE = struct.Struct("<QQQQ")
# The broadcast kernel notifications, which go to connections whose matches select them.
KERNEL_NOTIFICATIONS = frozenset({Item.NAME_ADD, Item.NAME_REMOVE, Item.NAME_CHANGE, Item.ID_ADD,
                                  Item.ID_REMOVE})

cdef uint64_t _BLOOM_MASK = Item.BLOOM_MASK
cdef uint64_t _NAME = Item.NAME
cdef uint64_t _ID = Item.ID
cdef uint64_t _DST_ID = Item.DST_ID
cdef uint64_t _ID_ADD = Item.ID_ADD
cdef uint64_t _ID_REMOVE = Item.ID_REMOVE
cdef uint64_t _ID_ANY = MATCH_ID_ANY
# A bloom filter item's payload: its generation (a u64), then the bloom words.
cdef Py_ssize_t _BLOOM_AT_GENERATION = 0
cdef Py_ssize_t _BLOOM_AT_DATA = 8


cdef class Rule:
    """One rule of a match entry: its item type and what it selects."""

    cdef readonly uint64_t type
    # BLOOM_MASK: the mask's bytes, generation after generation, and how many generations.
    cdef readonly bytes mask
    cdef readonly Py_ssize_t generations
    # NAME (sender owns it), NAME_* notifications (optional name).
    cdef readonly object name
    # ID (sender id), DST_ID (message destination), *_ADD / *_REMOVE / *_CHANGE ids.
    cdef readonly uint64_t id
    cdef readonly uint64_t old_id
    cdef readonly uint64_t new_id

    def __init__(self, uint64_t type, bytes mask not None=b"", Py_ssize_t generations=0, name=None,
                 uint64_t id=0, uint64_t old_id=0, uint64_t new_id=0):
        self.type = type
        self.mask = mask
        self.generations = generations
        self.name = name
        self.id = id
        self.old_id = old_id
        self.new_id = new_id

    def __repr__(self):
        return (f"Rule(type={self.type}, generations={self.generations}, name={self.name!r}, id={self.id}, "
                f"old_id={self.old_id}, new_id={self.new_id})")


cdef class Entry:
    """The rules one MATCH_ADD gave under a cookie."""

    cdef readonly object cookie
    cdef readonly tuple rules

    def __init__(self, cookie, tuple rules not None):
        self.cookie = cookie
        self.rules = rules


def _rule(parsed, Py_ssize_t bloom_size):
    payload = parsed.payload
    kind = parsed.type
    if kind == Item.BLOOM_MASK:
        if len(payload) < bloom_size or len(payload) % bloom_size:
            raise KdbusError(errno.EDOM, f"bloom mask of {len(payload)} bytes, bus uses {bloom_size}")
        return Rule(kind, mask=bytes(payload), generations=len(payload) // bloom_size)
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
    watched = payload[32 : len(payload) - 1].decode("utf-8", "surrogateescape") if len(payload) > 32 else None
    return Rule(kind, old_id=old_id, new_id=new_id, name=watched)


def notifications_selectable_by(tuple rules not None):
    """The kernel notification types an entry with these rules can select (KDBUS-SPEC.md §7.4):
    every type without rules, the one type that all its rules share, or none (an entry mixing
    types, or holding a rule for messages from connections, never matches a notification)."""
    if not rules:
        return KERNEL_NOTIFICATIONS
    cdef Rule rule
    cdef uint64_t first = (<Rule>rules[0]).type
    if first not in KERNEL_NOTIFICATIONS:
        return frozenset()
    for rule in rules:
        if rule.type != first:
            return frozenset()
    return frozenset((first,))


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

    def __init__(self):
        # Ordered sets of connection ids (dicts keep the order of subscription).
        self._by_type = {kind: {} for kind in KERNEL_NOTIFICATIONS}

    def subscribe(self, conn_id, types):
        """Connection `conn_id` can now take exactly these notification types."""
        for kind, ids in self._by_type.items():
            if kind in types:
                ids[conn_id] = None
            else:
                ids.pop(conn_id, None)

    def forget(self, conn_id):
        """The connection is leaving the bus: no notification from now on, its own ID_REMOVE included."""
        for ids in self._by_type.values():
            ids.pop(conn_id, None)

    def candidates(self, item_type):
        """Ids of who may take a notification of `item_type`: a copy, safe to iterate while delivering."""
        ids = self._by_type.get(item_type)
        return list(ids) if ids else []


cdef class MatchDb:
    """A connection's match entries, in the order they were added."""

    cdef public list entries
    # The bus's index of notification subscribers and this database's connection id in it; without
    # them (a database on its own, as in tests) nothing is announced.
    cdef readonly object subscribers
    cdef readonly object owner_id
    # How many entries can select each notification type, and the types last announced.
    cdef dict _selecting
    cdef object _announced

    def __init__(self, subscribers=None, owner_id=None):
        self.entries = []
        self.subscribers = subscribers
        self.owner_id = owner_id
        self._selecting = {}
        self._announced = frozenset()

    def add(self, cookie, list items not None, Py_ssize_t bloom_size, bint replace):
        rules = tuple([_rule(parsed, bloom_size) for parsed in items])
        # A replacement that removed entries has made room, so EMFILE comes only before any change.
        if replace:
            self._drop(cookie)
        if len(self.entries) >= limits.MATCH_MAX:
            raise KdbusError(errno.EMFILE, f"{limits.MATCH_MAX} match entries already")
        entry = Entry(cookie, rules)
        self.entries.append(entry)
        self._count(entry, 1)
        self._announce()

    def remove(self, cookie):
        if not self._drop(cookie):
            raise KdbusError(errno.EBADSLT, f"no match with cookie {cookie}")
        self._announce()

    cdef bint _drop(self, cookie) except -1:
        """Delete every entry with `cookie`; whether there was one."""
        cdef Entry entry
        kept = [e for e in self.entries if (<Entry>e).cookie != cookie]
        if len(kept) == len(self.entries):
            return False
        for entry in self.entries:
            if entry.cookie == cookie:
                self._count(entry, -1)
        self.entries = kept
        return True

    cdef int _count(self, Entry entry, int delta) except -1:
        for kind in notifications_selectable_by(entry.rules):
            self._selecting[kind] = self._selecting.get(kind, 0) + delta
        return 0

    def notification_types(self):
        """The kernel notification types some entry of this database can select."""
        return frozenset([kind for kind, count in self._selecting.items() if count > 0])

    cdef int _announce(self) except -1:
        if self.subscribers is None or self.owner_id is None:
            return 0
        types = self.notification_types()
        if types != self._announced:
            self._announced = types
            self.subscribers.subscribe(self.owner_id, types)
        return 0

    cpdef bint match(self, Staged msg, src) except -1:
        """A signal or broadcast from `src`."""
        if msg is None:
            raise TypeError("match() needs a staged message")
        cdef Entry entry
        cdef Rule rule
        cdef bint selected
        for entry in self.entries:
            selected = True
            for rule in entry.rules:
                if not _rule_matches(rule, msg, src):
                    selected = False
                    break
            if selected:
                return True
        return False

    def match_kernel(self, item_type, bytes payload not None):
        """A kernel notification of `item_type` carrying `payload`."""
        cdef Entry entry
        cdef Rule rule
        cdef bint selected
        for entry in self.entries:
            selected = True
            for rule in entry.rules:
                if not _kernel_rule_matches(rule, item_type, payload):
                    selected = False
                    break
            if selected:
                return True
        return False


def selecting(connections, Staged msg not None, src):
    """The connections among `connections` whose matches select `msg` from `src`, in order (the
    walk of kdbus_bus_broadcast over a bus's connections; only ordinary connections have matches)."""
    cdef list found = []
    cdef MatchDb matches
    for conn in connections:
        matches = conn.matches
        if matches is not None and matches.match(msg, src):
            found.append(conn)
    return found


cdef bint _bloom_matches(Rule rule, bloom) except -1:
    """Every bit of the mask's generation for this filter is set in the filter (kdbus_match_bloom)."""
    if bloom is None:
        return False
    cdef bytes filter_ = <bytes?>bloom
    cdef bytes mask = rule.mask
    cdef Py_ssize_t words = PyBytes_GET_SIZE(filter_) // 8 - 1
    cdef uint64_t generation = u64_at(filter_, _BLOOM_AT_GENERATION)
    # Filters of later generations than the mask has are compared with its last one.
    cdef Py_ssize_t chosen = rule.generations - 1
    if generation < <uint64_t>chosen:
        chosen = <Py_ssize_t>generation
    cdef Py_ssize_t start = chosen * words * 8
    cdef Py_ssize_t i
    cdef uint64_t wanted
    # The bus checked both against its bloom size; a mismatch here would read past the mask.
    if words < 0 or start + words * 8 > PyBytes_GET_SIZE(mask):
        raise AssertionError(f"a {PyBytes_GET_SIZE(filter_)}-byte bloom filter against a "
                             f"{PyBytes_GET_SIZE(mask)}-byte mask")
    for i in range(words):
        wanted = u64_at(mask, start + 8 * i)
        if wanted and (u64_at(filter_, _BLOOM_AT_DATA + 8 * i) & wanted) != wanted:
            return False
    return True


cdef bint _rule_matches(Rule rule, Staged msg, src) except -1:
    cdef uint64_t kind = rule.type
    if kind == _BLOOM_MASK:
        return _bloom_matches(rule, msg.bloom)
    if kind == _ID:
        return rule.id == src.id or rule.id == _ID_ANY
    if kind == _DST_ID:
        return rule.id == msg.dst_id or rule.id == _ID_ANY
    if kind == _NAME:
        return any([r.entry.name == rule.name for r in src.bus.names.owned_names(src)])
    return False


cdef bint _kernel_rule_matches(Rule rule, item_type, bytes payload) except -1:
    if rule.type != item_type or rule.type not in KERNEL_NOTIFICATIONS:
        return False
    if rule.type == _ID_ADD:
        return rule.new_id == _ID_ANY or rule.new_id == _NOTIFY_ID.unpack_from(payload)[0]
    if rule.type == _ID_REMOVE:
        return rule.old_id == _ID_ANY or rule.old_id == _NOTIFY_ID.unpack_from(payload)[0]
    old_id, _, new_id, _ = _NAME_CHANGE.unpack_from(payload)
    name = payload[32 : len(payload) - 1].decode("utf-8", "surrogateescape")
    return ((rule.old_id == _ID_ANY or rule.old_id == old_id)
            and (rule.new_id == _ID_ANY or rule.new_id == new_id)
            and (rule.name is None or rule.name == name))


# -- commands ---------------------------------------------------------------------------------

def cmd_match_add(conn, args, caller):
    assert conn.matches is not None
    # The rules in the order the caller wrote them, whatever their types.
    rules = sorted([p for t, ps in args.items.items() if t != Item.NEGOTIATE for p in ps],
                   key=lambda p: p.offset)
    conn.matches.add(args.fields.cookie, rules, conn.bus.bloom_size,
                     bool(args.fields.flags & MATCH_REPLACE))


def cmd_match_remove(conn, args, caller):
    assert conn.matches is not None
    conn.matches.remove(args.fields.cookie)
