"""Connections: what a HELLO on an endpoint handle creates, and how messages reach them."""

from __future__ import annotations

import enum
import errno
import logging
import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import limits
from ..abi import structs
from ..abi.constants import (
    HELLO_ACCEPT_FD,
    HELLO_ACTIVATOR,
    HELLO_MONITOR,
    HELLO_POLICY_HOLDER,
    RECV_DROP,
    RECV_PEEK,
    RECV_RETURN_DROPPED_MSGS,
    RECV_RETURN_INCOMPLETE_FDS,
    RECV_USE_PRIORITY,
    Item,
)
from ..abi.items import item
from ..errors import KdbusError, LimitReached, user_named
from . import message as msgs
from . import metadata, policy
from .command import Args, Caller, attach_flags
from .domain import User
from .endpoint import Endpoint, is_owner, is_privileged
from .match import MatchDb
from .metadata import (
    DAEMON_VIEW,
    Creds,
    Process,
    Snapshot,
    View,
)
from .pool import Pool
from .queue import KERNEL_USER, Entry, Queue, Quotas
from .reply import Reply, SyncWait
from .stats import Counters

if TYPE_CHECKING:
    from .bus import Bus
    from .names import Owner

log = logging.getLogger("kdbusfs.connection")

HELLO_FLAGS = HELLO_ACCEPT_FD | HELLO_ACTIVATOR | HELLO_POLICY_HOLDER | HELLO_MONITOR


class Kind(enum.Enum):
    ORDINARY = "ordinary"
    MONITOR = "monitor"
    ACTIVATOR = "activator"
    POLICY_HOLDER = "policy holder"


def kind_of(flags: int) -> Kind:
    special = flags & (HELLO_ACTIVATOR | HELLO_POLICY_HOLDER | HELLO_MONITOR)
    if special & (special - 1):
        raise KdbusError(errno.EINVAL, "at most one of ACTIVATOR, POLICY_HOLDER, MONITOR")
    if special == HELLO_MONITOR:
        return Kind.MONITOR
    if special == HELLO_ACTIVATOR:
        return Kind.ACTIVATOR
    if special == HELLO_POLICY_HOLDER:
        return Kind.POLICY_HOLDER
    return Kind.ORDINARY


