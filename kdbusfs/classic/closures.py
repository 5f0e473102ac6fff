"""How loudly the end of a classic client is logged: by whose doing it was.

An ordinary end (the client closed its socket, its bus went away, the daemon stops) is debug
level. A client's own fault (a protocol violation, a failed authentication, a refused Hello) is
info, with its pid and uid: an operator looking for a misbehaving program finds it. A limit (an
eviction, a timeout, too many descriptors) is a warning, once per burst, as kdbus limits are
(limitlog.py). Neither may flood the log, whatever a client does in a loop: info lines share a
budget per minute (LIMIT_LINES_PER_WINDOW), past which they are counted and the count is logged.
"""

from __future__ import annotations

import enum
import errno
import logging
import time

from .. import limits
from ..errors import LimitReached, user_named
from ..limitlog import LimitLog

log = logging.getLogger("kdbusfs.classic")

FIXED = "a fixed limit (kdbusfs/limits.py)"


class Blame(enum.Enum):
    NOBODY = "an ordinary end"
    CLIENT = "the client's fault"
    LIMIT = "a limit"


class Ending(enum.Enum):
    """Why a classic client ended (ClientClosed says it with the details)."""

    HUNG_UP = "the client closed its connection"
    SOCKET_FAILED = "reading or writing its socket failed"
    CONNECTION_GONE = "its kdbus connection is gone"
    TOO_MANY_FDS = "more descriptors than a message may carry"
    AUTH_FAILED = "authentication failed"
    PROTOCOL_VIOLATION = "it broke the protocol"
    HELLO_REFUSED = "its Hello was refused"

    @property
    def blame(self) -> Blame:
        return _BLAME.get(self, Blame.CLIENT)


_BLAME = {Ending.HUNG_UP: Blame.NOBODY, Ending.SOCKET_FAILED: Blame.NOBODY,
          Ending.CONNECTION_GONE: Blame.NOBODY, Ending.TOO_MANY_FDS: Blame.LIMIT}
# The limits behind endings blamed on one: (errno, the limit as an operator knows it, its value,
# what raises it).
_LIMITS = {Ending.TOO_MANY_FDS: (errno.ETOOMANYREFS, "descriptors per classic message",
                                 limits.CLASSIC_FDS_PER_MESSAGE, "kdbus's own (CONN_MAX_FDS_PER_USER)")}


class ClosureLog:
    def __init__(self) -> None:
        self._limits = LimitLog()
        self._window_start = 0.0
        self._lines = 0
        self._held_back = 0

    def ended(self, who: str, uid: int, ending: Ending, why: str) -> None:
        """A ClientClosed: its ending decides the level, its text is what is logged."""
        if ending in _LIMITS:
            err, limit, value, raised_by = _LIMITS[ending]
            self.limit(who, why, LimitReached(err, f"{who}: {why}", limit, value, raised_by, user_named(uid)))
        elif ending.blame is Blame.NOBODY:
            self.ordinary(who, why)
        else:
            self.fault(who, why)

    def ordinary(self, who: str, why: str) -> None:
        log.debug("%s: closing: %s", who, why)

    def fault(self, who: str, why: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._window_start >= limits.LIMIT_WINDOW_S:
            if self._held_back:
                log.info("%d more classic clients were closed for their faults in the last %.0f s "
                         "(not logged)", self._held_back, now - self._window_start)
            self._window_start, self._lines, self._held_back = now, 0, 0
        if self._lines >= limits.LIMIT_LINES_PER_WINDOW:
            self._held_back += 1
            log.debug("%s: closed: %s", who, why)
            return
        self._lines += 1
        log.info("%s: closed: %s", who, why)

    def limit(self, who: str, why: str, exc: LimitReached) -> None:
        for line in self._limits.hit(exc, time.monotonic()):
            log.warning("%s", line)
        log.debug("%s: closing: %s", who, why)
