"""Well-known names: syntax, and the registry of owners, queues and activators (one per bus).

Each name has a FIFO queue of owner records (the head is the primary owner) and at most one
activator record outside the queue. The registry reports what changed through `notify(kind, name,
old, new)` with (id, flags) pairs, which the bus turns into kernel notifications.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import limits
from ..abi import structs
from ..abi.constants import (
    HELLO_ACTIVATOR,
    HELLO_MONITOR,
    HELLO_POLICY_HOLDER,
    LIST_ACTIVATORS,
    LIST_NAMES,
    LIST_QUEUED,
    LIST_UNIQUE,
    NAME_ACQUIRED,
    NAME_ACTIVATOR,
    NAME_ALLOW_REPLACEMENT,
    NAME_IN_QUEUE,
    NAME_PRIMARY,
    NAME_QUEUE,
    NAME_REPLACE_EXISTING,
    Item,
)
from ..abi.items import item
from ..abi.structs import U64
from ..abi.walk import ParsedItem
from ..errors import KdbusError
from . import policy
from .command import Args, Caller

if TYPE_CHECKING:
    from .connection import Connection

class NameTaken(KdbusError):
    """NAME_ACQUIRE of a name someone else owns, without queueing or replacing: EEXIST, with the
    flags of the caller's (refused) record, which kdbus returns."""

    def __init__(self, why: str, return_flags: int) -> None:
        super().__init__(errno.EEXIST, why)
        self.return_flags = return_flags


# Flags an owner record keeps from its NAME_ACQUIRE.
SAVED_FLAGS = NAME_ALLOW_REPLACEMENT | NAME_QUEUE
ACQUIRE_FLAGS = NAME_REPLACE_EXISTING | NAME_ALLOW_REPLACEMENT | NAME_QUEUE


# Two or more dot-separated elements of [A-Za-z0-9_-], none starting with a digit.
_NAME = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*(?:\.[A-Za-z_-][A-Za-z0-9_-]*)+")
_WILDCARD = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*(?:\.[A-Za-z_-][A-Za-z0-9_-]*)*\.\*")


def is_valid_name(name: str, allow_wildcard: bool = False) -> bool:
    """D-Bus well-known name rules as kdbus checks them; `a.b.*` only where wildcards are allowed."""
    if not name or len(name) > limits.NAME_MAX_LEN:
        return False
    if _NAME.fullmatch(name) is not None:
        return True
    return allow_wildcard and _WILDCARD.fullmatch(name) is not None


@dataclass(slots=True, eq=False)
class Owner:
    conn: Connection
    entry: NameEntry
    flags: int = 0

    @property
    def queued(self) -> bool:
        return self in self.entry.queue


@dataclass(slots=True, eq=False)
class NameEntry:
    name: str
    name_id: int
    queue: list[Owner] = field(default_factory=list)
    activator: Owner | None = None

    @property
    def primary(self) -> Owner | None:
        return self.queue[0] if self.queue else None

    def owner(self) -> Owner | None:
        """Who messages to the name go to: the primary owner, else the activator."""
        return self.queue[0] if self.queue else self.activator

    def record_of(self, conn: Connection) -> Owner | None:
        for record in self.queue:
            if record.conn is conn:
                return record
        if self.activator is not None and self.activator.conn is conn:
            return self.activator
        return None

    def used(self) -> bool:
        return bool(self.queue) or self.activator is not None


Notify = Callable[[int, str, tuple[int, int], tuple[int, int]], None]
# Called when a name moves to or from an activator: (to, from, name_id) moves the queued messages.
MoveMessages = Callable[["Connection", "Connection", int], None]