@dataclass(slots=True, eq=False)
class Connection:
    id: int
    bus: Bus
    endpoint: Endpoint
    flags: int
    kind: Kind
    attach_flags_send: int
    attach_flags_recv: int
    pool: Pool
    # Credentials of the task that opened the file (policy, accounting).
    opener: Creds
    # The HELLO caller's process facts, as CONN_INFO reports them.
    snapshot: Snapshot
    user: User
    description: str | None = None
    owner: bool = False
    privileged: bool = False
    active: bool = True
    queue: Queue = field(default_factory=Queue)
    # Broadcasts (and hand-over moves) that could not be queued, reported by the next RECV.
    lost: int = 0
    # Name records (owned, queued, activator) in acquisition order.
    name_records: list[Owner] = field(default_factory=list)
    # Calls this connection made that await a reply, and calls others made to it.
    trackers: list[Reply] = field(default_factory=list)
    awaited: list[Reply] = field(default_factory=list)
    # Synchronous SENDs of this connection that are blocked.
    sync_waits: list[SyncWait] = field(default_factory=list)
    # Ordinary connections only: which signals and notifications they take.
    matches: MatchDb | None = None
    # How this connection sees other tasks' ids (its namespaces).
    view: View = DAEMON_VIEW
    # Each sending user's share of the pool.
    quota: Quotas = field(init=False)
    stats: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.quota = Quotas(self.id)

    @classmethod
    def hello(
        cls, endpoint: Endpoint, opener: Creds, snapshot: Snapshot, flags: int,
        attach_flags_send: int, attach_flags_recv: int, pool_size: int,
        description: str | None, name: str | None,
        pool_memory: Callable[[int], mmap.mmap] | None = None, view: View = DAEMON_VIEW,
    ) -> Connection:
        bus = endpoint.bus
        if not (bus.active and endpoint.active and bus.domain.active):
            raise KdbusError(errno.ESHUTDOWN, "endpoint is shutting down")
        kind = kind_of(flags)
        if pool_size == 0 or pool_size % limits.PAGE_SIZE:
            raise KdbusError(errno.EINVAL, f"pool size {pool_size} is not a positive multiple of a page")
        max_pool = bus.domain.limits.max_pool_size
        if pool_size > max_pool:
            raise LimitReached(errno.EINVAL, f"pool size {pool_size} exceeds this mount's {max_pool}",
                               "pool size", max_pool, "raise it with the mount option max_pool_size=BYTES",
                               user_named(opener.uid))
        if kind in (Kind.ACTIVATOR, Kind.POLICY_HOLDER):
            if name is None:
                raise KdbusError(errno.EINVAL, f"{kind.value} needs a NAME item")
        elif name is not None:
            raise KdbusError(errno.EINVAL, f"NAME item on a {kind.value} connection")
        if kind is Kind.MONITOR and not endpoint.is_default:
            raise KdbusError(errno.EOPNOTSUPP, "monitors are not allowed on custom endpoints")
        owner = is_owner(endpoint, opener)
        if kind is not Kind.ORDINARY and not owner:
            raise KdbusError(errno.EPERM, f"a {kind.value} needs bus owner rights")
        user = endpoint.user if endpoint.user is not None else bus.domain.user(opener.uid)
        user.charge_connection()
        pool = Pool(pool_size, pool_memory(pool_size) if pool_memory is not None else None)
        conn = cls(
            id=bus.domain.next_id(), bus=bus, endpoint=endpoint, flags=flags, kind=kind,
            attach_flags_send=attach_flags_send, attach_flags_recv=attach_flags_recv,
            pool=pool, opener=opener, snapshot=snapshot, user=user,
            description=description, owner=owner, privileged=is_privileged(endpoint, opener),
            view=view,
        )
        if kind is Kind.ORDINARY:
            conn.matches = MatchDb(subscribers=bus.notification_subscribers, owner_id=conn.id)
        endpoint.connections[conn.id] = conn
        bus.connections[conn.id] = conn
        if kind is Kind.MONITOR:
            bus.monitors.append(conn)
        return conn

    # -- the pool -----------------------------------------------------------------------------
    def bloom_slice(self) -> tuple[int, int]:
        """Publish the bus's bloom parameters in the pool, as HELLO returns them."""
        payload = item(Item.BLOOM_PARAMETER,
                       structs.BLOOM_PARAMETER.pack(self.bus.bloom_size, self.bus.bloom_n_hash))
        return self.publish(payload)

    def publish(self, data: bytes) -> tuple[int, int]:
        """Copy `data` into a fresh unaccounted slice and hand it to the client: (offset, size)."""
        piece = self.pool.alloc(len(data))
        self.pool.write(piece, data)
        self.pool.publish(piece)
        self.pool.release_bus_ref(piece)
        self.bus.domain.wake(self)
        return piece.offset, piece.size

    # -- queueing -----------------------------------------------------------------------------
    def enqueue(self, msg: msgs.Staged, sender: Connection | None, process: Process | None,
                reply: Reply | None = None, name_id: int | None = None) -> Entry:
        """Lay `msg` out in this connection's pool and queue it (kdbus_conn_entry_insert)."""
        if not self.active:
            raise KdbusError(errno.ECONNRESET, f"destination {self.id} is disconnected")
        if msg.n_fds and not self.flags & HELLO_ACCEPT_FD and self.kind is not Kind.MONITOR:
            raise KdbusError(errno.ECOMM, f"destination {self.id} does not accept fds")
        meta = metadata.for_receiver(self, msg, sender, process)
        user_key = KERNEL_USER if sender is None else sender.user_key
        # A message that may move with its name (to or from an activator) while this client can
        # write to its pool is kept: what moves must be the daemon's own copy.
        keep = name_id is not None and self.pool.client_writable
        entry = self.queue.insert(self.quota, self.pool, msg, meta, user_key, reply, name_id, keep)
        self.bus.domain.wake(self)
        return entry

    def _dequeue(self, entry: Entry) -> None:
        self.queue.remove(entry)
        self.quota.uncharge(entry.user_key, entry.slice.size, entry.fds)
        if not self.queue:
            self.bus.domain.wake(self)

    def take_entry(self, entry: Entry) -> None:
        """Unqueue `entry` to move it elsewhere; the caller releases its slice afterwards."""
        self._dequeue(entry)

    def adopt_entry(self, entry: Entry, source: Pool) -> None:
        """Queue a message moved from another connection's pool `source`."""
        if not self.active:
            raise KdbusError(errno.ECONNRESET, f"connection {self.id} is disconnected")
        if entry.fds and not self.flags & HELLO_ACCEPT_FD:
            raise KdbusError(errno.ECOMM, f"connection {self.id} does not accept fds")
        size = entry.slice.size
        data: bytearray | bytes | None = entry.kept
        if data is None:
            if source.client_writable:
                raise AssertionError("a message queued through a name in a writable pool was not kept")
            # A pool no client can write to still holds exactly what the daemon wrote.
            start = entry.slice.offset
            data = source.buffer[start : start + size]
        self.quota.charge(self.pool, entry.user_key, size, entry.fds)
        try:
            piece = self.pool.alloc(size, accounted=True)
        except KdbusError:
            self.quota.uncharge(entry.user_key, size, entry.fds)
            raise
        self.pool.write(piece, data)
        moved = Entry(piece, entry.priority, entry.src_id, entry.cookie, entry.user_key, entry.fds,
                      entry.reply, entry.name_id, entry.expects_reply, incomplete_fds=entry.incomplete_fds,
                      kept=entry.kept if self.pool.client_writable else None, passed=entry.passed,
                      payload=entry.payload)
        entry.passed = None
        self.queue.add(moved)
        self.bus.domain.wake(self)

    @property
    def user_key(self) -> int:
        return self.user.key

    # -- receiving ----------------------------------------------------------------------------
    def recv(self, peek: bool, drop: bool, priority: int | None) -> tuple[int, int, int, msgs.Passed | None]:
        """RECV: (offset, size, return_flags) of the next message and the descriptors it passes,
        now the caller's to install or close; EAGAIN if there is none.

        A PEEK installs nothing (kdbus's intended behaviour): the descriptors stay with the message.
        """
        entry = self.queue.peek(priority)
        if entry is None:
            raise KdbusError(errno.EAGAIN, "no message queued")
        piece = entry.slice
        if drop:
            self._dequeue(entry)
            entry.drop_passed()
            self.pool.release_bus_ref(piece)
            if entry.reply is not None:
                self.bus.reply_dead(entry.reply)
            return self.pool.size, 0, 0, None
        self.pool.publish(piece)
        flags = RECV_RETURN_INCOMPLETE_FDS if entry.incomplete_fds else 0
        if peek:
            entry.peeked = True
            return piece.offset, piece.size, flags, None
        self._dequeue(entry)
        self.pool.release_bus_ref(piece)
        self.stats.received(entry.payload)
        passed, entry.passed = entry.passed, None
        return piece.offset, piece.size, flags, passed

    def lose_message(self) -> None:
        """A message meant for this connection found no room: the next RECV reports it."""
        self.lost += 1
        self.stats.messages_dropped += 1
        self.bus.domain.wake(self)

    def take_lost(self) -> int:
        lost, self.lost = self.lost, 0
        return lost

    @property
    def readable(self) -> bool:
        return bool(self.queue) or self.lost > 0

    # -- teardown -----------------------------------------------------------------------------
    def disconnect(self) -> bool:
        """Tear the connection down (KDBUS-SPEC.md §3.5); returns False if it already was."""
        if not self.active:
            return False
        self.active = False
        bus = self.bus
        for wait in list(self.sync_waits):
            wait.finish(errno.ECONNRESET)
        bus.policy.remove_owner(self)
        self.endpoint.connections.pop(self.id, None)
        bus.connections.pop(self.id, None)
        bus.notification_subscribers.forget(self.id)
        self.user.connections -= 1
        bus.names.release_all(self)
        for entry in self.queue.drain():
            entry.drop_passed()
            self.pool.release_bus_ref(entry.slice)
            if entry.reply is not None:
                bus.reply_dead(entry.reply)
        self.quota.clear()
        for reply in list(self.trackers):
            bus.forget_reply(reply)
        for reply in list(self.awaited):
            bus.reply_dead(reply)
        bus.domain.wake(self)
        bus.connection_gone(self)
        return True

    # -- queries ------------------------------------------------------------------------------
    def find_peer(self, conn_id: int) -> Connection:
        peer = self.bus.connections.get(conn_id)
        if peer is None:
            raise KdbusError(errno.ENXIO, f"no connection {conn_id} on bus {self.bus.name}")
        return peer


