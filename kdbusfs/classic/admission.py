"""Classic clients that have not said Hello yet, and the timer that ends their time.

Each costs the daemon a socket and its buffers while proving nothing, so they are bounded, as by
dbus-daemon: at most CLASSIC_UNAUTHENTICATED_MAX at once (its max_incomplete_connections), each
for at most CLASSIC_AUTH_TIMEOUT_S. A newcomer is always let in: when all are taken, room is made by
closing the oldest of the uid (SO_PEERCRED's, known at accept) holding the most. So no user, however
many connections it opens, keeps another out; it only shortens its own connections' time. Below the
bound nobody is closed: a burst of one user's clients connecting at once (boot, where they are all
root's) must all get in, as they do with dbus-daemon.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

from .. import limits

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Timer:
    """A timerfd (os.timerfd_* only exist from Python 3.13): readable once its deadline passed,
    so the serving loop's epoll wakes for it like for any socket."""

    def __init__(self) -> None:
        fd = _libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd: int = fd
        self.deadline: float | None = None

    def arm(self, deadline: float | None) -> None:
        """Fire at `deadline` (time.monotonic() seconds: the same clock); None: never."""
        if deadline == self.deadline:
            return
        self.deadline = deadline
        spec = _Itimerspec()
        if deadline is not None:
            # 0 would disarm it: a deadline already past fires at the smallest time instead.
            ns = max(1, int(deadline * 1e9))
            spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
        if _libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def clear(self) -> None:
        """Take the expiry (the fd is level-triggered: readable until read)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.deadline = None

    def close(self) -> None:
        os.close(self.fd)


class Admission:
    """The clients (by socket fd) that have not said Hello, in the order they came."""

    def __init__(self) -> None:
        # fd -> (uid, time it came); dicts keep insertion order, which is arrival order.
        self._pending: dict[int, tuple[int, float]] = {}
        self._per_uid: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def count(self, uid: int) -> int:
        return self._per_uid.get(uid, 0)

    def make_room(self, uid: int) -> list[int]:
        """Who to close so that one more of `uid` fits (at most one: each newcomer takes one)."""
        if len(self._pending) < limits.CLASSIC_UNAUTHENTICATED_MAX:
            return []
        greediest = max(self._per_uid, key=lambda holder: self._per_uid[holder])
        return [self._oldest_of(greediest)]

    def _oldest_of(self, uid: int) -> int:
        return next(fd for fd, (holder, _) in self._pending.items() if holder == uid)

    def add(self, fd: int, uid: int, now: float | None = None) -> None:
        self._pending[fd] = (uid, time.monotonic() if now is None else now)
        self._per_uid[uid] = self.count(uid) + 1

    def remove(self, fd: int) -> None:
        entry = self._pending.pop(fd, None)
        if entry is None:
            return
        uid = entry[0]
        left = self._per_uid[uid] - 1
        if left:
            self._per_uid[uid] = left
        else:
            del self._per_uid[uid]

    def expired(self, now: float) -> list[int]:
        """Those whose time is over (the oldest first)."""
        too_old = now - limits.CLASSIC_AUTH_TIMEOUT_S
        out = []
        for fd, (_, came) in self._pending.items():
            if came > too_old:
                break  # arrival order: the rest came later still
            out.append(fd)
        return out

    def next_deadline(self) -> float | None:
        for _, came in self._pending.values():
            return came + limits.CLASSIC_AUTH_TIMEOUT_S
        return None

    def oldest_arrival(self) -> float | None:
        for _, came in self._pending.values():
            return came
        return None

    def uid_of(self, fd: int) -> int | None:
        entry = self._pending.get(fd)
        return None if entry is None else entry[0]
