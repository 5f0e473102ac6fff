"""What every command body works with: the command struct copied from the caller (`Args`), the
caller itself (`Caller`, the edge's side), and `Pending` for a call that blocks.

The frame that fills these in and the table of commands are in kdbusfs/handle.py; each body lives
in the module of its concept (names.py for NAME_ACQUIRE, connection.py for HELLO, ...).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, Generic, Protocol

from .. import limits
from ..abi.constants import FLAG_NEGOTIATE
from ..abi.items import ParsedItem
from ..abi.structs import U64, Layout, T
from ..errors import KdbusError
from .message import Buffer, Passed, SenderFiles
from .metadata import Creds, Process, sanitize_attach_flags
from .pool import Pool
from .reply import SyncWait


class Caller(Protocol):
    """The task issuing an ioctl: its identity, its process facts and its memory."""

    def creds(self) -> Creds: ...

    def process(self) -> Process: ...

    def read(self, address: int, size: int) -> bytes: ...

    def read_into(self, address: int, size: int, buffer: Buffer, offset: int) -> None: ...

    def write(self, address: int, data: bytes) -> None: ...

    def files(self) -> SenderFiles: ...

    def close_fd(self, fd: int) -> None: ...

    def install(self, passed: Passed, pool: Pool, offset: int) -> bool:
        """Take the descriptors a received message passes: install them in this task and write
        their numbers into the message at `offset` in `pool` (True if all were), or close them
        (False: the task cannot be given descriptors, and the numbers stay -1)."""


@dataclass(slots=True, eq=False)
class Pending:
    """An ioctl that blocks (a synchronous SEND): the edge answers it when `wait` is done."""

    wait: SyncWait
    address: int
    msg_address: int


class Args(Generic[T]):
    """A command struct copied from the caller: its fixed part as the caller wrote it (`fields`)
    and as it goes back (`out`, which commands replace fields of by name), and its items."""

    __slots__ = ("address", "data", "layout", "fields", "out", "items", "negotiate")

    def __init__(self, address: int, data: bytes, layout: Layout[T],
                 items: dict[int, list[ParsedItem]]) -> None:
        self.address = address
        self.data = data
        self.layout = layout
        self.fields: T = layout.unpack(data)
        self.out: T = self.fields
        self.items = items
        self.negotiate = bool(U64.unpack_from(data, 8)[0] & FLAG_NEGOTIATE)

    def item(self, item_type: int) -> ParsedItem | None:
        found = self.items.get(item_type)
        return found[0] if found else None

    def fixed(self) -> bytes:
        """The fixed part to write back."""
        return self.layout.struct.pack(*self.out)


def attach_flags(value: int) -> int:
    """Attach flags a command asks for: ~0 is all of them, an unknown bit EINVAL."""
    sane = sanitize_attach_flags(value)
    if sane is None:
        raise KdbusError(errno.EINVAL, f"unknown attach flags {value:#x}")
    return sane


_PAGE = limits.PAGE_SIZE
_READ_AHEAD = 512


def copy_in(caller: Caller, address: int, layout: Layout[Any], in_data: bytes) -> bytes:
    """The whole command struct from the caller: aligned, at least the fixed part, at most 32 KiB."""
    if address & 7:
        raise KdbusError(errno.EFAULT, f"{layout.name} at unaligned address {address:#x}")
    if len(in_data) >= 8:
        head = in_data
    else:
        # One read usually covers the whole struct: take up to 512 bytes, within the page.
        chunk = max(layout.size, min(_READ_AHEAD, _PAGE - address % _PAGE))
        try:
            head = caller.read(address, chunk)
        except KdbusError:
            try:
                head = caller.read(address, layout.size)
            except KdbusError:
                head = caller.read(address, 8)
    size = U64.unpack_from(head)[0]
    if size < layout.size:
        raise KdbusError(errno.EINVAL, f"size {size} below the {layout.size}-byte {layout.name}")
    if size > limits.CMD_MAX_SIZE:
        raise KdbusError(errno.EMSGSIZE, f"size {size} above {limits.CMD_MAX_SIZE}")
    if size <= len(head):
        return bytes(head[:size])
    return bytes(head) + caller.read(address + len(head), size - len(head))
