# cython: language_level=3, boundscheck=False, wraparound=False
"""A connection's receive queue: FIFO order plus an index by priority.

An entry is a message already laid out in the receiver's pool (kdbus writes messages at SEND time);
receiving only publishes the slice. Without USE_PRIORITY the oldest entry comes first; with it, the
numerically lowest priority (FIFO among equals), and only if it is at most the asked-for limit.

Compiled (issue 12: every message delivered is charged, queued and taken off here): entries, quotas
and the queue are cdef classes with typed fields.
"""

import errno
import heapq

from .. import limits
from ..errors import KdbusError, LimitReached, user_named

from .layout cimport layout_for, render, write
from .message cimport Staged
from .pool cimport Pool, Slice

# Quota key of kernel notifications: they are accounted apart from every user.
KERNEL_USER = -1
cdef Py_ssize_t _KERNEL_USER = KERNEL_USER
# What raises a pool quota: it scales with the receiving client's pool, chosen at its HELLO.
BY_POOL_SIZE = ("it grows with the receiving client's pool size (HELLO pool_size, up to the mount "
                "option max_pool_size)")
_FIXED = "kdbus fixes it"
cdef Py_ssize_t _MAX_MSGS = limits.CONN_MAX_MSGS
cdef Py_ssize_t _MAX_FDS = limits.CONN_MAX_FDS_PER_USER


cdef class Entry:
    """A message queued in a receiver: laid out in its pool, waiting for RECV."""

    cdef public Slice slice
    cdef public long long priority
    cdef public unsigned long long src_id
    cdef public unsigned long long cookie
    # Who is charged for it in the receiver's quota: a user's uid or KERNEL_USER.
    cdef public long long user_key
    cdef public Py_ssize_t fds
    # The call tracker this message answers to when received, if it expects a reply.
    cdef public object reply
    # The name registration it was addressed through (so it can move with the name).
    cdef public object name_id
    cdef public bint expects_reply
    cdef public Py_ssize_t seq
    # Set by PEEK: the client may be looking at the slice, so it outlives the entry until FREE.
    cdef public bint peeked
    # The message passed descriptors that could not be installed in the receiver.
    cdef public bint incomplete_fds
    # The slice's bytes as the daemon wrote them, for a message that may move to another pool with
    # its name while the pool it sits in is writable by its client.
    cdef public object kept
    # Descriptors the message passes, held for this receiver's RECV (shared with the other
    # receivers of a broadcast).
    cdef public object passed
    # Its PAYLOAD_VEC bytes, for the receiver's statistics.
    cdef public Py_ssize_t payload

    def __init__(self, Slice slice not None, long long priority, unsigned long long src_id,
                 unsigned long long cookie, long long user_key, Py_ssize_t fds=0, reply=None, name_id=None,
                 bint expects_reply=False, Py_ssize_t seq=0, bint peeked=False, bint incomplete_fds=False,
                 kept=None, passed=None, Py_ssize_t payload=0):
        self.slice = slice
        self.priority = priority
        self.src_id = src_id
        self.cookie = cookie
        self.user_key = user_key
        self.fds = fds
        self.reply = reply
        self.name_id = name_id
        self.expects_reply = expects_reply
        self.seq = seq
        self.peeked = peeked
        self.incomplete_fds = incomplete_fds
        self.kept = kept
        self.passed = passed
        self.payload = payload

    def __repr__(self):
        return (f"Entry(slice={self.slice!r}, priority={self.priority}, src_id={self.src_id}, "
                f"cookie={self.cookie}, user_key={self.user_key}, seq={self.seq})")

    def drop_passed(self):
        if self.passed is not None:
            self.passed.close()
            self.passed = None


cdef Entry _entry_of(Slice slice, Staged msg, long long user_key, reply, name_id, kept):
    """The entry of `msg`, laid out in `slice`: its fields read from the staged message in C."""
    cdef Entry entry = Entry.__new__(Entry)
    entry.slice = slice
    entry.priority = msg.priority
    entry.src_id = msg.src_id
    entry.cookie = msg.cookie
    entry.user_key = user_key
    entry.fds = msg.n_fds
    entry.reply = reply
    entry.name_id = name_id
    entry.expects_reply = msg.expects_reply
    entry.incomplete_fds = len(msg.fd_slots) > 0
    entry.kept = kept
    entry.payload = msg.n_payload
    return entry


cdef class UserQuota:
    cdef public Py_ssize_t memory
    cdef public Py_ssize_t msgs
    cdef public Py_ssize_t fds

    def __init__(self, Py_ssize_t memory=0, Py_ssize_t msgs=0, Py_ssize_t fds=0):
        self.memory = memory
        self.msgs = msgs
        self.fds = fds

    def __repr__(self):
        return f"UserQuota(memory={self.memory}, msgs={self.msgs}, fds={self.fds})"

    def __eq__(self, other):
        if not isinstance(other, UserQuota):
            return NotImplemented
        cdef UserQuota quota = other
        return (self.memory, self.msgs, self.fds) == (quota.memory, quota.msgs, quota.fds)

    __hash__ = None


