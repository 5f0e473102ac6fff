# The interface of stats.pyx (compiled), for type checkers.
from typing import Any

from .bus import Bus

# The version of the snapshot's layout; bumped when a field changes meaning or goes.
FORMAT: int

class Counters:
    """What happened to one connection (or, summed, a bus) since it was made."""

    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    messages_dropped: int
    def sent(self, payload: int) -> None: ...
    def received(self, payload: int) -> None: ...
    def add(self, other: Counters) -> None: ...

def snapshot(bus: Bus) -> dict[str, Any]:
    """The bus's statistics now, with one record per live connection."""
