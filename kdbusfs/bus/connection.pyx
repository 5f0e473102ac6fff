# cython: language_level=3, boundscheck=False, wraparound=False
"""Connections: what a HELLO on an endpoint handle creates, and how messages reach them.

Compiled (issue 12): every message is queued, received and taken off through a Connection, and
SEND (send.pyx) reaches its receivers' fields typed. Its fields are declared in connection.pxd.
"""

import enum
import errno
import logging

from libc.stdint cimport uint64_t

from ..abi.fields cimport u64_at
from .args cimport Args
from .message cimport Staged
from .pool cimport Pool, Slice
from .queue cimport Entry, Queue, Quotas

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
from ..errors import KdbusError, LimitReached, Refused, user_named
from . import layout, metadata, policy
from .command import attach_flags
from .endpoint import is_owner, is_privileged
from .match import MatchDb
from .metadata import DAEMON_VIEW
from .queue import BY_POOL_SIZE, KERNEL_USER


# RECV's answer when nothing is queued.
NOTHING_QUEUED = Refused(errno.EAGAIN, "no message queued")

log = logging.getLogger("kdbusfs.connection")

HELLO_FLAGS = HELLO_ACCEPT_FD | HELLO_ACTIVATOR | HELLO_POLICY_HOLDER | HELLO_MONITOR


class Kind(enum.Enum):
    ORDINARY = "ordinary"
    MONITOR = "monitor"
    ACTIVATOR = "activator"
    POLICY_HOLDER = "policy holder"


def kind_of(flags):
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


cdef object _ORDINARY = Kind.ORDINARY
cdef object _MONITOR = Kind.MONITOR
cdef unsigned long long _ACCEPT_FD = HELLO_ACCEPT_FD
cdef long long _KERNEL_USER = KERNEL_USER


cdef class Connection:
    """A connection on a bus: its pool, its queue, its names, matches and calls in flight."""

    def __init__(self, id, bus, endpoint, flags, kind, attach_flags_send, attach_flags_recv,
                 Pool pool not None, opener, snapshot, user, description=None, owner=False,
                 privileged=False, active=True, view=DAEMON_VIEW):
        self.id = id
        self.bus = bus
        self.endpoint = endpoint
        self.flags = flags
        self.kind = kind
        self.attach_flags_send = attach_flags_send
        self.attach_flags_recv = attach_flags_recv
        self.pool = pool
        self.opener = opener
        self.snapshot = snapshot
        self.user = user
        self.description = description
        self.owner = owner
        self.privileged = privileged
        self.active = active
        self.queue = Queue()
        self.lost = 0
        self.name_records = []
        self.trackers = []
        self.awaited = []
        self.sync_waits = []
        self.matches = None
        self.view = view
        self.quota = Quotas(id)
        self.stats = Counters()

    def __repr__(self):
        return f"Connection(id={self.id}, kind={self.kind.value}, active={self.active})"

    @classmethod
    def hello(cls, endpoint, opener, snapshot, flags, attach_flags_send, attach_flags_recv, pool_size,
              description, name, pool_memory=None, view=DAEMON_VIEW):
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
    def bloom_slice(self):
        """Publish the bus's bloom parameters in the pool, as HELLO returns them."""
        payload = item(Item.BLOOM_PARAMETER,
                       structs.BLOOM_PARAMETER.pack(self.bus.bloom_size, self.bus.bloom_n_hash))
        return self.publish(payload)

    def publish(self, data):
        """Copy `data` into a fresh unaccounted slice and hand it to the client: (offset, size)."""
        piece = self.pool.alloc(len(data))
        self.pool.write(piece, data)
        self.pool.publish(piece)
        self.pool.release_bus_ref(piece)
        self.bus.domain.wake(self)
        return piece.offset, piece.size

    # -- queueing -----------------------------------------------------------------------------
    cpdef Entry enqueue(self, Staged msg, Connection sender, process, reply=None, name_id=None):
        """Lay `msg` out in this connection's pool and queue it (kdbus_conn_entry_insert)."""
        cdef Pool pool = self.pool
        cdef Slice piece
        cdef Py_ssize_t size
        cdef long long user_key
        if not self.active:
            raise KdbusError(errno.ECONNRESET, f"destination {self.id} is disconnected")
        if msg.n_fds and not self.flags & _ACCEPT_FD and self.kind is not _MONITOR:
            raise KdbusError(errno.ECOMM, f"destination {self.id} does not accept fds")
        meta = metadata.for_receiver(self, msg, sender, process)
        shape = layout.layout_for(msg, meta)
        size = shape[2]
        # Who is charged for it: the sender's accounting user (kernel notifications apart).
        user_key = _KERNEL_USER if sender is None else sender.user.key
        self.quota.charge(pool, user_key, size, msg.n_fds)
        try:
            piece = pool.alloc(size, True)
        except KdbusError as exc:
            self.quota.uncharge(user_key, size, msg.n_fds)
            raise self.quota.error(exc.errno, exc.why, user_key, "free space in a receiver's pool",
                                   pool.size, BY_POOL_SIZE) from None
        kept = None
        try:
            if name_id is not None and pool.client_writable:
                # It may move with the name (to or from an activator) while this client can write
                # to its pool: what moves must be the daemon's own copy.
                kept = bytearray(size)
                layout.render(msg, kept, 0, meta, shape)
                pool.write(piece, kept)
            else:
                layout.write(msg, pool, piece.offset, meta, shape)
        except KdbusError:
            pool.release_bus_ref(piece)
            self.quota.uncharge(user_key, size, msg.n_fds)
            raise
        cdef Entry entry = Entry(piece, msg.priority, msg.src_id, msg.cookie, user_key, msg.n_fds, reply,
                                 name_id, msg.expects_reply, incomplete_fds=bool(msg.fd_slots), kept=kept,
                                 payload=msg.n_payload)
        self.queue.add(entry)
        self.bus.domain.wake(self)
        return entry

    cdef _dequeue(self, Entry entry):
        self.queue.remove(entry)
        self.quota.uncharge(entry.user_key, entry.slice.size, entry.fds)
        if not self.queue:
            self.bus.domain.wake(self)

    def take_entry(self, Entry entry):
        """Unqueue `entry` to move it elsewhere; the caller releases its slice afterwards."""
        self._dequeue(entry)

    def adopt_entry(self, entry, source):
        """Queue a message moved from another connection's pool `source`."""
        if not self.active:
            raise KdbusError(errno.ECONNRESET, f"connection {self.id} is disconnected")
        if entry.fds and not self.flags & HELLO_ACCEPT_FD:
            raise KdbusError(errno.ECOMM, f"connection {self.id} does not accept fds")
        size = entry.slice.size
        data = entry.kept
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

    # -- receiving ----------------------------------------------------------------------------
    cpdef recv(self, bint peek, bint drop, priority):
        """RECV: (offset, size, return_flags) of the next message and the descriptors it passes,
        now the caller's to install or close; None if there is none.

        A PEEK installs nothing (kdbus's intended behaviour): the descriptors stay with the message.
        """
        cdef Entry entry = self.queue.peek(priority)
        cdef Slice piece
        if entry is None:
            return None
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

    def lose_message(self):
        """A message meant for this connection found no room: the next RECV reports it."""
        self.lost += 1
        self.stats.messages_dropped += 1
        self.bus.domain.wake(self)

    cpdef Py_ssize_t take_lost(self):
        cdef Py_ssize_t lost = self.lost
        self.lost = 0
        return lost

    cdef bint is_readable(self):
        return len(self.queue) > 0 or self.lost > 0

    @property
    def readable(self):
        """A RECV would find something: a message, or the news that some were lost."""
        return self.is_readable()

    # -- teardown -----------------------------------------------------------------------------
    def disconnect(self):
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
    def find_peer(self, conn_id):
        peer = self.bus.connections.get(conn_id)
        if peer is None:
            raise KdbusError(errno.ENXIO, f"no connection {conn_id} on bus {self.bus.name}")
        return peer