@dataclass(slots=True, eq=False)
class Registry:
    notify: Notify
    move_messages: MoveMessages
    entries: dict[str, NameEntry] = field(default_factory=dict)
    _last_name_id: int = 0

    def lookup(self, name: str) -> NameEntry | None:
        return self.entries.get(name)

    def _new_record(self, conn: Connection, entry: NameEntry) -> Owner:
        if len(conn.name_records) >= limits.CONN_MAX_NAMES:
            raise KdbusError(errno.E2BIG, f"connection {conn.id} has {limits.CONN_MAX_NAMES} names")
        record = Owner(conn, entry)
        conn.name_records.append(record)
        return record

    def _entry(self, name: str) -> NameEntry:
        entry = self.entries.get(name)
        if entry is None:
            self._last_name_id += 1
            entry = self.entries[name] = NameEntry(name, self._last_name_id)
        return entry

    def _cleanup(self, record: Owner | None, entry: NameEntry) -> None:
        if record is not None and not record.queued and entry.activator is not record:
            if record in record.conn.name_records:
                record.conn.name_records.remove(record)
        if not entry.used() and self.entries.get(entry.name) is entry:
            del self.entries[entry.name]

    def acquire(self, conn: Connection, name: str, flags: int) -> int:
        """NAME_ACQUIRE; returns the return flags (also on EEXIST, through the exception's flags)."""
        entry = self._entry(name)
        record = entry.record_of(conn)
        try:
            if record is None:
                record = self._new_record(conn, entry)
            return self._update(record, flags)
        finally:
            self._cleanup(record, entry)

    def _update(self, record: Owner, flags: int) -> int:
        entry = record.entry
        primary = entry.primary
        activator = entry.activator
        if record is activator:
            raise KdbusError(errno.EUCLEAN, "an activator cannot acquire its own name")
        record.flags = flags & SAVED_FLAGS
        extra = 0
        if primary is None:
            entry.queue.insert(0, record)
            record.flags |= NAME_PRIMARY
            extra = NAME_ACQUIRED
            if activator is not None:
                self.move_messages(record.conn, activator.conn, entry.name_id)
                self.notify(Item.NAME_CHANGE, entry.name, (activator.conn.id, activator.flags),
                            (record.conn.id, record.flags))
                activator.flags = (activator.flags & ~NAME_PRIMARY) | NAME_IN_QUEUE
            else:
                self.notify(Item.NAME_ADD, entry.name, (0, 0), (record.conn.id, record.flags))
        elif record is primary:
            record.flags |= NAME_PRIMARY
        elif primary.flags & NAME_ALLOW_REPLACEMENT and flags & NAME_REPLACE_EXISTING:
            if record.queued:
                entry.queue.remove(record)
            entry.queue.insert(0, record)
            record.flags |= NAME_PRIMARY
            extra = NAME_ACQUIRED
            self.notify(Item.NAME_CHANGE, entry.name, (primary.conn.id, primary.flags),
                        (record.conn.id, record.flags))
            if primary.flags & NAME_QUEUE:
                primary.flags = (primary.flags & ~NAME_PRIMARY) | NAME_IN_QUEUE
            else:
                entry.queue.remove(primary)
                primary.conn.name_records.remove(primary)
        elif flags & NAME_QUEUE:
            record.flags |= NAME_IN_QUEUE
            if not record.queued:
                entry.queue.append(record)
                extra = NAME_ACQUIRED
        elif record.queued:
            entry.queue.remove(record)
        else:
            raise NameTaken(f"name {entry.name} is owned by {primary.conn.id}", record.flags)
        return record.flags | extra

    def become_activator(self, conn: Connection, name: str) -> None:
        entry = self._entry(name)
        if entry.activator is not None:
            self._cleanup(None, entry)
            raise KdbusError(errno.EEXIST, f"name {name} already has an activator")
        record = self._new_record(conn, entry)
        entry.activator = record
        record.flags |= NAME_ACTIVATOR
        if entry.primary is not None:
            record.flags |= NAME_IN_QUEUE
        else:
            record.flags |= NAME_PRIMARY
            self.notify(Item.NAME_ADD, name, (0, 0), (conn.id, record.flags))

    def release(self, conn: Connection, name: str) -> None:
        entry = self.entries.get(name)
        if entry is None:
            raise KdbusError(errno.ESRCH, f"no name {name!r}")
        record = entry.record_of(conn)
        if record is None:
            raise KdbusError(errno.EADDRINUSE, f"connection {conn.id} does not own or queue for {name}")
        self._release(record)

    def _release(self, record: Owner) -> None:
        entry = record.entry
        primary = entry.primary
        if record.queued:
            entry.queue.remove(record)
        if entry.activator is record:
            entry.activator = None
        if primary is None or record is primary:
            successor = entry.primary or entry.activator
            if successor is not None:
                successor.flags = (successor.flags & ~NAME_IN_QUEUE) | NAME_PRIMARY
                if successor is entry.activator:
                    self.move_messages(successor.conn, record.conn, entry.name_id)
                self.notify(Item.NAME_CHANGE, entry.name, (record.conn.id, record.flags),
                            (successor.conn.id, successor.flags))
            else:
                self.notify(Item.NAME_REMOVE, entry.name, (record.conn.id, record.flags), (0, 0))
        if record in record.conn.name_records:
            record.conn.name_records.remove(record)
        if not entry.used():
            del self.entries[entry.name]

    def release_all(self, conn: Connection) -> None:
        for record in list(conn.name_records):
            self._release(record)

    def owned_names(self, conn: Connection) -> list[Owner]:
        """Names the connection holds as primary (an activator's held name included), in order."""
        return [r for r in conn.name_records if r.flags & NAME_PRIMARY]


