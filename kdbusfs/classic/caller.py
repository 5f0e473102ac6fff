"""A classic client as the kdbus model's `Caller`: in-process memory, the peer's identity, and the
descriptors it sent over its socket.

Each command a classic client's connection runs is built by the endpoint in daemon memory: the
command struct, the message and its payload are placed in an `Arena` (regions at made-up, 8-aligned
addresses, nothing copied), and the command bodies read and write them there exactly as they read
and write a FUSE caller's memory. The peer's credentials and process facts are what peer.py captured
when its socket was accepted: SO_PEERCRED's identity, never /proc's.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable

from .. import limits
from ..bus.message import Buffer, Passed
from ..bus.metadata import Creds, Process
from ..bus.pool import Pool
from ..errors import KdbusError, LimitReached, user_named
from ..host.files import is_unix_socket, memfd_refusal
from ..host.mounts import fd_device
from .closures import FIXED
from .peer import absent

# Where the first region goes: any non-zero, page-aligned address (0 reads as "no address").
_ARENA_BASE = 0x10000
_PAGE = limits.PAGE_SIZE
_NO_FD = struct.Struct("<i")


class Arena:
    """Made-up addresses for daemon buffers, valid for one command."""

    def __init__(self) -> None:
        self._regions: list[tuple[int, bytes | bytearray | memoryview]] = []
        self._next = _ARENA_BASE

    def place(self, data: bytes | bytearray | memoryview) -> int:
        """An address at which the command bodies find `data` (a bytearray can be written to).

        A region ends where a page ends (as a buffer at the end of its mapping), so that a struct's
        read-ahead, which stops at the page's end (copy_in), reads it whole in one go instead of
        failing past its end and reading again; its start stays 8-aligned (a size not a multiple
        of 8 ends a few bytes short of the page). A page stays unused between regions: a read
        past the end of one fails instead of reading the next."""
        size = (len(data) + 7) & ~7
        address = self._next + (-(self._next + size) % _PAGE)
        self._regions.append((address, data))
        self._next = address + size + _PAGE
        return address

    def reset(self) -> None:
        self._regions.clear()
        self._next = _ARENA_BASE

    def _find(self, address: int, size: int) -> tuple[bytes | bytearray | memoryview, int]:
        for start, data in self._regions:
            if start <= address and address + size <= start + len(data):
                return data, address - start
        raise KdbusError(errno.EFAULT, f"{size} bytes at {address:#x} are outside the command's buffers")

    def read(self, address: int, size: int) -> bytes:
        data, offset = self._find(address, size)
        return bytes(data[offset : offset + size])

    def read_into(self, address: int, size: int, buffer: Buffer, at: int) -> None:
        data, offset = self._find(address, size)
        buffer[at : at + size] = data[offset : offset + size]

    def write(self, address: int, payload: bytes) -> None:
        data, offset = self._find(address, len(payload))
        if not isinstance(data, bytearray):
            raise KdbusError(errno.EFAULT, f"the buffer at {address:#x} is read-only")
        data[offset : offset + len(payload)] = payload


class ClassicFiles:
    """The descriptors a classic client sent with the message being sent, checked as kdbus checks
    a sender's: no kdbus file of this mount, no unix socket. The numbers in the message's FDS item
    are the daemon's own (received by SCM_RIGHTS); the message gets duplicates, so the endpoint
    closes what it received either way."""

    def __init__(self, kdbus_device: int | None, close: Callable[[int], None], uid: int) -> None:
        self._kdbus_device = kdbus_device
        self._uid = uid
        self._close = close
        # The memfds the endpoint made for this client's large bodies and its messages still hold
        # (by the message's duplicate), with their sizes: daemon memory until received.
        self._memfd_sizes: dict[int, int] = {}
        self.memfd_bytes = 0

    def reserve_memfd(self, size: int) -> None:
        """Refuse a memfd of `size` more bytes past CLASSIC_MEMFD_BYTES_MAX (ENOBUFS: the caller
        gets LimitsExceeded, as from dbus-daemon past max_incoming_bytes; a limit, not bad input)."""
        if self.memfd_bytes + size > limits.CLASSIC_MEMFD_BYTES_MAX:
            raise LimitReached(errno.ENOBUFS, f"{self.memfd_bytes} bytes of large bodies not received yet; "
                                              f"{size} more would pass {limits.CLASSIC_MEMFD_BYTES_MAX}",
                               "bytes of large bodies one classic client's messages hold until received",
                               limits.CLASSIC_MEMFD_BYTES_MAX, FIXED, user_named(self._uid))

    def check_fds(self, fds: list[int]) -> list[int]:
        held: list[int] = []
        try:
            for fd in fds:
                # By name, never fstat: a file of this very mount would be a request to ourselves.
                if self._kdbus_device is not None and fd_device(os.getpid(), fd) == self._kdbus_device:
                    raise KdbusError(errno.EOPNOTSUPP, f"fd {fd} is a kdbus file and cannot be passed")
                if is_unix_socket(fd):
                    raise KdbusError(errno.EOPNOTSUPP, f"fd {fd} is a unix socket and cannot be passed")
                held.append(os.dup(fd))
        except BaseException:
            self.release(held)
            raise
        return held

    def check_memfd(self, fd: int, start: int, size: int) -> int:
        """A duplicate of a memfd the endpoint made for a large body (ClassicConnection.send),
        checked as a sender's are."""
        copy = os.dup(fd)
        try:
            refusal = memfd_refusal(copy, fd, start, size)
        except BaseException:
            self._close(copy)
            raise
        if refusal is not None:
            self._close(copy)
            raise refusal
        self._memfd_sizes[copy] = size
        self.memfd_bytes += size
        return copy

    def pollable(self, fd: int) -> int:
        raise KdbusError(errno.EINVAL, "classic clients make no synchronous calls")

    def release(self, held: list[int]) -> None:
        for fd in held:
            self.memfd_bytes -= self._memfd_sizes.pop(fd, 0)
            self._close(fd)


class ClassicCaller:
    """The `handle.Caller` of every command a classic client's connection runs."""

    def __init__(self, pid: int, uid: int, gid: int, kdbus_device: int | None,
                 close: Callable[[int], None], process: Process | None = None) -> None:
        """`process`: the identity and facts to act with (a peer's from peer.capture, the daemon's
        own); without it just the ids given, no capabilities, no facts."""
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.arena = Arena()
        self._close = close
        self._files = ClassicFiles(kdbus_device, close, uid)
        self._process = process if process is not None else absent(Creds.for_ids(uid, gid, pid))
        # Descriptors the last RECV handed over, in the order of the message's FDS item.
        self.received_fds: list[int] = []

    def creds(self) -> Creds:
        return self._process.creds()

    def process(self) -> Process:
        return self._process

    def read(self, address: int, size: int) -> bytes:
        return self.arena.read(address, size)

    def read_into(self, address: int, size: int, buffer: Buffer, offset: int) -> None:
        self.arena.read_into(address, size, buffer, offset)

    def write(self, address: int, data: bytes) -> None:
        self.arena.write(address, data)

    def files(self) -> ClassicFiles:
        return self._files

    def close_fd(self, fd: int) -> None:
        self._close(fd)

    def install(self, passed: Passed, pool: Pool, offset: int) -> bool:
        """Keep the message's descriptors to send them over the socket; the message says where
        each one is by its index, which is what a D-Bus 'h' value is."""
        self.received_fds = [os.dup(fd) for fd in passed.fds]
        for index, slot in enumerate(passed.slots):
            _NO_FD.pack_into(pool.buffer, offset + slot, index)
        passed.close()
        return True
