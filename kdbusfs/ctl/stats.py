"""`kdbusctl stats`: a bus's statistics, read from the `stats` file beside its endpoint.

The daemon writes one consistent snapshot per open of that file (kdbusfs/bus/stats.pyx); this
only reads and renders it, so it never needs a connection to the bus, and `--watch` reads it
again each interval, like top.
"""

from __future__ import annotations

import errno
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .target import CtlError

# The snapshot layouts this renders (bus/stats.pyx FORMAT).
FORMATS = (1,)

_COLUMNS = ("ID", "DESCRIPTION", "PID", "COMM", "SENT", "SENT-BYTES", "RECEIVED", "RECV-BYTES",
            "DROPPED", "QUEUED", "POOL-USE", "REPLIES")


def read_stats(endpoint: Path) -> dict[str, Any]:
    """The snapshot of the bus whose endpoint file is `endpoint`."""
    path = endpoint.parent / "stats"
    try:
        text = path.read_text()
    except PermissionError:
        raise CtlError(f"may not read {path}: statistics are the bus owner's and root's") from None
    except FileNotFoundError:
        raise CtlError(f"{path} does not exist: the bus is gone, or its daemon predates statistics") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise CtlError(f"{path}: the mount's daemon is gone") from None
        raise CtlError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        snapshot: dict[str, Any] = json.loads(text)
    except ValueError:
        raise CtlError(f"{path} is not a kdbusfs statistics file") from None
    if snapshot.get("format") not in FORMATS:
        raise CtlError(f"{path} has statistics of format {snapshot.get('format')!r}, which this kdbusctl "
                       "does not know")
    return snapshot


def render(snapshot: dict[str, Any]) -> list[str]:
    """The bus's totals, then a table with a line per connection."""
    bus = snapshot["bus"]
    lines = [
        f"bus {bus['name']} (id {bus['id']}): {bus['connections']} connections, {bus['names']} names, "
        f"{bus['kernel_notifications']} kernel notifications",
        f"messages sent {bus['messages_sent']} ({bus['bytes_sent']} bytes), received "
        f"{bus['messages_received']} ({bus['bytes_received']} bytes), dropped {bus['messages_dropped']}",
        "",
    ]
    rows = [list(_COLUMNS)]
    for conn in sorted(snapshot["connections"], key=lambda record: int(record["id"])):
        use = f"{conn['pool_queued_bytes']}/{conn['pool_queue_limit']}"
        rows.append([f":1.{conn['id']}", conn["description"] or "-", str(conn["pid"]), conn["comm"] or "-",
                     str(conn["messages_sent"]), str(conn["bytes_sent"]), str(conn["messages_received"]),
                     str(conn["bytes_received"]), str(conn["messages_dropped"]), str(conn["queued_messages"]),
                     use, str(conn["pending_replies"])])
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return lines


def show(endpoint: Path, as_json: bool, interval: float | None, out: TextIO = sys.stdout) -> int:
    """Print the statistics once, or (`interval`) again and again until interrupted."""
    while True:
        snapshot = read_stats(endpoint)
        if as_json:
            out.write(json.dumps(snapshot, indent=None if interval else 2) + "\n")
        else:
            if interval and out.isatty():
                out.write("\x1b[H\x1b[2J")  # top's way: redraw from the top of a clear screen
            out.write("\n".join(render(snapshot)) + "\n")
            if interval:
                out.write("\n")
        out.flush()
        if not interval:
            return 0
        time.sleep(interval)
