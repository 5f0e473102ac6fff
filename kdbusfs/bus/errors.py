"""Typed errors of the model; the FUSE edge maps them to errnos and logs the reason once."""

from __future__ import annotations

import errno


class KdbusError(Exception):
    """A kdbus command failed with `errno`; `why` explains it for the log."""

    def __init__(self, err: int, why: str) -> None:
        super().__init__(err, why)
        self.errno = err
        self.why = why

    def __str__(self) -> str:
        return f"{errno.errorcode.get(self.errno, self.errno)}: {self.why}"
