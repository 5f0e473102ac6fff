"""`kdbusctl monitor` and `kdbusctl capture`: a monitor connection, every message it receives shown
as text or JSON, or written as a pcapng packet. They run until interrupted (SIGINT, SIGTERM, SIGHUP)
or until `--num-matches` messages were shown, and announce on stderr when they are listening, so a
script can start one and know when traffic will be seen."""

from __future__ import annotations

import errno
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import BinaryIO, TextIO

from .. import __version__
from ..abi.constants import ATTACH_ALL
from ..client import CommandError, Kind
from ..dbus import EncodeError
from .display import message_json, message_lines
from .matching import Match, selects
from .pcapng import PcapngWriter
from .render import unique_name
from .target import CtlError, connect
from .traffic import Observed, as_dbus1, observe, wrap_payload

# Monitors receive every message on the bus: a roomy pool loses fewer under load.
MONITOR_POOL_SIZE = 64 * 1024 * 1024
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A stop signal arrived while waiting for a message."""


class _StopSignals:
    """Stop signals end the wait for the next message at once, but never cut short the showing of
    one (a capture would end in the middle of a packet): there they only mark the stop."""

    def __init__(self) -> None:
        self.requested = False
        self.waiting = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.waiting:
            raise Stopped

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {number: signal.signal(number, self.handle) for number in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    @contextmanager
    def wait(self) -> Iterator[None]:
        """While inside, a stop signal raises Stopped; one that came just before raises at once."""
        self.waiting = True
        try:
            if self.requested:
                raise Stopped
            yield
        finally:
            self.waiting = False


def watch(endpoint: Path, matches: list[Match], limit: int | None, show: Callable[[Observed], None]) -> int:
    """Receive as a monitor and `show` each selected message; 0 once stopped."""
    stop = _StopSignals()
    with stop.installed():
        try:
            with connect(endpoint, kind=Kind.MONITOR, attach_flags_recv=ATTACH_ALL,
                         pool_size=MONITOR_POOL_SIZE) as conn:
                print(f"Monitoring {endpoint} as {unique_name(conn.id)}; stop with Ctrl-C.",
                      file=sys.stderr, flush=True)
                shown = 0
                while limit is None or shown < limit:
                    try:
                        with stop.wait():
                            message = conn.recv()
                    except CommandError as exc:
                        if exc.errno in (errno.ECONNRESET, errno.ESHUTDOWN):
                            raise CtlError(f"the bus {endpoint} went away") from None
                        raise
                    observed = observe(message)
                    if selects(matches, observed):
                        show(observed)
                        shown += 1
        except Stopped:
            pass
    return 0


def text_printer(stream: TextIO, as_json: bool) -> Callable[[Observed], None]:
    def show(observed: Observed) -> None:
        if as_json:
            stream.write(json.dumps(message_json(observed)) + "\n")
        else:
            stream.write("\n".join(message_lines(observed)) + "\n")
        stream.flush()

    return show


def _comment(observed: Observed) -> str | None:
    if observed.kdbus.notification is not None:
        return f"kdbus notification {observed.notification_name}, as sd-bus translated it"
    if observed.undecodable is not None:
        return f"raw kdbus payload ({observed.undecodable}), wrapped as {observed.dbus.signature}"
    return None


def pcap_writer(stream: BinaryIO, endpoint: Path) -> Callable[[Observed], None]:
    if stream.isatty():
        raise CtlError("refusing to write a capture to a terminal; redirect the output to a file or a pipe")
    writer = PcapngWriter(stream, str(endpoint), f"kdbusctl (kdbusfs {__version__})")

    def write(observed: Observed) -> None:
        try:
            data = as_dbus1(observed)
        except EncodeError:
            # Valid GVariant that dbus1 cannot hold (a huge array, 64-bit serial games): keep it raw.
            observed = Observed(observed.kdbus, wrap_payload(observed.kdbus), False,
                                "not expressible in dbus1")
            data = as_dbus1(observed)
        stamp = observed.kdbus.metadata.timestamp
        writer.packet(data, stamp.realtime_ns if stamp is not None else time.time_ns(), _comment(observed))

    return write
