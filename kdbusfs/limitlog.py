"""Warnings about resource limits, one per burst (no I/O: the edge logs what this returns).

An operator must learn that a user hit a limit, what it is and what raises it; a client retrying
in a loop must not flood the log, and neither may many users (or one with many uids) at once.
Each (user, limit) pair has its own bursts, and all of them share one budget of lines a minute.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import limits
from .errors import LimitReached


@dataclass(slots=True)
class _Burst:
    last_hit: float
    last_line: float
    unreported: int = 0


class LimitLog:
    def __init__(self, quiet_s: float = limits.LIMIT_BURST_QUIET_S,
                 repeat_s: float = limits.LIMIT_BURST_REPEAT_S,
                 lines_per_window: int = limits.LIMIT_LINES_PER_WINDOW,
                 window_s: float = limits.LIMIT_WINDOW_S) -> None:
        self._quiet_s = quiet_s
        self._repeat_s = repeat_s
        self._lines_per_window = lines_per_window
        self._window_s = window_s
        self._bursts: dict[tuple[str, str], _Burst] = {}
        self._last_prune = 0.0
        self._window_start: float | None = None
        self._window_lines = 0
        self._held_back = 0
        self._held_back_users: set[str] = set()

    def hit(self, exc: LimitReached, now: float) -> list[str]:
        """The warnings to log for this hit at time `now` (seconds): none within a burst."""
        self._prune(now)
        out = self._roll_window(now)
        line = self._burst_line(exc, now)
        if line is None:
            return out
        if self._window_lines >= self._lines_per_window:
            self._held_back += 1
            self._held_back_users.add(exc.user)
            return out
        self._window_lines += 1
        out.append(line)
        return out

    def _burst_line(self, exc: LimitReached, now: float) -> str | None:
        key = (exc.user, exc.limit)
        burst = self._bursts.get(key)
        if burst is None or now - burst.last_hit >= self._quiet_s:
            self._bursts[key] = _Burst(now, now)
            return f"{exc.user} reached the limit on {exc.limit} ({exc.value}): {exc.why}; {exc.raised_by}"
        burst.last_hit = now
        burst.unreported += 1
        if now - burst.last_line < self._repeat_s:
            return None
        line = (f"{exc.user} is still at the limit on {exc.limit} ({exc.value}): {burst.unreported} more "
                f"refusals in {now - burst.last_line:.0f} s; {exc.raised_by}")
        burst.last_line = now
        burst.unreported = 0
        return line

    def _roll_window(self, now: float) -> list[str]:
        """Start a new window of the shared budget when the last one is over, saying what it held back."""
        start = self._window_start
        if start is not None and now - start < self._window_s:
            return []
        out = []
        if self._held_back and start is not None:
            out.append(f"{self._held_back} more limit warnings ({len(self._held_back_users)} users) were "
                       f"not logged in the last {now - start:.0f} s")
        self._window_start = now
        self._window_lines = 0
        self._held_back = 0
        self._held_back_users.clear()
        return out

    def _prune(self, now: float) -> None:
        # Bursts that have ended are forgotten, so the table holds only the recent ones.
        if now - self._last_prune < self._quiet_s:
            return
        self._last_prune = now
        for key in [k for k, b in self._bursts.items() if now - b.last_hit >= self._quiet_s]:
            del self._bursts[key]
