"""A domain: one mount of kdbusfs, sharing nothing with any other."""

from __future__ import annotations

import errno
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import limits
from ..errors import LimitReached, user_named

if TYPE_CHECKING:
    from .bus import Bus
    from .connection import Connection
    from .reply import Reply, SyncWait


@dataclass(frozen=True, slots=True)
class DomainLimits:
    """Per-mount limits (mount options); the defaults are kdbus's."""

    max_buses: int = limits.USER_MAX_BUSES
    max_connections: int = limits.USER_MAX_CONN
    max_pool_size: int = limits.POOL_MAX_SIZE


@dataclass(slots=True)
class User:
    """Per-domain accounting of one real uid (or of one custom endpoint's anonymous users)."""

    uid: int | None
    limits: DomainLimits = field(default_factory=DomainLimits)
    buses: int = 0
    connections: int = 0
    # Quota key in receivers' pools: the uid, or a negative number for an anonymous user.
    key: int = 0

    def charge_bus(self) -> None:
        if self.buses >= self.limits.max_buses:
            raise LimitReached(errno.EMFILE, f"uid {self.uid} already owns {self.buses} buses",
                               "buses per user", self.limits.max_buses,
                               "raise it with the mount option max_buses=N", user_named(self.uid))
        self.buses += 1

    def charge_connection(self) -> None:
        if self.connections >= self.limits.max_connections:
            raise LimitReached(errno.EMFILE, f"user {self.uid} already has {self.connections} connections",
                               "connections per user", self.limits.max_connections,
                               "raise it with the mount option max_connections=N", user_named(self.uid))
        self.connections += 1


@dataclass(slots=True, eq=False)
class Domain:
    # Owner of the mount's root and control node (global root for a system mount).
    uid: int = 0
    gid: int = 0
    limits: DomainLimits = field(default_factory=DomainLimits)
    buses: dict[str, Bus] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    active: bool = True
    # The model's effects the edge acts on, recorded through wake() and complete() only. The
    # lists stay the same objects for the domain's life (the edge keeps them, see effects()).
    _woken: list[Connection] = field(default_factory=list)
    _completed: list[SyncWait] = field(default_factory=list)
    # Reply deadlines: (CLOCK_MONOTONIC ns, tie-breaker, tracker).
    timers: list[tuple[int, int, Reply]] = field(default_factory=list)
    # One counter numbers buses and connections alike; ids are never reused.
    _last_id: int = 0
    _timer_seq: int = 0
    _anonymous: int = 0
    # wake(conn): `conn`'s pool or poll state changed; the edge pushes its new pool bytes to the
    # client and wakes its pollers. complete(wait): a synchronous SEND's outcome is known; the
    # edge answers its blocked ioctl. Each runs for every delivery, so each is the list's own
    # append (no Python frame).
    wake: Callable[[Connection], None] = field(init=False)
    complete: Callable[[SyncWait], None] = field(init=False)

    def __post_init__(self) -> None:
        self.wake = self._woken.append
        self.complete = self._completed.append

    # -- effects ----------------------------------------------------------------------------
    def effects(self) -> tuple[list[Connection], list[SyncWait]]:
        """The lists wake() and complete() record into (the connections woken, in order, repeats
        included; the calls completed), for the edge to test after every request (an empty list
        is one C-level test) and to take what it acts on off."""
        return self._woken, self._completed

    @property
    def woken(self) -> tuple[Connection, ...]:
        return tuple(self._woken)

    @property
    def completed(self) -> tuple[SyncWait, ...]:
        return tuple(self._completed)

    def schedule(self, deadline_ns: int, reply: Reply) -> None:
        self._timer_seq += 1
        heapq.heappush(self.timers, (deadline_ns, self._timer_seq, reply))

    def next_deadline(self) -> int | None:
        while self.timers and not self.timers[0][2].waiting:
            heapq.heappop(self.timers)
        return self.timers[0][0] if self.timers else None

    def expire(self, now_ns: int) -> None:
        """Fire every reply deadline that has passed."""
        while self.timers and self.timers[0][0] <= now_ns:
            _, _, reply = heapq.heappop(self.timers)
            if reply.waiting:
                reply.caller.bus.reply_timeout(reply)

    def next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def user(self, uid: int) -> User:
        found = self.users.get(uid)
        if found is None:
            found = self.users[uid] = User(uid, self.limits, key=uid)
        return found

    def anonymous_user(self) -> User:
        """The accounting user of one custom endpoint: everyone connecting through it."""
        self._anonymous += 1
        return User(None, self.limits, key=-1 - self._anonymous)

    def shutdown(self) -> None:
        self.active = False
        for bus in list(self.buses.values()):
            bus.shutdown()
