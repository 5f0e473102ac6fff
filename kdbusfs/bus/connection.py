"""Connections: what a HELLO on an endpoint handle creates, and how messages reach them."""

from __future__ import annotations

import enum
import errno
import logging
import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..abi import structs
from ..abi.constants import (
    HELLO_ACCEPT_FD,
    HELLO_ACTIVATOR,
    HELLO_MONITOR,
    HELLO_POLICY_HOLDER,
    RECV_RETURN_INCOMPLETE_FDS,
    Attach,
    Item,
)
from ..abi.items import item, string_item
from ..abi.structs import align8
from . import limits
from . import message as msgs
from .domain import User
from .endpoint import Endpoint
from .errors import KdbusError, LimitReached, user_named
from .match import MatchDb
from .metadata import CAP_IPC_OWNER, DAEMON_VIEW, IMPLICIT, Creds, Process, Snapshot, View, render
from .pool import Pool, Slice
from .queue import KERNEL_USER, Entry, Queue, UserQuota
from .reply import Reply, SyncWait

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


# What raises a pool quota: it scales with the receiving client's pool, chosen at its HELLO.
_BY_POOL_SIZE = ("it grows with the receiving client's pool size (HELLO pool_size, up to the mount "
                 "option max_pool_size)")
_FIXED = "kdbus fixes it"


def is_privileged(endpoint: Endpoint, opener: Creds) -> bool:
    return endpoint.is_default and opener.has_cap(CAP_IPC_OWNER)


