"""Issuing kdbus commands: structs pinned at fixed addresses, and libc's ioctl.

kdbus commands pass a pointer to a struct longer than the ioctl number says (items follow), and the
bus reads the rest, and the message, payload vectors and replies a SEND points to, from the caller's
memory by address. So every such struct lives in ctypes memory that stays put while the command runs.
`fcntl.ioctl` cannot pass it: it takes an integer argument as a C int, too small for an address, and
copies buffer arguments to a stack area first. libc's ioctl through ctypes takes the address itself,
and releases the GIL while a synchronous call waits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from ..abi.constants import Cmd
from ..abi.structs import U64, Layout, T, align8
from .errors import command_error

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_ioctl = libc.ioctl
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_ioctl.restype = ctypes.c_int


class Pinned:
    """Bytes at a fixed, 8-aligned address (kdbus refuses unaligned structs with EFAULT), for as
    long as this object lives."""

    __slots__ = ("_memory", "address", "size")

    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        # An array of u64 is 8-aligned by its type, wherever ctypes allocates it.
        self._memory = (ctypes.c_uint64 * max(1, align8(self.size) // 8))()
        self.address: int = ctypes.addressof(self._memory)
        ctypes.memmove(self.address, data, self.size)

    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        return ctypes.string_at(self.address + offset, self.size - offset if size is None else size)

    def u64(self, offset: int) -> int:
        return int(U64.unpack(self.read(offset, U64.size))[0])

    def fields(self, layout: Layout[T]) -> T:
        """The fixed part as `layout`'s named tuple (what the bus wrote back)."""
        return layout.unpack(self.read(0, layout.size))


def command_bytes(layout: Layout[Any], *fields: int | bytes, items: bytes = b"") -> bytes:
    """A command struct: `layout`'s fields after `size` (which is computed), then `items` (also
    what the classic endpoint runs in daemon memory, classic/commands.py)."""
    return layout.pack(layout.size + len(items), *fields) + items


def command(layout: Layout[Any], *fields: int | bytes, items: bytes = b"") -> Pinned:
    """command_bytes(...) pinned, for an ioctl."""
    return Pinned(command_bytes(layout, *fields, items=items))


def issue(fd: int, cmd: Cmd, struct: Pinned) -> None:
    """Run `cmd` on `fd` with `struct`; raise its CommandError when kdbus says no."""
    if _ioctl(fd, cmd, struct.address) < 0:
        raise command_error(cmd, ctypes.get_errno())
