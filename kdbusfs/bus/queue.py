"""A connection's receive queue: FIFO order plus an index by priority.

An entry is a message already laid out in the receiver's pool (kdbus writes messages at SEND time);
receiving only publishes the slice. Without USE_PRIORITY the oldest entry comes first; with it, the
numerically lowest priority (FIFO among equals), and only if it is at most the asked-for limit.
"""

from __future__ import annotations

import errno
import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import limits
from ..errors import LimitReached, user_named
from .pool import Pool, Slice

if TYPE_CHECKING:
    from .message import Passed
    from .reply import Reply

# Quota key of kernel notifications: they are accounted apart from every user.
KERNEL_USER = -1
# What raises a pool quota: it scales with the receiving client's pool, chosen at its HELLO.
BY_POOL_SIZE = ("it grows with the receiving client's pool size (HELLO pool_size, up to the mount "
                "option max_pool_size)")
_FIXED = "kdbus fixes it"


@dataclass(slots=True, eq=False)
class Entry:
    slice: Slice
    priority: int
    src_id: int
    cookie: int
    # Who is charged for it in the receiver's quota: a user's uid or KERNEL_USER.
    user_key: int
    fds: int = 0
    # The call tracker this message answers to when received, if it expects a reply.
    reply: Reply | None = None
    # The name registration it was addressed through (so it can move with the name).
    name_id: int | None = None
    expects_reply: bool = False
    seq: int = 0
    # Set by PEEK: the client may be looking at the slice, so it outlives the entry until FREE.
    peeked: bool = False
    # The message passed descriptors that could not be installed in the receiver.
    incomplete_fds: bool = False
    # The slice's bytes as the daemon wrote them, for a message that may move to another pool with
    # its name while the pool it sits in is writable by its client.
    kept: bytearray | None = None
    # Descriptors the message passes, held for this receiver's RECV (shared with the other
    # receivers of a broadcast).
    passed: Passed | None = None
    # Its PAYLOAD_VEC bytes, for the receiver's statistics.
    payload: int = 0

    def drop_passed(self) -> None:
        if self.passed is not None:
            self.passed.close()
            self.passed = None


@dataclass(slots=True)
class UserQuota:
    memory: int = 0
    msgs: int = 0
    fds: int = 0


@dataclass(slots=True, eq=False)
class Quotas:
    """Each sending user's share of one receiver's pool (kdbus_conn_quota_inc): half the pool is
    for incoming messages, and each user may take a third of what is left of it."""

    # The receiving connection's id, for messages.
    owner_id: int
    users: dict[int, UserQuota] = field(default_factory=dict)

    def __getitem__(self, user_key: int) -> UserQuota:
        return self.users[user_key]

    def charge(self, pool: Pool, user_key: int, size: int, fds: int) -> UserQuota:
        quota = self.users.get(user_key)
        if quota is None:
            quota = self.users[user_key] = UserQuota()
        available = pool.size // 2
        accounted = pool.accounted_size
        if available < accounted:
            raise self.error(errno.ENOBUFS, "incoming half of the pool is full", user_key,
                             "queued bytes per receiver", available, BY_POOL_SIZE)
        share = (available - accounted + quota.memory) // 3
        if share < quota.memory or share - quota.memory < size:
            raise self.error(errno.ENOBUFS, f"sender's pool share is used up ({size} more bytes)", user_key,
                             "queued bytes per receiver and sending user", share, BY_POOL_SIZE)
        if quota.msgs >= limits.CONN_MAX_MSGS:
            raise self.error(errno.ENOBUFS, f"{limits.CONN_MAX_MSGS} messages queued", user_key,
                             "queued messages per receiver and sending user", limits.CONN_MAX_MSGS, _FIXED)
        if quota.fds + fds > limits.CONN_MAX_FDS_PER_USER:
            raise self.error(errno.EMFILE, "too many fds in flight", user_key,
                             "fds in flight per receiver and sending user", limits.CONN_MAX_FDS_PER_USER,
                             _FIXED)
        quota.memory += size
        quota.fds += fds
        quota.msgs += 1
        return quota

    def uncharge(self, user_key: int, size: int, fds: int) -> None:
        quota = self.users[user_key]
        quota.memory -= size
        quota.fds -= fds
        quota.msgs -= 1

    def error(self, err: int, why: str, user_key: int, limit: str, value: int,
              raised_by: str) -> LimitReached:
        # Quota keys: a uid, KERNEL_USER for notifications, other negatives for custom endpoints.
        user = "kernel notifications" if user_key == KERNEL_USER else \
            user_named(user_key if user_key >= 0 else None)
        return LimitReached(err, f"connection {self.owner_id}: {why}", limit, value, raised_by, user)

    def clear(self) -> None:
        self.users.clear()


@dataclass(slots=True, eq=False)
class Queue:
    entries: dict[int, Entry] = field(default_factory=dict)
    _by_priority: list[tuple[int, int]] = field(default_factory=list)
    _seq: int = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry) -> None:
        self._seq += 1
        entry.seq = self._seq
        self.entries[entry.seq] = entry
        heapq.heappush(self._by_priority, (entry.priority, entry.seq))

    def peek(self, priority: int | None = None) -> Entry | None:
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

    def remove(self, entry: Entry) -> None:
        del self.entries[entry.seq]
        if not self.entries:
            self._by_priority.clear()

    def drain(self) -> list[Entry]:
        entries = list(self.entries.values())
        self.entries.clear()
        self._by_priority.clear()
        return entries
