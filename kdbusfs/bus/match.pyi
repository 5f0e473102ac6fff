# The interface of match.pyx (compiled), for type checkers.
from collections.abc import Iterable

from ..abi import structs
from ..abi.walk import ParsedItem
from .command import Args, Caller
from .connection import Connection
from .message import Staged

KERNEL_NOTIFICATIONS: frozenset[int]

class Rule:
    """One rule of a match entry: its item type and what it selects."""

    @property
    def type(self) -> int: ...
    @property
    def mask(self) -> bytes:
        """BLOOM_MASK: the mask's bytes, generation after generation."""
    @property
    def generations(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def id(self) -> int: ...
    @property
    def old_id(self) -> int: ...
    @property
    def new_id(self) -> int: ...
    def __init__(self, type: int, mask: bytes = b"", generations: int = 0, name: str | None = None,
                 id: int = 0, old_id: int = 0, new_id: int = 0) -> None: ...

class Entry:
    """The rules one MATCH_ADD gave under a cookie."""

    @property
    def cookie(self) -> int: ...
    @property
    def rules(self) -> tuple[Rule, ...]: ...
    def __init__(self, cookie: int, rules: tuple[Rule, ...]) -> None: ...

def notifications_selectable_by(rules: tuple[Rule, ...]) -> frozenset[int]:
    """The kernel notification types an entry with these rules can select (KDBUS-SPEC.md §7.4)."""

class NotificationSubscribers:
    """Per bus: for each broadcast kernel notification type, the connections with a match entry
    that can select it."""

    def subscribe(self, conn_id: int, types: frozenset[int]) -> None: ...
    def forget(self, conn_id: int) -> None: ...
    def candidates(self, item_type: int) -> list[int]:
        """Ids of who may take a notification of `item_type`: a copy, safe to iterate while delivering."""

class MatchDb:
    """A connection's match entries, in the order they were added."""

    entries: list[Entry]
    @property
    def subscribers(self) -> NotificationSubscribers | None: ...
    @property
    def owner_id(self) -> int | None: ...
    def __init__(self, subscribers: NotificationSubscribers | None = None,
                 owner_id: int | None = None) -> None: ...
    def add(self, cookie: int, items: list[ParsedItem], bloom_size: int, replace: bool) -> None: ...
    def remove(self, cookie: int) -> None: ...
    def notification_types(self) -> frozenset[int]:
        """The kernel notification types some entry of this database can select."""
    def match(self, msg: Staged, src: Connection) -> bool:
        """A signal or broadcast from `src`."""
    def match_kernel(self, item_type: int, payload: bytes) -> bool:
        """A kernel notification of `item_type` carrying `payload`."""

def selecting(connections: Iterable[Connection], msg: Staged, src: Connection) -> list[Connection]:
    """The connections among `connections` whose matches select `msg` from `src`, in order (the
    walk of kdbus_bus_broadcast over a bus's connections; only ordinary connections have matches)."""

def cmd_match_add(conn: Connection, args: Args[structs.CmdMatch], caller: Caller) -> None: ...
def cmd_match_remove(conn: Connection, args: Args[structs.CmdMatch], caller: Caller) -> None: ...