def is_owner(endpoint: Endpoint, opener: Creds) -> bool:
    """Bus owner rights: the bus creator's euid, or CAP_IPC_OWNER, on the default endpoint."""
    return endpoint.is_default and (opener.euid == endpoint.bus.uid or is_privileged(endpoint, opener))


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
    quota: dict[int, UserQuota] = field(default_factory=dict)
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
    def _charge(self, user_key: int, size: int, fds: int) -> UserQuota:
        """Per-sending-user share of this pool (kdbus_conn_quota_inc)."""
        quota = self.quota.get(user_key)
        if quota is None:
            quota = self.quota[user_key] = UserQuota()
        available = self.pool.size // 2
        accounted = self.pool.accounted_size
        if available < accounted:
            raise self._quota_error(errno.ENOBUFS, "incoming half of the pool is full", user_key,
                                    "queued bytes per receiver", available, _BY_POOL_SIZE)
        share = (available - accounted + quota.memory) // 3
        if share < quota.memory or share - quota.memory < size:
            raise self._quota_error(errno.ENOBUFS, f"sender's pool share is used up ({size} more bytes)",
                                    user_key, "queued bytes per receiver and sending user", share,
                                    _BY_POOL_SIZE)
        if quota.msgs >= limits.CONN_MAX_MSGS:
            raise self._quota_error(errno.ENOBUFS, f"{limits.CONN_MAX_MSGS} messages queued", user_key,
                                    "queued messages per receiver and sending user", limits.CONN_MAX_MSGS,
                                    _FIXED)
        if quota.fds + fds > limits.CONN_MAX_FDS_PER_USER:
            raise self._quota_error(errno.EMFILE, "too many fds in flight", user_key,
                                    "fds in flight per receiver and sending user",
                                    limits.CONN_MAX_FDS_PER_USER, _FIXED)
        quota.memory += size
        quota.fds += fds
        quota.msgs += 1
        return quota

    def _quota_error(self, err: int, why: str, user_key: int, limit: str, value: int,
                     raised_by: str) -> LimitReached:
        # Quota keys: a uid, KERNEL_USER for notifications, other negatives for custom endpoints.
        user = "kernel notifications" if user_key == KERNEL_USER else \
            user_named(user_key if user_key >= 0 else None)
        return LimitReached(err, f"connection {self.id}: {why}", limit, value, raised_by, user)

    def _uncharge(self, user_key: int, size: int, fds: int) -> None:
        quota = self.quota[user_key]
        quota.memory -= size
        quota.fds -= fds
        quota.msgs -= 1

    def metadata_for(self, msg: msgs.Staged, sender: Connection | None, process: Process | None) -> bytes:
        """The metadata items this receiver gets with `msg` (KDBUS-SPEC.md §8.2)."""
        if sender is None:
            # Kernel notifications carry exactly a TIMESTAMP.
            return item(Item.TIMESTAMP, structs.TIMESTAMP.pack(*msg.timestamp)) if msg.timestamp else b""
        mask = self.attach_flags_recv
        if not mask:
            return b""
        names: list[tuple[int, str]] = []
        if mask & Attach.NAMES:
            names = [(r.flags, r.entry.name) for r in self.bus.names.owned_names(sender)]
        if sender.snapshot.faked:
            process = None
        elif process is not None and mask & ~(sender.attach_flags_send | IMPLICIT) \
                and not self.view.sees(process):
            # What the sender did not offer is shown only to those who could read it in /proc.
            mask &= sender.attach_flags_send | IMPLICIT
        return render(process, mask, names, sender.description, msg.timestamp, view=self.view)

    def enqueue(self, msg: msgs.Staged, sender: Connection | None, process: Process | None,
                reply: Reply | None = None, name_id: int | None = None) -> Entry:
        """Lay `msg` out in this connection's pool and queue it (kdbus_conn_entry_insert)."""
        if not self.active:
            raise KdbusError(errno.ECONNRESET, f"destination {self.id} is disconnected")
        if msg.n_fds and not self.flags & HELLO_ACCEPT_FD and self.kind is not Kind.MONITOR:
            raise KdbusError(errno.ECOMM, f"destination {self.id} does not accept fds")
        meta = self.metadata_for(msg, sender, process)
        layout = msgs.layout_size(msg, meta, _last_item_padding(meta))
        size = layout[2]
        user_key = KERNEL_USER if sender is None else sender.user_key
        self._charge(user_key, size, msg.n_fds)
        try:
            piece = self.pool.alloc(size, accounted=True)
        except KdbusError as exc:
            self._uncharge(user_key, size, msg.n_fds)
            raise self._quota_error(exc.errno, exc.why, user_key, "free space in a receiver's pool",
                                    self.pool.size, _BY_POOL_SIZE) from None
        kept: bytearray | None = None
        try:
            if name_id is not None and self.pool.client_writable:
                # It may move with the name (to or from an activator) while this client can write
                # to its pool: what moves must be the daemon's own copy.
                kept = bytearray(size)
                msgs.render(msg, kept, 0, meta, layout)
                self.pool.write(piece, kept)
            else:
                msgs.write(msg, self.pool, piece.offset, meta, layout)
        except KdbusError:
            self.pool.release_bus_ref(piece)
            self._uncharge(user_key, size, msg.n_fds)
            raise
        entry = Entry(piece, msg.priority, msg.src_id, msg.cookie, user_key, msg.n_fds, reply, name_id,
                      msg.expects_reply, incomplete_fds=bool(msg.fd_slots), kept=kept)
        self.queue.add(entry)
        self.bus.domain.wake(self)
        return entry

    def _dequeue(self, entry: Entry) -> None:
        self.queue.remove(entry)
        self._uncharge(entry.user_key, entry.slice.size, entry.fds)
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
        self._charge(entry.user_key, size, entry.fds)
        try:
            piece = self.pool.alloc(size, accounted=True)
        except KdbusError:
            self._uncharge(entry.user_key, size, entry.fds)
            raise
        self.pool.write(piece, data)
        moved = Entry(piece, entry.priority, entry.src_id, entry.cookie, entry.user_key, entry.fds,
                      entry.reply, entry.name_id, entry.expects_reply, incomplete_fds=entry.incomplete_fds,
                      kept=entry.kept if self.pool.client_writable else None, passed=entry.passed)
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
        passed, entry.passed = entry.passed, None
        return piece.offset, piece.size, flags, passed

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

    def info_of(self, target: Connection, attach_flags: int) -> bytes:
        """A kdbus_info record about `target` with the metadata it permits and the caller asked for."""
        mask = attach_flags & target.attach_flags_send
        names = [(r.flags, r.entry.name) for r in self.bus.names.owned_names(target)]
        items = render(target.snapshot, mask & ~Attach.TIMESTAMP, names, target.description,
                       faked=target.snapshot.faked, view=self.view)
        return structs.INFO.pack(structs.INFO.size + len(items), target.id, target.flags) + items

    def bus_creator_info(self, attach_flags: int) -> bytes:
        bus = self.bus
        items = string_item(Item.MAKE_NAME, bus.name)
        mask = attach_flags & bus.creator_attach & ~(Attach.TIMESTAMP | Attach.NAMES |
                                                     Attach.CONN_DESCRIPTION)
        items += render(bus.creator, mask, view=self.view)
        return structs.INFO.pack(structs.INFO.size + len(items), bus.id, bus.bus_flags) + items

    def reply_slice(self, msg: msgs.Staged, sender: Connection, process: Process | None) -> tuple[int, int]:
        """A synchronous reply lands straight in the caller's pool, published: (offset, size)."""
        if msg.n_fds and not self.flags & HELLO_ACCEPT_FD:
            raise KdbusError(errno.ECOMM, f"caller {self.id} does not accept fds")
        meta = self.metadata_for(msg, sender, process)
        layout = msgs.layout_size(msg, meta, _last_item_padding(meta))
        piece: Slice = self.pool.alloc(layout[2])
        try:
            msgs.write(msg, self.pool, piece.offset, meta, layout)
        except KdbusError:
            self.pool.release_bus_ref(piece)
            raise
        self.pool.publish(piece)
        self.pool.release_bus_ref(piece)
        return piece.offset, piece.size


