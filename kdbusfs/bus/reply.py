"""Reply trackers: a call that expects an answer, from whom, by when."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection
    from .message import Passed


@dataclass(slots=True, eq=False)
class SyncWait:
    """A caller blocked in a synchronous SEND; `result` is set when it may return."""

    caller: Connection
    # errno to fail with, or 0 with the reply's (offset, size, return_flags).
    errno: int | None = None
    reply: tuple[int, int, int] | None = None
    # The edge's handle for the blocked request (the FUSE unique), opaque here.
    token: object = None
    # The caller's CANCEL_FD (a duplicate the edge watches): readable means give up.
    cancel_fd: int | None = None
    # Descriptors the reply passes, for the edge to install in the caller or close.
    passed: Passed | None = None

    def cancel(self) -> None:
        """The caller's CANCEL_FD fired: stop waiting; a late reply finds no tracker (EBADSLT)."""
        if self.done:
            return
        bus = self.caller.bus
        for reply in list(self.caller.trackers):
            if reply.sync is self:
                bus.forget_reply(reply)
        self.finish(errno.ECANCELED)

    @property
    def done(self) -> bool:
        return self.errno is not None

    def finish(self, err: int, reply: tuple[int, int, int] | None = None,
               passed: Passed | None = None) -> None:
        if self.errno is not None:
            if passed is not None:
                passed.close()
            return
        self.errno = err
        self.reply = reply
        self.passed = passed
        if self in self.caller.sync_waits:
            self.caller.sync_waits.remove(self)
        self.caller.bus.domain.complete(self)


@dataclass(slots=True, eq=False)
class Reply:
    caller: Connection
    replier: Connection
    cookie: int
    deadline_ns: int
    # The name registration the call went through, so the tracker can follow the name's owner.
    name_id: int | None = None
    sync: SyncWait | None = None
    # Set once the call was queued for the replier (an answer may then come).
    waiting: bool = True