def register_special(conn: Connection, name_item: ParsedItem, access: list[ParsedItem]) -> None:
    """At HELLO: an activator holds its name; activators and policy holders put up the policy
    of the POLICY_ACCESS items for their name (a policy holder's may be a wildcard)."""
    name = name_item.string
    if conn.flags & HELLO_ACTIVATOR:
        if not is_valid_name(name):
            raise KdbusError(errno.EINVAL, f"an activator needs a plain name, not {name!r}")
        conn.bus.names.become_activator(conn, name)
    upload = policy.parse_upload([name_item, *access], allow_wildcards=bool(conn.flags & HELLO_POLICY_HOLDER))
    conn.bus.policy.replace(conn, upload)


# -- commands ---------------------------------------------------------------------------------

def cmd_name_acquire(conn: Connection, args: Args[structs.Cmd], caller: Caller) -> None:
    name_item = args.item(Item.NAME)
    assert name_item is not None
    name = name_item.string
    if not is_valid_name(name):
        raise KdbusError(errno.EINVAL, f"invalid well-known name {name!r}")
    if not policy.may_own(conn, caller.creds(), name):
        raise KdbusError(errno.EPERM, f"connection {conn.id} may not own {name}")
    try:
        return_flags = conn.bus.names.acquire(conn, name, args.fields.flags & ACQUIRE_FLAGS)
    except NameTaken as exc:
        # kdbus reports the refused record's flags with the EEXIST.
        args.out = args.out._replace(return_flags=exc.return_flags)
        raise
    args.out = args.out._replace(return_flags=return_flags)


def cmd_name_release(conn: Connection, args: Args[structs.Cmd], caller: Caller) -> None:
    name_item = args.item(Item.NAME)
    assert name_item is not None
    conn.bus.names.release(conn, name_item.string)


def cmd_list(conn: Connection, args: Args[structs.CmdList], caller: Caller) -> None:
    """LIST: a kdbus_info record per connection and name record the flags ask for, in the pool."""
    flags = args.fields.flags
    records = []

    def hidden(name: str) -> bool:
        return conn.endpoint.policy is not None and not policy.may_see_name(conn, caller.creds(), name)

    for peer in conn.bus.connections.values():
        if peer.flags & HELLO_MONITOR:
            continue  # monitors are not listed (their kind is this flag)
        emitted = False
        for record in peer.name_records:
            if record.flags & NAME_ACTIVATOR:
                wanted = flags & LIST_ACTIVATORS
            elif record.flags & NAME_IN_QUEUE:
                wanted = flags & LIST_QUEUED
            else:
                wanted = flags & LIST_NAMES
            if wanted and hidden(record.entry.name):
                continue
            if wanted:
                name = item(Item.OWNED_NAME, U64.pack(record.flags) + record.entry.name.encode() + b"\0")
                records.append(structs.INFO.pack(structs.INFO.size + len(name), peer.id, peer.flags) + name)
                emitted = True
        if not emitted and flags & LIST_UNIQUE:
            records.append(structs.INFO.pack(structs.INFO.size, peer.id, peer.flags))
    data = b"".join(records)
    if not data:
        args.out = args.out._replace(offset=conn.pool.size, list_size=0)
        return
    offset, size = conn.publish(data)
    args.out = args.out._replace(offset=offset, list_size=size)