cdef class Quotas:
    """Each sending user's share of one receiver's pool (kdbus_conn_quota_inc): half the pool is
    for incoming messages, and each user may take a third of what is left of it."""

    # The receiving connection's id, for messages.
    cdef public object owner_id
    cdef public dict users

    def __init__(self, owner_id, dict users=None):
        self.owner_id = owner_id
        self.users = {} if users is None else users

    def __getitem__(self, user_key):
        return self.users[user_key]

    cpdef UserQuota charge(self, Pool pool, long long user_key, Py_ssize_t size, Py_ssize_t fds):
        cdef UserQuota quota = self.users.get(user_key)
        if quota is None:
            quota = self.users[user_key] = UserQuota()
        cdef Py_ssize_t available = pool.size // 2
        cdef Py_ssize_t accounted = pool.accounted_size
        if available < accounted:
            raise self.error(errno.ENOBUFS, "incoming half of the pool is full", user_key,
                             "queued bytes per receiver", available, BY_POOL_SIZE)
        # Floor division as Python's: `available - accounted + quota.memory` is never negative here.
        cdef Py_ssize_t share = (available - accounted + quota.memory) // 3
        if share < quota.memory or share - quota.memory < size:
            raise self.error(errno.ENOBUFS, f"sender's pool share is used up ({size} more bytes)", user_key,
                             "queued bytes per receiver and sending user", share, BY_POOL_SIZE)
        if quota.msgs >= _MAX_MSGS:
            raise self.error(errno.ENOBUFS, f"{limits.CONN_MAX_MSGS} messages queued", user_key,
                             "queued messages per receiver and sending user", limits.CONN_MAX_MSGS, _FIXED)
        if quota.fds + fds > _MAX_FDS:
            raise self.error(errno.EMFILE, "too many fds in flight", user_key,
                             "fds in flight per receiver and sending user", limits.CONN_MAX_FDS_PER_USER,
                             _FIXED)
        quota.memory += size
        quota.fds += fds
        quota.msgs += 1
        return quota

    cpdef uncharge(self, long long user_key, Py_ssize_t size, Py_ssize_t fds):
        cdef UserQuota quota = self.users[user_key]
        quota.memory -= size
        quota.fds -= fds
        quota.msgs -= 1

    def error(self, int err, str why, long long user_key, str limit, value, str raised_by):
        # Quota keys: a uid, KERNEL_USER for notifications, other negatives for custom endpoints.
        user = "kernel notifications" if user_key == _KERNEL_USER else \
            user_named(user_key if user_key >= 0 else None)
        return LimitReached(err, f"connection {self.owner_id}: {why}", limit, value, raised_by, user)

    def clear(self):
        self.users.clear()


cdef class Queue:
    """FIFO order plus an index by priority."""

    cdef public dict entries
    # (priority, seq) of every entry added since the queue was last empty, a heap.
    cdef list _by_priority
    cdef Py_ssize_t _seq

    def __init__(self):
        self.entries = {}
        self._by_priority = []
        self._seq = 0

    def __len__(self):
        return len(self.entries)

    cpdef Entry insert(self, Quotas quota, Pool pool, Staged msg, meta, long long user_key, reply=None,
                       name_id=None, bint keep=False):
        """Charge `msg` to `user_key` in `quota`, lay it out in a slice of `pool` for a receiver
        getting the metadata items `meta`, and queue it (kdbus_conn_entry_insert). With `keep`, the
        entry holds the daemon's own copy of the bytes as well."""
        cdef tuple shape = layout_for(msg, meta)
        cdef Py_ssize_t size = shape[2]
        quota.charge(pool, user_key, size, msg.n_fds)
        cdef Slice piece
        try:
            piece = pool.alloc(size, True)
        except KdbusError as exc:
            quota.uncharge(user_key, size, msg.n_fds)
            raise quota.error(exc.errno, exc.why, user_key, "free space in a receiver's pool", pool.size,
                              BY_POOL_SIZE) from None
        cdef bytearray kept = None
        try:
            if keep:
                kept = bytearray(size)
                render(msg, kept, 0, meta, shape)
                pool.write(piece, kept)
            else:
                write(msg, pool, piece.offset, meta, shape)
        except KdbusError:
            pool.release_bus_ref(piece)
            quota.uncharge(user_key, size, msg.n_fds)
            raise
        cdef Entry entry = _entry_of(piece, msg, user_key, reply, name_id, kept)
        self.add(entry)
        return entry

    cpdef add(self, Entry entry):
        self._seq += 1
        entry.seq = self._seq
        self.entries[entry.seq] = entry
        heapq.heappush(self._by_priority, (entry.priority, entry.seq))

    cpdef Entry peek(self, priority=None):
        """The next entry; with `priority`, the most urgent one if it is at most that."""
        if not self.entries:
            return None
        if priority is None:
            return next(iter(self.entries.values()))
        heap = self._by_priority
        while heap and heap[0][1] not in self.entries:
            heapq.heappop(heap)
        best_priority, seq = heap[0]
        if best_priority > priority:
            return None
        return self.entries[seq]

    cpdef remove(self, Entry entry):
        del self.entries[entry.seq]
        if not self.entries:
            self._by_priority.clear()

    def drain(self):
        entries = list(self.entries.values())
        self.entries.clear()
        self._by_priority.clear()
        return entries
