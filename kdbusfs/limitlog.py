"""Warnings about resource limits, one per burst (no I/O: the edge logs what this returns).

An operator must learn that a user hit a limit, what it is and what raises it; a client retrying
in a loop must not flood the log. Each (user, limit) pair has its own bursts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bus import limits
from .bus.errors import LimitReached


@dataclass(slots=True)
class _Burst:
    last_hit: float
    last_line: float
    unreported: int = 0


class LimitLog:
    def __init__(self, quiet_s: float = limits.LIMIT_BURST_QUIET_S,
                 repeat_s: float = limits.LIMIT_BURST_REPEAT_S) -> None:
        self._quiet_s = quiet_s
        self._repeat_s = repeat_s
        self._bursts: dict[tuple[int | None, str], _Burst] = {}

    def hit(self, exc: LimitReached, now: float) -> str | None:
        """The warning to log for this hit at time `now` (seconds), or None within a burst."""
        key = (exc.uid, exc.limit)
        burst = self._bursts.get(key)
        who = "anonymous users of a custom endpoint" if exc.uid is None else f"user {exc.uid}"
        if burst is None or now - burst.last_hit >= self._quiet_s:
            self._bursts[key] = _Burst(now, now)
            return f"{who} reached the limit on {exc.limit} ({exc.value}): {exc.why}; {exc.raised_by}"
        burst.last_hit = now
        burst.unreported += 1
        if now - burst.last_line < self._repeat_s:
            return None
        line = (f"{who} is still at the limit on {exc.limit} ({exc.value}): {burst.unreported} more "
                f"refusals in {now - burst.last_line:.0f} s; {exc.raised_by}")
        burst.last_line = now
        burst.unreported = 0
        return line
