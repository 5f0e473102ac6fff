# The interface of reply.pyx (compiled), for type checkers.
from .connection import Connection
from .message import Passed

class SyncWait:
    """A caller blocked in a synchronous SEND; `errno` (and `reply`) is set when it may return."""

    caller: Connection
    # errno to fail with, or 0 with the reply's (offset, size, return_flags).
    errno: int | None
    reply: tuple[int, int, int] | None
    # The edge's handle for the blocked request (the FUSE unique), opaque here.
    token: object
    # The caller's CANCEL_FD (a duplicate the edge watches): readable means give up.
    cancel_fd: int | None
    # Descriptors the reply passes, for the edge to install in the caller or close.
    passed: Passed | None
    def __init__(self, caller: Connection, errno: int | None = None,
                 reply: tuple[int, int, int] | None = None, token: object = None,
                 cancel_fd: int | None = None, passed: Passed | None = None) -> None: ...
    def cancel(self) -> None:
        """The caller's CANCEL_FD fired: stop waiting; a late reply finds no tracker (EBADSLT)."""
    @property
    def done(self) -> bool: ...
    def finish(self, err: int, reply: tuple[int, int, int] | None = None,
               passed: Passed | None = None) -> None: ...

class Reply:
    """A call awaiting its answer: from `caller`, by `replier`, before `deadline_ns`."""

    caller: Connection
    replier: Connection
    cookie: int
    deadline_ns: int
    # The name registration the call went through, so the tracker can follow the name's owner.
    name_id: int | None
    sync: SyncWait | None
    # Set once the call was queued for the replier (an answer may then come).
    waiting: bool
    def __init__(self, caller: Connection, replier: Connection, cookie: int, deadline_ns: int,
                 name_id: int | None = None, sync: SyncWait | None = None,
                 waiting: bool = True) -> None: ...
