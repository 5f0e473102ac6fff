# The interface of message.pyx (compiled), for type checkers.
import mmap
from collections.abc import Callable
from typing import Protocol

MSG_FLAGS: int
NULL_VEC_OFFSET: int

# Where a message is laid out: a pool's mapping, or daemon-private bytes.
Buffer = mmap.mmap | bytearray
# Reads `size` bytes of the sender's memory at `address` into `buffer[offset:offset + size]`.
ReadInto = Callable[[int, int, Buffer, int], None]

class SenderFiles(Protocol):
    """The sender's file descriptors, as the edge sees them (pidfd_getfd, fstat, seals)."""

    def check_fds(self, fds: list[int]) -> list[int]: ...
    def check_memfd(self, fd: int, start: int, size: int) -> int: ...
    def pollable(self, fd: int) -> int: ...
    def release(self, held: list[int]) -> None: ...

class Passed:
    """The descriptors a message passes, held by the daemon from SEND until every receiver that
    may get them has taken them at RECV (or can no more)."""

    fds: list[int]
    slots: list[int]
    release: Callable[[list[int]], None]
    holders: int
    def __init__(self, fds: list[int], slots: list[int], release: Callable[[list[int]], None],
                 holders: int = 1) -> None: ...
    def share(self) -> Passed: ...
    def close(self) -> None:
        """One holder lets go; the last one closes the duplicates."""

class Staged:
    """A message parsed and checked once, ready to be emitted into any number of pools."""

    flags: int
    priority: int
    dst_id: int
    src_id: int
    payload_type: int
    cookie: int
    timeout_or_reply: int
    items: bytearray
    offsets: list[tuple[int, int | None]]
    vecs: list[tuple[int, int, int]]
    n_payload: int
    bloom: bytes | None
    dst_name: str | None
    n_fds: int
    fd_slots: list[int]
    passed: Passed | None
    seqnum: int
    timestamp: tuple[int, int, int] | None
    read_into: ReadInto | None
    payload_read: bool
    payload_copy: memoryview | None
    def __init__(self, flags: int, priority: int, dst_id: int, src_id: int, payload_type: int,
                 cookie: int, timeout_or_reply: int, items: bytearray | None = None) -> None: ...
    def share_passed(self) -> Passed | None:
        """The held descriptors, for a receiver that may install them (one more holder)."""
    def release_passed(self) -> None:
        """The message lets go of its descriptors: delivered (its receivers hold them) or failed."""
    @property
    def msg_size(self) -> int: ...
    @property
    def expects_reply(self) -> bool: ...
    @property
    def is_signal(self) -> bool: ...
    @property
    def is_broadcast(self) -> bool: ...
    @property
    def is_reply(self) -> bool: ...

class Parsed:
    """A sender's kdbus_msg past the generic checks (its struct, flags and item framing)."""

    @property
    def data(self) -> bytes: ...
    @property
    def src_id(self) -> int: ...
    @property
    def found(self) -> list[tuple[int, int, int]]:
        """Its items as (type, offset, size)."""
    def __init__(self, data: bytes, src_id: int, found: list[tuple[int, int, int]]) -> None: ...

def parse_user(data: bytes) -> Parsed:
    """The generic checks of a sender's kdbus_msg (already copied in, `data` = its `size` bytes)."""

def stage_parsed(parsed: Parsed, cmd_flags: int, bloom_size: int,
                 files: Callable[[], SenderFiles] | None = None) -> Staged:
    """Classify a parsed message and take in its items (descriptors included)."""

def stage_user(data: bytes, cmd_flags: int, bloom_size: int,
               files: Callable[[], SenderFiles] | None = None) -> Staged:
    """Parse, check and stage a sender's kdbus_msg in one go."""

def stage_kernel(dst_id: int, cookie_reply: int, item_type: int, payload: bytes = b"") -> Staged:
    """A kernel notification: one notification item (TIMESTAMP is added per receiver)."""
