# The interface of connection.pyx (compiled), for type checkers.
import enum
import mmap
from collections.abc import Callable

from ..abi import structs
from ..errors import Refused
from . import message as msgs
from .bus import Bus
from .command import Args, Caller
from .domain import User
from .endpoint import Endpoint
from .match import MatchDb
from .metadata import Creds, Process, Snapshot, View
from .names import Owner
from .pool import Pool
from .queue import Entry, Queue, Quotas
from .reply import Reply, SyncWait
from .stats import Counters

HELLO_FLAGS: int
# RECV's answer when nothing is queued.
NOTHING_QUEUED: Refused

class Kind(enum.Enum):
    ORDINARY = "ordinary"
    MONITOR = "monitor"
    ACTIVATOR = "activator"
    POLICY_HOLDER = "policy holder"

def kind_of(flags: int) -> Kind: ...

class Connection:
    """A connection on a bus: its pool, its queue, its names, matches and calls in flight."""

    @property
    def id(self) -> int: ...
    bus: Bus
    endpoint: Endpoint
    flags: int
    kind: Kind
    attach_flags_send: int
    attach_flags_recv: int
    pool: Pool
    # Credentials of the task that opened the file (policy, accounting).
    opener: Creds
    # The HELLO caller's process facts, as CONN_INFO reports them.
    snapshot: Snapshot
    user: User
    description: str | None
    owner: bool
    privileged: bool
    active: bool
    queue: Queue
    # Broadcasts (and hand-over moves) that could not be queued, reported by the next RECV.
    lost: int
    # Name records (owned, queued, activator) in acquisition order.
    name_records: list[Owner]
    # Calls this connection made that await a reply, and calls others made to it.
    trackers: list[Reply]
    awaited: list[Reply]
    # Synchronous SENDs of this connection that are blocked.
    sync_waits: list[SyncWait]
    # Ordinary connections only: which signals and notifications they take.
    matches: MatchDb | None
    # How this connection sees other tasks' ids (its namespaces).
    view: View
    # Each sending user's share of the pool.
    quota: Quotas
    stats: Counters

    def __init__(self, id: int, bus: Bus, endpoint: Endpoint, flags: int, kind: Kind,
                 attach_flags_send: int, attach_flags_recv: int, pool: Pool, opener: Creds,
                 snapshot: Snapshot, user: User, description: str | None = None, owner: bool = False,
                 privileged: bool = False, active: bool = True, view: View = ...) -> None: ...
    @classmethod
    def hello(
        cls, endpoint: Endpoint, opener: Creds, snapshot: Snapshot, flags: int,
        attach_flags_send: int, attach_flags_recv: int, pool_size: int,
        description: str | None, name: str | None,
        pool_memory: Callable[[int], mmap.mmap] | None = None, view: View = ...,
    ) -> Connection: ...
    def bloom_slice(self) -> tuple[int, int]:
        """Publish the bus's bloom parameters in the pool, as HELLO returns them."""
    def publish(self, data: bytes) -> tuple[int, int]:
        """Copy `data` into a fresh unaccounted slice and hand it to the client: (offset, size)."""
    def enqueue(self, msg: msgs.Staged, sender: Connection | None, process: Process | None,
                reply: Reply | None = None, name_id: int | None = None) -> Entry:
        """Lay `msg` out in this connection's pool and queue it (kdbus_conn_entry_insert)."""
    def take_entry(self, entry: Entry) -> None:
        """Unqueue `entry` to move it elsewhere; the caller releases its slice afterwards."""
    def adopt_entry(self, entry: Entry, source: Pool) -> None:
        """Queue a message moved from another connection's pool `source`."""
    def recv(self, peek: bool, drop: bool,
             priority: int | None) -> tuple[int, int, int, msgs.Passed | None] | None:
        """RECV: (offset, size, return_flags) of the next message and the descriptors it passes,
        now the caller's to install or close; None if there is none."""
    def lose_message(self) -> None:
        """A message meant for this connection found no room: the next RECV reports it."""
    def take_lost(self) -> int: ...
    @property
    def readable(self) -> bool: ...
    def disconnect(self) -> bool:
        """Tear the connection down (KDBUS-SPEC.md §3.5); returns False if it already was."""
    def find_peer(self, conn_id: int) -> Connection: ...

def cmd_byebye(conn: Connection, args: Args[structs.Cmd], caller: Caller) -> None: ...
def cmd_free(conn: Connection, args: Args[structs.CmdFree], caller: Caller) -> None: ...
def cmd_update(conn: Connection, args: Args[structs.Cmd], caller: Caller) -> None:
    """UPDATE: new attach flags, or (a policy holder) new policy for its name."""
def cmd_conn_info(conn: Connection, args: Args[structs.CmdInfo], caller: Caller) -> None:
    """CONN_INFO about a peer, by id or by a name it owns, if this connection may see it."""
def cmd_recv(conn: Connection, args: Args[structs.CmdRecv], caller: Caller) -> Refused | None:
    """RECV: the next message (or a peek at it, or drop it), its descriptors installed."""