# -- commands ---------------------------------------------------------------------------------

def cmd_byebye(conn: Connection, args: Args[structs.Cmd], caller: Caller) -> None:
    if conn.queue:
        raise KdbusError(errno.EBUSY, f"connection {conn.id} still has {len(conn.queue)} messages")
    conn.disconnect()
    log.debug("connection %d said goodbye", conn.id)


def cmd_free(conn: Connection, args: Args[structs.CmdFree], caller: Caller) -> None:
    conn.pool.free_user(args.fields.offset)


def cmd_update(conn: Connection, args: Args[structs.Cmd], caller: Caller) -> None:
    """UPDATE: new attach flags, or (a policy holder) new policy for its name."""
    send_item = args.item(Item.ATTACH_FLAGS_SEND)
    recv_item = args.item(Item.ATTACH_FLAGS_RECV)
    uploads = Item.NAME in args.items or Item.POLICY_ACCESS in args.items
    if send_item and conn.kind not in (Kind.ORDINARY, Kind.MONITOR):
        raise KdbusError(errno.EOPNOTSUPP, f"a {conn.kind.value} cannot change its send attach flags")
    if recv_item and conn.kind is Kind.POLICY_HOLDER:
        raise KdbusError(errno.EOPNOTSUPP, "a policy holder receives nothing")
    if uploads and conn.kind is not Kind.POLICY_HOLDER:
        raise KdbusError(errno.EOPNOTSUPP, "only policy holders upload policy")
    new_send = attach_flags(send_item.u64) if send_item else conn.attach_flags_send
    new_recv = attach_flags(recv_item.u64) if recv_item else conn.attach_flags_recv
    if uploads:
        if len(args.items.get(Item.NAME, [])) > 1:
            raise KdbusError(errno.E2BIG, "a policy holder holds policy for one name")
        records = [*args.items.get(Item.NAME, []), *args.items.get(Item.POLICY_ACCESS, [])]
        upload = policy.parse_upload(records, allow_wildcards=True)
        conn.bus.policy.replace(conn, upload)
    conn.attach_flags_send, conn.attach_flags_recv = new_send, new_recv


