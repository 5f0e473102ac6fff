# The interface of queue.pyx (compiled), for type checkers.
from ..errors import LimitReached
from .message import Passed, Staged
from .pool import Pool, Slice
from .reply import Reply

KERNEL_USER: int
BY_POOL_SIZE: str

class Entry:
    """A message queued in a receiver: laid out in its pool, waiting for RECV."""

    slice: Slice
    priority: int
    src_id: int
    cookie: int
    user_key: int
    fds: int
    reply: Reply | None
    name_id: int | None
    expects_reply: bool
    seq: int
    peeked: bool
    incomplete_fds: bool
    kept: bytearray | None
    passed: Passed | None
    payload: int
    def __init__(self, slice: Slice, priority: int, src_id: int, cookie: int, user_key: int, fds: int = 0,
                 reply: Reply | None = None, name_id: int | None = None, expects_reply: bool = False,
                 seq: int = 0, peeked: bool = False, incomplete_fds: bool = False,
                 kept: bytearray | None = None, passed: Passed | None = None, payload: int = 0) -> None: ...
    def drop_passed(self) -> None: ...

class UserQuota:
    memory: int
    msgs: int
    fds: int
    def __init__(self, memory: int = 0, msgs: int = 0, fds: int = 0) -> None: ...

class Quotas:
    """Each sending user's share of one receiver's pool (kdbus_conn_quota_inc)."""

    owner_id: int
    users: dict[int, UserQuota]
    def __init__(self, owner_id: int, users: dict[int, UserQuota] | None = None) -> None: ...
    def __getitem__(self, user_key: int) -> UserQuota: ...
    def charge(self, pool: Pool, user_key: int, size: int, fds: int) -> UserQuota: ...
    def uncharge(self, user_key: int, size: int, fds: int) -> None: ...
    def error(self, err: int, why: str, user_key: int, limit: str, value: int,
              raised_by: str) -> LimitReached: ...
    def clear(self) -> None: ...

class Queue:
    """FIFO order plus an index by priority."""

    entries: dict[int, Entry]
    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def insert(self, quota: Quotas, pool: Pool, msg: Staged, meta: bytes, user_key: int,
               reply: Reply | None = None, name_id: int | None = None, keep: bool = False) -> Entry:
        """Charge `msg` to `user_key` in `quota`, lay it out in a slice of `pool` for a receiver
        getting the metadata items `meta`, and queue it (kdbus_conn_entry_insert). With `keep`, the
        entry holds the daemon's own copy of the bytes as well."""
    def add(self, entry: Entry) -> None: ...
    def peek(self, priority: int | None = None) -> Entry | None:
        """The next entry; with `priority`, the most urgent one if it is at most that."""
    def remove(self, entry: Entry) -> None: ...
    def drain(self) -> list[Entry]: ...