# -- commands ---------------------------------------------------------------------------------

def cmd_byebye(conn, args, caller):
    if conn.queue:
        raise KdbusError(errno.EBUSY, f"connection {conn.id} still has {len(conn.queue)} messages")
    conn.disconnect()
    log.debug("connection %d said goodbye", conn.id)


def cmd_free(Connection conn, Args args, caller):
    conn.pool.free_user(args.u64("offset"))


def cmd_update(conn, args, caller):
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


def cmd_conn_info(conn, args, caller):
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


# Fields of kdbus_cmd_recv, from its one declaration.
cdef Py_ssize_t _RECV_FLAGS = structs.CMD_RECV.offsets["flags"]
cdef Py_ssize_t _RECV_RETURN_FLAGS = structs.CMD_RECV.offsets["return_flags"]
cdef Py_ssize_t _RECV_DROPPED = structs.CMD_RECV.offsets["dropped_msgs"]
cdef Py_ssize_t _RECV_OFFSET = structs.CMD_RECV.offsets["msg_offset"]
cdef Py_ssize_t _RECV_SIZE = structs.CMD_RECV.offsets["msg_msg_size"]
cdef Py_ssize_t _RECV_MSG_RETURN_FLAGS = structs.CMD_RECV.offsets["msg_return_flags"]
cdef uint64_t _DROPPED_MSGS = RECV_RETURN_DROPPED_MSGS


cdef int _recv_out(Args args, uint64_t lost, uint64_t offset, uint64_t size,
                   uint64_t return_flags) except -1:
    args.put(_RECV_DROPPED, lost)
    args.put(_RECV_RETURN_FLAGS, _DROPPED_MSGS if lost else 0)
    args.put(_RECV_OFFSET, offset)
    args.put(_RECV_SIZE, size)
    args.put(_RECV_MSG_RETURN_FLAGS, return_flags)
    return 0


def cmd_recv(Connection conn, Args args, caller):
    """RECV: the next message (or a peek at it, or drop it), its descriptors installed."""
    cdef uint64_t flags = u64_at(args.data, _RECV_FLAGS)
    if flags & RECV_DROP and flags & RECV_USE_PRIORITY:
        raise KdbusError(errno.EINVAL, "RECV cannot DROP by priority")
    lost = conn.take_lost()
    priority = args.fields.priority if flags & RECV_USE_PRIORITY else None
    received = conn.recv(bool(flags & RECV_PEEK), bool(flags & RECV_DROP), priority)
    if received is None:
        # An empty queue still reports the messages lost since the last RECV.
        _recv_out(args, lost, conn.pool.size, 0, 0)
        return NOTHING_QUEUED
    offset, size, return_flags, passed = received
    if passed is not None and caller.install(passed, conn.pool, offset):
        return_flags &= ~RECV_RETURN_INCOMPLETE_FDS
    _recv_out(args, lost, offset, size, return_flags)
    return None