def cmd_conn_info(conn: Connection, args: Args[structs.CmdInfo], caller: Caller) -> None:
    """CONN_INFO about a peer, by id or by a name it owns, if this connection may see it."""
    attach = attach_flags(args.fields.attach_flags)
    name_item = args.item(Item.NAME)
    if name_item is not None:
        entry = conn.bus.names.lookup(name_item.string)
        record = entry.owner() if entry is not None else None
        if record is None or not policy.may_see_name(conn, caller.creds(), name_item.string):
            raise KdbusError(errno.ESRCH, f"name {name_item.string!r} has no owner")
        if args.fields.id != 0 and args.fields.id != record.conn.id:
            raise KdbusError(errno.ESRCH, f"name {name_item.string!r} is not owned by {args.fields.id}")
        target = record.conn
    elif args.fields.id == 0:
        raise KdbusError(errno.EINVAL, "CONN_INFO needs an id or a NAME item")
    else:
        target = conn.find_peer(args.fields.id)
        if not policy.may_see(conn, caller.creds(), target):
            raise KdbusError(errno.ENXIO, f"connection {target.id} is not visible here")
    offset, size = conn.publish(metadata.info_record(conn, target, attach))
    args.out = args.out._replace(offset=offset, info_size=size)


def cmd_recv(conn: Connection, args: Args[structs.CmdRecv], caller: Caller) -> None:
    """RECV: the next message (or a peek at it, or drop it), its descriptors installed."""
    flags = args.fields.flags
    if flags & RECV_DROP and flags & RECV_USE_PRIORITY:
        raise KdbusError(errno.EINVAL, "RECV cannot DROP by priority")
    lost = conn.take_lost()
    lost_flags = RECV_RETURN_DROPPED_MSGS if lost else 0
    priority = args.fields.priority if flags & RECV_USE_PRIORITY else None
    try:
        offset, size, return_flags, passed = conn.recv(bool(flags & RECV_PEEK), bool(flags & RECV_DROP),
                                                       priority)
    except KdbusError:
        # An empty queue (EAGAIN) still reports the messages lost since the last RECV.
        args.out = args.out._replace(dropped_msgs=lost, return_flags=lost_flags, msg_offset=conn.pool.size,
                                     msg_msg_size=0, msg_return_flags=0)
        raise
    if passed is not None and caller.install(passed, conn.pool, offset):
        return_flags &= ~RECV_RETURN_INCOMPLETE_FDS
    args.out = args.out._replace(dropped_msgs=lost, return_flags=lost_flags, msg_offset=offset,
                                 msg_msg_size=size, msg_return_flags=return_flags)