def _last_item_padding(items: bytes) -> int:
    """Padding bytes after the last of a run of padded items (kdbus sizes end unpadded)."""
    if not items:
        return 0
    pos = 0
    while True:
        size = int.from_bytes(items[pos : pos + 8], "little")
        nxt = pos + align8(size)
        if nxt >= len(items):
            return nxt - (pos + size)
        pos = nxt


def unicast(src: Connection, msg: msgs.Staged, process: Process | None, sync: SyncWait | None) -> None:
    """Deliver a unicast (call, reply, signal, plain message) from `src` (kdbus_conn_unicast)."""
    bus = src.bus
    dst, name_id = bus.resolve_destination(msg)
    if msg.is_reply:
        answered = _take_reply(dst, src, msg.timeout_or_reply)
        if answered.sync is not None and answered.sync.done:
            # The caller was killed while waiting: nobody takes this answer any more.
            return
        bus.to_monitors(msg, src, process)
        if answered.sync is not None:
            # The caller is blocked in its SEND: the reply goes straight into its pool.
            caller = answered.caller
            try:
                offset, size = caller.reply_slice(msg, src, process)
            except KdbusError as exc:
                answered.sync.finish(errno.EREMOTEIO if exc.errno == errno.ECOMM else exc.errno)
                raise
            caller.bus.domain.wake(caller)
            answered.sync.finish(0, (offset, size, RECV_RETURN_INCOMPLETE_FDS if msg.fd_slots else 0),
                                 msg.share_passed())
            return
        entry = dst.enqueue(msg, src, process)
        entry.passed = msg.share_passed()
        return
    if msg.is_signal:
        # A unicast signal reaches its addressee only through its matches and policy.
        bus.to_monitors(msg, src, process)
        if dst.kind is Kind.ORDINARY and bus.signal_wanted(dst, src, msg):
            try:
                entry = dst.enqueue(msg, src, process, name_id=name_id)
                entry.passed = msg.share_passed()
            except KdbusError as exc:
                log.debug("unicast signal to %d dropped: %s", dst.id, exc)
        return
    if not bus.may_talk(src, process, dst):
        raise KdbusError(errno.EPERM, f"connection {src.id} may not talk to {dst.id}")
    reply: Reply | None = None
    if msg.expects_reply:
        if len(src.trackers) >= limits.CONN_MAX_REQUESTS_PENDING:
            raise KdbusError(errno.EMLINK, f"connection {src.id} has "
                                           f"{limits.CONN_MAX_REQUESTS_PENDING} calls pending")
        reply = Reply(src, dst, msg.cookie, msg.timeout_or_reply, name_id, sync)
    bus.to_monitors(msg, src, process)
    entry = dst.enqueue(msg, src, process, reply, name_id)
    # Shared only once queued: a failed enqueue leaves them to the message, which closes them.
    entry.passed = msg.share_passed()
    if reply is not None:
        src.trackers.append(reply)
        dst.awaited.append(reply)
        if sync is not None:
            src.sync_waits.append(sync)
        bus.schedule_timeout(reply)


def _take_reply(caller: Connection, replier: Connection, cookie: int) -> Reply:
    for reply in caller.trackers:
        if reply.cookie == cookie and reply.replier is replier and reply.waiting:
            reply.caller.bus.forget_reply(reply)
            return reply
    raise KdbusError(errno.EBADSLT, f"no call {cookie} from {caller.id} awaits a reply from {replier.id}")
