"""What every command body works with: the command struct copied from the caller (`Args`), the
caller itself (`Caller`, the edge's side), and `Pending` for a call that blocks.

`Args` and `copy_in` are compiled (bus/args.pyx) with the frame that fills them in
(kdbusfs/dispatch.pyx); the table of commands is in kdbusfs/handle.py; each body lives in the module of
its concept (names.py for NAME_ACQUIRE, connection.py for HELLO, ...).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Protocol

from ..errors import KdbusError
from .args import Args, copy_in
from .message import Buffer, Passed, SenderFiles
from .metadata import Creds, Process, sanitize_attach_flags
from .pool import Pool
from .reply import SyncWait

__all__ = ["Args", "Caller", "Pending", "attach_flags", "copy_in"]


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


def attach_flags(value: int) -> int:
    """Attach flags a command asks for: ~0 is all of them, an unknown bit EINVAL."""
    sane = sanitize_attach_flags(value)
    if sane is None:
        raise KdbusError(errno.EINVAL, f"unknown attach flags {value:#x}")
    return sane
