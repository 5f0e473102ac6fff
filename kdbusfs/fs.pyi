# The interface of fs.pyx (compiled), for type checkers.
from collections.abc import Callable

from . import forward, seccomp
from .bus.connection import Connection
from .bus.domain import Domain
from .calls import Blocked, BlockedCalls, Supervised
from .errors import KdbusError
from .fuse.codec import Output, Request
from .host import Host
from .host.backing import PoolFiles
from .launched import Launched
from .tree import Tree

class Filesystem:
    """Maps FUSE requests onto the kdbus model; returns the bytes to write back, in order."""

    domain: Domain
    host: Host
    # Pools as memfds the client maps (root only); passthrough once INIT has agreed to it.
    pool_files: PoolFiles | None
    passthrough: bool
    # st_dev of this mount: descriptors of our own files cannot be passed in messages.
    device: int | None
    tree: Tree
    calls: BlockedCalls
    # Clients started by `kdbusfs run`.
    launched: Launched
    # Connections whose clients live in the daemon itself (classic D-Bus clients,
    # kdbusfs/classic): no file stands for them, so their endpoint is told of their wakes.
    in_process: dict[int, Callable[[Connection], None]]
    initialized: bool
    def __init__(self, domain: Domain, host: Host | None = None, device: int | None = None,
                 pool_files: PoolFiles | None = None) -> None: ...
    def handle(self, request: Request) -> list[Output]:
        """Serve one request: pool stores and notifications first, then the reply (if any)."""
    def emit(self, output: Output) -> None:
        """Add to what the request (or event) being served hands the session."""
    def refused(self, what: str, exc: KdbusError) -> None:
        """Log a request's errno: a limit as a warning (once per burst), anything else at debug."""
    def listener_ready(self, listener: int, notification: seccomp.Notification) -> list[Output]: ...
    def forwarded_ready(self, forwarded: forward.Forwarded) -> list[Output]: ...
    def listener_gone(self, listener: int) -> None: ...
    def next_deadline(self) -> int | None:
        """CLOCK_MONOTONIC nanoseconds of the next reply deadline or interrupt re-check, if any."""
    def tick(self, now_ns: int | None = None) -> list[Output]:
        """Fire the deadlines due by `now_ns` (CLOCK_MONOTONIC, now by default)."""
    def outside_requests(self, what: str, action: Callable[[], None]) -> list[Output]:
        """Run work no request asked for (timers, cancel fds) and return what it has to write."""
    def push(self, conn: Connection) -> None:
        """The connection's new pool bytes to its client's page cache; wake its pollers."""
    def close_fd(self, fd: int) -> None: ...
    def cancel_fd_ready(self, fd: int) -> list[Output]:
        """A blocked call's CANCEL_FD became readable: the call ends with ECANCELED."""
    def write_reply(self, token: Blocked | Supervised, offset: int, size: int, flags: int) -> None: ...
    def shutdown(self) -> None: ...
