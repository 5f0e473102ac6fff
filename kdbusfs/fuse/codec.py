"""FUSE requests from bytes and replies to bytes. No I/O: tested byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from . import protocol as p

# The frame of every message (compiled, frame.pyx), part of this module's interface.
from .frame import Header as Header
from .frame import ProtocolError as ProtocolError
from .frame import Request as Request
from .frame import ioctl_in as ioctl_in
from .frame import ioctl_out as ioctl_out
from .frame import notification as notification
from .frame import notify_poll as notify_poll
from .frame import parse_request as parse_request
from .frame import reply as reply
from .frame import reply_error as reply_error


def name_arg(body: memoryview) -> bytes:
    """A NUL-terminated name argument (LOOKUP)."""
    raw = bytes(body)
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


class Attr(NamedTuple):
    ino: int
    size: int
    mode: int
    nlink: int
    uid: int
    gid: int
    time_ns: int

    def pack(self) -> bytes:
        sec, nsec = divmod(self.time_ns, 1_000_000_000)
        return p.ATTR.pack(
            self.ino, self.size, 0, sec, sec, sec, nsec, nsec, nsec,
            self.mode, self.nlink, self.uid, self.gid, 0, 4096, 0,
        )


@dataclass(frozen=True, slots=True)
class Store:
    """A FUSE_NOTIFY_STORE message: its headers, then the bytes to store. Writing one may wait for
    a page lock that a READ holds until it is answered, so the session writes it off the serving
    thread.

    `data` is usually a view of the pool itself, written with writev as it is when the store goes
    out: copying it first costs the serving thread a fresh allocation per store (a 1 MiB message
    made it fault in and zero 2 x 257 pages, most of a call's time). Bytes that change before the
    write are stored by a later Store of the same pages, queued behind this one; until the ioctl
    that publishes them is answered (after this store) the client has no offset to look at."""

    head: bytes
    data: bytes | memoryview

    @property
    def message(self) -> bytes:
        """The whole message as one bytes object (tests, logs; the session writes the parts)."""
        return self.head + bytes(self.data)


@dataclass(frozen=True, slots=True)
class Watch:
    """A descriptor (a blocked call's CANCEL_FD) to watch for readability."""

    fd: int


@dataclass(frozen=True, slots=True)
class Unwatch:
    """A watched descriptor whose call is over: stop watching it, then close it."""

    fd: int


@dataclass(frozen=True, slots=True)
class Listen:
    """A seccomp listener to read notifications from until every task under it is gone."""

    fd: int


# What a server hands the session: FUSE messages, stores and actions to write or run in order
# (an action runs once everything before it has been written: the answer to a launched client's
# seccomp notification, which must follow the pool stores it depends on), and descriptors to
# start or stop watching.
Written = bytes | Store | Callable[[], None]
Output = Written | Watch | Unwatch | Listen


def entry_out(nodeid: int, attr: Attr, entry_valid_s: int = 0, attr_valid_s: int = 0) -> bytes:
    return p.ENTRY_OUT_HEAD.pack(nodeid, 0, entry_valid_s, attr_valid_s, 0, 0) + attr.pack()


def attr_out(attr: Attr, valid_s: int = 0) -> bytes:
    return p.ATTR_OUT_HEAD.pack(valid_s, 0, 0) + attr.pack()


def open_out(fh: int, open_flags: int, backing_id: int = 0) -> bytes:
    return p.OPEN_OUT.pack(fh, open_flags, backing_id)


def statfs_out(namelen: int = 255, bsize: int = 4096) -> bytes:
    return p.KSTATFS.pack(0, 0, 0, 0, 0, bsize, namelen, bsize, 0)


def dirent(ino: int, next_offset: int, name: bytes, dtype: int) -> bytes:
    head = p.DIRENT_HEAD.pack(ino, next_offset, len(name), dtype)
    size = len(head) + len(name)
    return head + name + b"\0" * (-size % 8)


def direntplus(entry: bytes, ino: int, next_offset: int, name: bytes, dtype: int) -> bytes:
    return entry + dirent(ino, next_offset, name, dtype)


class InitIn(NamedTuple):
    major: int
    minor: int
    max_readahead: int
    flags: int


def parse_init(body: memoryview) -> InitIn:
    """INIT's fields; `flags` holds all 64 bits when the kernel sends flags2 (INIT_EXT)."""
    major, minor, max_readahead, flags = p.INIT_IN.unpack_from(body)
    if flags & p.INIT_EXT and len(body) >= p.INIT_IN.size + 4:
        flags |= int.from_bytes(body[p.INIT_IN.size : p.INIT_IN.size + 4], "little") << 32
    return InitIn(major, minor, max_readahead, flags)


def init_out(kernel: InitIn, flags: int, max_write: int, max_readahead: int | None = None) -> bytes:
    minor = min(kernel.minor, p.KERNEL_MINOR_VERSION)
    flags &= kernel.flags
    if flags >> 32:
        flags |= p.INIT_EXT
    stack_depth = p.PASSTHROUGH_STACK_DEPTH if flags & p.PASSTHROUGH else 0
    out = p.INIT_OUT.pack(
        p.KERNEL_VERSION, minor, kernel.max_readahead if max_readahead is None else max_readahead,
        flags & 0xFFFF_FFFF, p.MAX_BACKGROUND, p.MAX_BACKGROUND, max_write, 1, 0, 0, flags >> 32,
        stack_depth,
    )
    # Kernels before 7.23 expect the short (24-byte) reply.
    return out if minor >= 23 else out[:24]


def notify_store(nodeid: int, offset: int, data: bytes | memoryview) -> Store:
    """A store of `data` at `offset`, not copied: a view must stay valid (and its bytes current)
    until the session has written it."""
    size = len(data)
    head = p.OUT_HEADER.pack(p.OUT_HEADER.size + p.NOTIFY_STORE.size + size, p.Notify.STORE, 0)
    return Store(head + p.NOTIFY_STORE.pack(nodeid, offset, size, 0), data)


def notify_inval_entry(parent: int, name: bytes) -> bytes:
    return notification(p.Notify.INVAL_ENTRY, p.NOTIFY_INVAL_ENTRY.pack(parent, len(name), 0) + name + b"\0")
