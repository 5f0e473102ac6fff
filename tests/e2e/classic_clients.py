"""Peers for the classic-client tests: a native C kdbus client (c/dbuspeer.c) whose D-Bus payloads
are made and read here, and a classic GDBus client (classic_peer.py, run by the system python3
with python3-gi), both driven line by line."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

from kdbusfs.abi.constants import MSG_EXPECT_REPLY, MSG_SIGNAL
from kdbusfs.client import BloomFilter
from kdbusfs.dbus import DBusMessage, MessageType, wire

from .harness import as_user

CLASSIC_PEER = Path(__file__).with_name("classic_peer.py")
SYSTEM_PYTHON = "/usr/bin/python3"
# kdbusfs makes the buses classic clients join with sd-bus's bloom parameters.
BLOOM_SIZE, BLOOM_N_HASH = 64, 8


class LinePeer:
    """A child process answering lines on stdout; reads wait on the pipe, never on a clock."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env)
        self._pending = b""

    def write(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def line(self, timeout: float = 15.0) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no line from {self.process.args!r} within {timeout} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise EOFError(f"{self.process.args!r} ended: {err}")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def expect(self, prefix: str, timeout: float = 15.0) -> str:
        """The next line starting with `prefix` (others, such as notes of calls served, are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.1, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def ask(self, line: str, prefix: str = "") -> str:
        self.write(line)
        return self.expect(prefix) if prefix else self.line()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.write("quit")
                self.process.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


class ClassicPeer(LinePeer):
    def __init__(self, address: str, user: str | None = None) -> None:
        env = {"DBUS_SYSTEM_BUS_ADDRESS": address, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        cmd = [SYSTEM_PYTHON, str(CLASSIC_PEER)]
        super().__init__(as_user(user, *cmd, env=env) if user else cmd, env=env)
        self.name = self.expect("name ")


class NativePeer(LinePeer):
    """The C client, under `kdbusfs run` when it must be given descriptors."""

    def __init__(self, binary: Path, root: Path, bus: str, launched: bool = False, user: str | None = None,
                 python: str | None = None, env: dict[str, str] | None = None) -> None:
        cmd = [str(binary), str(root), bus]
        if launched:
            cmd = [python or SYSTEM_PYTHON, "-m", "kdbusfs", "run", "--mount", str(root), "--", *cmd]
        super().__init__(as_user(user, *cmd, env=env) if user else cmd, env={**os.environ, **(env or {})})
        self.id = int(self.expect("id "))
        self.serial = 100

    @property
    def unique_name(self) -> str:
        return f":1.{self.id}"

    def own(self, name: str) -> None:
        assert self.ask(f"own {name}").startswith("ok"), name

    def add_match(self, *items: bytes) -> None:
        assert self.ask("match " + b"".join(items).hex()) == "ok"

    def send(self, destination: str | int, message: DBusMessage, *, flags: int = 0, reply_to: int = 0,
             bloom: BloomFilter | None = None, fd_text: str | None = None, timeout_ms: int = 10000) -> str:
        arg = timeout_ms if flags & MSG_EXPECT_REPLY else reply_to
        payload = wire.encode_gvariant(message.replace(sender=self.unique_name)).hex()
        line = (f"send {destination} {flags} {message.serial} {arg} {payload} "
                f"{bytes(bloom).hex() if bloom else '-'} {fd_text or '-'}")
        return self.ask(line)

    def call(self, destination: str, member: str, signature: str, body: tuple[object, ...],
             fd_text: str | None = None) -> int:
        self.serial += 1
        call = DBusMessage.method_call(destination, "/org/example/Echo", "org.example.Echo", member,
                                       signature, body, serial=self.serial)
        if fd_text is not None:
            call = call.replace(unix_fds=1)
        assert self.send(destination, call, flags=MSG_EXPECT_REPLY, fd_text=fd_text) == "ok"
        return self.serial

    def emit(self, member: str, *args: str) -> None:
        self.serial += 1
        signal = DBusMessage.signal("/org/example/Native", "org.example.Native", member, "s" * len(args),
                                    args, serial=self.serial)
        bloom = BloomFilter.for_signal(BLOOM_SIZE, BLOOM_N_HASH, interface="org.example.Native",
                                       member=member, path="/org/example/Native", args=list(args))
        assert self.send("broadcast", signal, flags=MSG_SIGNAL, bloom=bloom) == "ok"

    def reply(self, call: Received, signature: str, body: tuple[object, ...]) -> None:
        self.serial += 1
        reply = DBusMessage.method_return(call.message, signature, body, serial=self.serial)
        assert self.send(str(call.src_id), reply, reply_to=call.cookie) == "ok"

    def receive(self, timeout_ms: int = 10000) -> Received:
        """The next D-Bus message (notifications and non-D-Bus payloads are skipped)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                raise TimeoutError("no message for the native peer")
            line = self.ask(f"recv {left}")
            if line.startswith("msg "):
                return Received.parse(line)
            if line == "timeout":
                raise TimeoutError("no message for the native peer")

    def notification(self, timeout_ms: int = 10000) -> list[str]:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            line = self.ask(f"recv {max(left, 1)}")
            if line.startswith("note "):
                return line.split()[1:]
            if line == "timeout":
                raise TimeoutError("no notification for the native peer")


class Received:
    def __init__(self, src_id: int, dst_id: int, cookie: int, cookie_reply: int, flags: int,
                 message: DBusMessage, fd_text: str | None) -> None:
        self.src_id = src_id
        self.dst_id = dst_id
        self.cookie = cookie
        self.cookie_reply = cookie_reply
        self.flags = flags
        self.message = message
        self.fd_text = fd_text

    @classmethod
    def parse(cls, line: str) -> Received:
        _, src, dst, cookie, cookie_reply, flags, payload, fd = line.split()
        fd_text = None if fd in ("-", "none") else bytes.fromhex(fd).decode()
        message = wire.decode(bytes.fromhex(payload))
        return cls(int(src), int(dst), int(cookie), int(cookie_reply), int(flags), message, fd_text)

    @property
    def is_call(self) -> bool:
        return self.message.type == MessageType.METHOD_CALL
