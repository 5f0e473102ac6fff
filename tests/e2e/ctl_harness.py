"""Helpers for the kdbusctl tests: processes read line by line with deadlines, the place a test
runs (a mount and the user whose processes use it), and the peers on a fresh bus."""

from __future__ import annotations

import io
import json
import os
import pwd
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .harness import Mount, user_python

PEER = Path(__file__).resolve().parent / "ctl_peer.py"
NAME = "org.example.Echo"
C_NAME = "org.example.CEcho"
WAIT = 30.0


class Stream:
    """A process's output, read line by line by a thread, so waits can have deadlines."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, wanted: Callable[[str], bool], what: str, timeout: float = WAIT) -> str:
        """The first unread line `wanted` accepts (the lines before it are kept in `lines`)."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                got = "\n".join(self.lines)
                raise AssertionError(f"no {what} within {timeout} s; got:\n{got}") from None
            if line is None:
                raise AssertionError(f"output ended without {what}; got:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if wanted(line):
                return line

    def rest(self) -> list[str]:
        """Every line up to the end of the output (once the process is gone)."""
        while (line := self._queue.get(timeout=WAIT)) is not None:
            self.lines.append(line)
        return self.lines


class Running:
    """A background process with its stdin, stdout (or a file it writes) and stderr."""

    def __init__(self, cmd: list[str], identity: dict[str, Any], output: Path | None = None,
                 stops_on_signal: bool = False) -> None:
        # Peers end on "quit"; kdbusctl's monitor, capture and make-bus on SIGTERM.
        self.stops_on_signal = stops_on_signal
        sink = open(output, "wb") if output is not None else subprocess.PIPE  # noqa: SIM115
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.PIPE,
                                        cwd="/", **identity)
        if output is not None:
            sink.close()  # type: ignore[union-attr]
        assert self.process.stderr is not None
        self.err = Stream(io.TextIOWrapper(self.process.stderr))
        self.out = None if self.process.stdout is None else Stream(io.TextIOWrapper(self.process.stdout))

    def stdout(self) -> Stream:
        assert self.out is not None
        return self.out

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def wait(self, how: signal.Signals | None = None) -> int:
        """Its exit status, after sending it `how`."""
        if how is not None and self.process.poll() is None:
            self.process.send_signal(how)
        try:
            return self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def quit(self) -> None:
        if self.process.poll() is None and self.stops_on_signal:
            self.wait(signal.SIGTERM)
        elif self.process.poll() is None:
            try:
                self.tell("quit")
            except (BrokenPipeError, ValueError):
                pass
            self.wait()


@dataclass
class Site:
    """Where a test runs: a mount, and the user whose processes use it (None: root)."""

    mount: Mount
    user: str | None
    runtime: Path | None
    tools: Path
    running: list[Running] = field(default_factory=list)

    def identity(self) -> dict[str, Any]:
        """Popen's arguments that run a process as the site's user, with the staged runtime (the
        process itself, not a runuser around it: signals reach it)."""
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        env = {"HOME": entry.pw_dir, "USER": self.user, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "PYTHONPATH": str(self.runtime)}
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}

    def python(self, *args: str) -> list[str]:
        return [sys.executable if self.user is None else user_python(), *args]

    def kdbusctl(self, *args: str) -> list[str]:
        # Root runs the installed console script; the test user the staged package.
        if self.user is None:
            return [str(Path(sys.executable).parent / "kdbusctl"), *args]
        return self.python("-m", "kdbusfs.ctl", *args)

    def ctl(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.kdbusctl(*args), capture_output=True, text=True, timeout=120, cwd="/",
                              **self.identity())
        if ok:
            assert proc.returncode == 0, f"kdbusctl {args}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
            assert "Traceback" not in proc.stderr
        return proc

    def start(self, cmd: list[str], output: Path | None = None, stops_on_signal: bool = False) -> Running:
        running = Running(cmd, self.identity(), output, stops_on_signal)
        self.running.append(running)
        return running

    def start_ctl(self, *args: str, output: Path | None = None) -> Running:
        return self.start(self.kdbusctl(*args), output, stops_on_signal=True)

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.user).pw_uid if self.user else 0


@dataclass
class Peers:
    """ctl_peer.py's connections and a C echo client owning C_NAME, on a fresh bus."""

    bus: Path
    server: int
    queued: int
    activator: int
    peer: Running
    echo: Running
    echo_id: int


def start_peers(site: Site, suffix: str = "ctl") -> Peers:
    peer = site.start(site.python(str(site.tools / PEER.name), str(site.mount.path), suffix, NAME))
    bus = Path(peer.stdout().expect(lambda line: line.startswith("bus "), "the bus")[4:])
    server, queued, activator = map(int, peer.stdout().expect(
        lambda line: line.startswith("ready "), "the peers")[6:].split())
    echo = site.start([str(site.tools / "echo"), str(site.mount.path), bus.parent.name, C_NAME])
    echo_id = int(echo.stdout().expect(lambda line: line.startswith("id "), "the C client")[3:])
    return Peers(bus, server, queued, activator, peer, echo, echo_id)


def pcap_packets(data: bytes) -> list[bytes]:
    """The packets of a pcapng file (Enhanced Packet Blocks)."""
    packets = []
    while data:
        kind, total = struct.unpack_from("<II", data)
        if kind == 6:
            length = struct.unpack_from("<I", data, 20)[0]
            packets.append(data[28 : 28 + length])
        data = data[total:]
    return packets


def json_document(stream: Stream) -> Any:
    first = len(stream.lines)
    stream.expect(lambda line: line == "}", "the end of a JSON document")
    return json.loads("\n".join(stream.lines[first:]))
