"""A connection's pool: the bus writes messages and query answers into it, the client maps it
read-only, copies a slice out and hands it back with KDBUS_CMD_FREE (KDBUS-SPEC.md §4).

The mapping is made with libc's mmap: Python's `mmap` refuses to map more than a regular file's
size, and an endpoint file has size 0 (its pool is reached through the mapping only).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading

from ..abi import structs
from ..abi.constants import Cmd
from .ioctl import command, issue, libc

_mmap = libc.mmap
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_mmap.restype = ctypes.c_void_p
_munmap = libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_munmap.restype = ctypes.c_int
_MAP_FAILED = ctypes.c_void_p(-1).value


class Pool:
    """The read-only mapping of the pool of the connection on `fd`."""

    def __init__(self, fd: int, size: int, frees: bool = True) -> None:
        self.fd = fd
        self.size = size
        self.frees = frees
        address = _mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address is None or address == _MAP_FAILED:
            code = ctypes.get_errno()
            raise OSError(code, f"mmap of a {size}-byte pool: {os.strerror(code)}")
        self._address: int | None = address
        # A thread may still read a slice (a reply) while another closes the connection: reading
        # unmapped memory would crash the process, so reads and the unmapping exclude each other.
        self._lock = threading.Lock()

    def read(self, offset: int, size: int) -> bytes:
        """A copy of `size` bytes at `offset`."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"slice {offset}+{size} outside a pool of {self.size} bytes")
        with self._lock:
            if self._address is None:
                raise ValueError("the pool is unmapped")
            return ctypes.string_at(self._address + offset, size)

    def free(self, offset: int) -> None:
        """Give the slice at `offset` back to the bus (the pool's size stands for "no slice")."""
        issue(self.fd, Cmd.FREE, command(structs.CMD_FREE, 0, 0, offset))

    def take(self, offset: int, size: int) -> bytes:
        """Copy a slice the bus published, then free it (if this connection may)."""
        try:
            return self.read(offset, size)
        finally:
            if self.frees:
                self.free(offset)

    def close(self) -> None:
        with self._lock:
            if self._address is not None:
                _munmap(self._address, self.size)
                self._address = None
