"""Synchronous calls that block: where each will be answered, its CANCEL_FD, its interrupts.

A SEND with KDBUS_SEND_SYNC_REPLY leaves its ioctl waiting until the reply, an error, the deadline
or a cancellation. A FUSE request is answered by its unique id (`Blocked`); a launched client's
notified ioctl through its seccomp listener (`Supervised`). Pure bookkeeping: whether a task is
dying is asked of the host.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import NamedTuple

from .bus.command import Pending
from .bus.reply import SyncWait
from .fuse.codec import Unwatch, Watch

# How soon a caller that was signalled during a synchronous call is checked for a fatal signal
# again: a killed process cannot finish dying before its request is answered.
INTERRUPT_RECHECK_NS = 100_000_000


class Blocked(NamedTuple):
    """Where to answer a blocked synchronous SEND that came as a FUSE request. (A named tuple: one
    is made for every synchronous call, and a frozen dataclass costs three times as much.)"""

    unique: int
    tid: int
    address: int
    msg_address: int


class Supervised(NamedTuple):
    """Where to answer a launched client's synchronous SEND: its seccomp notification."""

    listener: int
    notif_id: int
    tid: int
    address: int
    msg_address: int


class BlockedCalls:
    """The calls waiting for their outcome, and the descriptors to watch for them."""

    def __init__(self, dying: Callable[[int], bool], watch: Callable[[Watch | Unwatch], None]) -> None:
        self._dying = dying
        # Hands the edge each CANCEL_FD to start watching, and each whose call is over (to stop
        # watching and close), as it comes.
        self._watch = watch
        self._pending: dict[int, SyncWait] = {}
        self._cancel_fds: dict[int, SyncWait] = {}
        # Blocked calls whose caller got a (so far) non-fatal signal.
        self._interrupted: dict[int, SyncWait] = {}
        # When they are next re-checked: a fixed time, so that asking for the next deadline twice
        # gives the same answer.
        self._recheck_at = 0

    def block(self, pending: Pending, token: Blocked | Supervised) -> None:
        """Remember where to answer a synchronous call, and watch its CANCEL_FD."""
        wait = pending.wait
        wait.token = token
        if isinstance(token, Blocked):
            self._pending[token.unique] = wait
        if wait.cancel_fd is not None:
            self._cancel_fds[wait.cancel_fd] = wait
            self._watch(Watch(wait.cancel_fd))

    def cancelled(self, fd: int) -> SyncWait | None:
        """The call whose CANCEL_FD `fd` became readable, if it still waits."""
        return self._cancel_fds.get(fd)

    def settle(self, wait: SyncWait) -> Blocked | None:
        """`wait` is over: stop watching its cancel fd; the FUSE request to answer, if any is
        still waiting (an interrupted, aborted request is not)."""
        if wait.cancel_fd is not None and self._cancel_fds.pop(wait.cancel_fd, None) is not None:
            self._watch(Unwatch(wait.cancel_fd))
        token = wait.token
        if not isinstance(token, Blocked) or self._pending.pop(token.unique, None) is None:
            return None
        self._interrupted.pop(token.unique, None)
        return token

    def interrupt(self, unique: int, now_ns: int) -> None:
        """FUSE_INTERRUPT for request `unique`.

        kdbus restarts the wait transparently after a handled signal (the call neither fails nor
        is sent again), which FUSE cannot express; so a blocked call simply keeps waiting, and its
        handler runs when the call ends. A fatal signal must not wait, though (the task cannot die
        until its request is answered): such calls end at once, and calls that were interrupted
        are re-checked every INTERRUPT_RECHECK_NS in case a fatal signal follows.
        """
        wait = self._pending.get(unique)
        if wait is None:
            return
        token = wait.token
        assert isinstance(token, Blocked)
        if self._dying(token.tid):
            wait.finish(errno.EINTR)
            return
        if not self._interrupted:
            self._recheck_at = now_ns + INTERRUPT_RECHECK_NS
        self._interrupted[unique] = wait

    def next_recheck(self) -> int | None:
        return self._recheck_at if self._interrupted else None

    def recheck(self, now_ns: int) -> None:
        """End the interrupted calls whose caller is dying by now."""
        if not self._interrupted:
            return
        for unique, wait in list(self._interrupted.items()):
            token = wait.token
            if wait.done or not isinstance(token, Blocked):
                del self._interrupted[unique]
            elif self._dying(token.tid):
                del self._interrupted[unique]
                wait.finish(errno.EINTR)
        self._recheck_at = now_ns + INTERRUPT_RECHECK_NS
