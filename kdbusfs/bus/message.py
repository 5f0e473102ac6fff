"""Messages: a SEND's kdbus_msg parsed, checked and staged once, to be laid out in each
receiver's pool by layout.py.

Payload bytes are read from the sender's memory straight into the first receiver's pool: one copy.
Further receivers (broadcasts, monitors) get theirs from a private copy read once more from the
sender, never from a pool: a client can write to its own pool mapping (FUSE cannot refuse a
writable shared mapping), so pool bytes are output only.
"""

from __future__ import annotations

import errno
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .. import limits
from ..abi import structs
from ..abi.constants import (
    DST_ID_BROADCAST,
    MSG_EXPECT_REPLY,
    MSG_NO_AUTO_START,
    MSG_SIGNAL,
    PAYLOAD_KERNEL,
    SEND_SYNC_REPLY,
    SRC_ID_KERNEL,
    Item,
)
from ..abi.walk import ParsedItem, walk_message
from ..errors import KdbusError

MSG_FLAGS = MSG_EXPECT_REPLY | MSG_NO_AUTO_START | MSG_SIGNAL
NULL_VEC_OFFSET = 0xFFFF_FFFF_FFFF_FFFF
_HEADER = structs.MSG.struct
_ITEM_HEADER = structs.ITEM_HEADER.struct
_VEC = structs.VEC.struct
_NO_FD = struct.Struct("<i")
_MSG_SIZE = structs.MSG.size
_ZEROS = bytes(8)

# Where a message is laid out: a pool's mapping, or daemon-private bytes.
Buffer = mmap.mmap | bytearray
# Reads `size` bytes of the sender's memory at `address` into `buffer[offset:offset + size]`.
ReadInto = Callable[[int, int, Buffer, int], None]


class SenderFiles(Protocol):
    """The sender's file descriptors, as the edge sees them (pidfd_getfd, fstat, seals)."""

    def check_fds(self, fds: list[int]) -> list[int]:
        """The daemon's duplicates of `fds`, in order; EBADF for a closed fd, EOPNOTSUPP for a kdbus
        fd or an AF_UNIX socket."""

    def check_memfd(self, fd: int, start: int, size: int) -> int:
        """The daemon's duplicate of the memfd; EBADF, EMEDIUMTYPE (not a memfd), ETXTBSY (not
        sealed), EFAULT (range past the end)."""

    def pollable(self, fd: int) -> int:
        """A duplicate of a CANCEL_FD to watch: EBADF if closed, EINVAL if it cannot be polled."""

    def release(self, held: list[int]) -> None:
        """Close duplicates that no receiver will get."""


@dataclass(slots=True, eq=False)
class Passed:
    """The descriptors a message passes (FDS entries, then memfds, in item order), held by the
    daemon from SEND until every receiver that may get them has taken them at RECV (or can no
    more): the message while it is being sent, and each queue entry or call that got it."""

    # The daemon's duplicates, and where in the message each one's number goes (offsets from the
    # start of the kdbus_msg in the receiver's slice).
    fds: list[int]
    slots: list[int]
    release: Callable[[list[int]], None]
    holders: int = 1

    def share(self) -> Passed:
        self.holders += 1
        return self

    def close(self) -> None:
        """One holder lets go; the last one closes the duplicates."""
        self.holders -= 1
        if self.holders == 0:
            fds, self.fds = self.fds, []
            if fds:
                self.release(fds)


@dataclass(slots=True, eq=False)
class Staged:
    """A message parsed and checked once, ready to be emitted into any number of pools."""

    flags: int
    priority: int
    dst_id: int
    src_id: int
    payload_type: int
    cookie: int
    timeout_or_reply: int
    # Header-less item bytes as the receiver gets them, up to the end of the last item (unpadded).
    items: bytearray = field(default_factory=bytearray)
    # (position of a PAYLOAD_OFF's offset field in `items`, stream offset or None for a NULL vec).
    offsets: list[tuple[int, int | None]] = field(default_factory=list)
    # Data vecs: (stream offset, sender address, size).
    vecs: list[tuple[int, int, int]] = field(default_factory=list)
    n_payload: int = 0
    bloom: bytes | None = None
    dst_name: str | None = None
    n_fds: int = 0
    # Positions in `items` of fd numbers the receiver gets (FDS entries, memfd fds): they read -1
    # (and RECV says INCOMPLETE_FDS) unless the receiver's RECV can install the `passed` ones.
    fd_slots: list[int] = field(default_factory=list)
    passed: Passed | None = None
    seqnum: int = 0
    timestamp: tuple[int, int, int] | None = None
    read_into: ReadInto | None = None
    # Whether a receiver got the payload straight from the sender; later ones get this private copy.
    payload_read: bool = False
    payload_copy: memoryview | None = None

    def share_passed(self) -> Passed | None:
        """The held descriptors, for a receiver that may install them (one more holder)."""
        return self.passed.share() if self.passed is not None else None

    def release_passed(self) -> None:
        """The message lets go of its descriptors: delivered (its receivers hold them) or failed."""
        if self.passed is not None:
            self.passed.close()
            self.passed = None

    @property
    def msg_size(self) -> int:
        return structs.MSG.size + len(self.items)

    @property
    def expects_reply(self) -> bool:
        return bool(self.flags & MSG_EXPECT_REPLY)

    @property
    def is_signal(self) -> bool:
        return bool(self.flags & MSG_SIGNAL)

    @property
    def is_broadcast(self) -> bool:
        return self.dst_id == DST_ID_BROADCAST

    @property
    def is_reply(self) -> bool:
        return not self.expects_reply and self.timeout_or_reply != 0


@dataclass(slots=True)
class Parsed:
    """A sender's kdbus_msg past the generic checks (its struct, flags and item framing)."""

    data: bytes
    fields: structs.Msg
    # Its items as (type, offset, size).
    found: list[tuple[int, int, int]]


def parse_user(data: bytes) -> Parsed:
    """The generic checks of a sender's kdbus_msg (already copied in, `data` = its `size` bytes),
    which kdbus makes before looking at anything else of the SEND (its CANCEL_FD, its src_id)."""
    fields = structs.MSG.unpack(data)
    if fields.flags & ~MSG_FLAGS:
        raise KdbusError(errno.EINVAL, f"unknown message flags {fields.flags:#x}")
    return Parsed(data, fields, walk_message(data, _MSG_SIZE))


def stage_parsed(parsed: Parsed, cmd_flags: int, bloom_size: int,
                 files: Callable[[], SenderFiles] | None = None) -> Staged:
    """Classify a parsed message and take in its items (descriptors included)."""
    fields = parsed.fields
    staged = Staged(fields.flags, fields.priority, fields.dst_id, fields.src_id, fields.payload_type,
                    fields.cookie, fields.timeout_ns)
    _classify(staged, cmd_flags)
    try:
        _import_items(staged, parsed.data, parsed.found, bloom_size, files)
    except BaseException:
        staged.release_passed()
        raise
    return staged


def stage_user(data: bytes, cmd_flags: int, bloom_size: int,
               files: Callable[[], SenderFiles] | None = None) -> Staged:
    """Parse, check and stage a sender's kdbus_msg in one go."""
    return stage_parsed(parse_user(data), cmd_flags, bloom_size, files)


def _classify(msg: Staged, cmd_flags: int) -> None:
    """The flag rules of KDBUS-SPEC.md §5.2, in kdbus's order."""
    if msg.payload_type == PAYLOAD_KERNEL:
        raise KdbusError(errno.EINVAL, "payload type 0 is reserved for the kernel")
    if msg.is_broadcast:
        if not msg.is_signal:
            raise KdbusError(errno.EBADMSG, "broadcast without the SIGNAL flag")
        if msg.timeout_or_reply:
            raise KdbusError(errno.ENOTUNIQ, "broadcast with a timeout")
    if msg.expects_reply:
        if msg.timeout_or_reply == 0:
            raise KdbusError(errno.EINVAL, "EXPECT_REPLY without a timeout")
        if msg.is_signal:
            raise KdbusError(errno.ENOTUNIQ, "EXPECT_REPLY on a signal")
    else:
        if cmd_flags & SEND_SYNC_REPLY:
            raise KdbusError(errno.EINVAL, "SYNC_REPLY without EXPECT_REPLY")
        if msg.timeout_or_reply and msg.is_signal:
            raise KdbusError(errno.EINVAL, "a reply cannot be a signal")


def _import_items(msg: Staged, data: bytes, found: list[tuple[int, int, int]], bloom_size: int,
                  files: Callable[[], SenderFiles] | None) -> None:
    vec_total = 0
    memfds = 0
    items = msg.items
    for kind, offset, size in found:
        start = len(items)
        if kind == Item.PAYLOAD_VEC:
            vec_size, address = _VEC.unpack_from(data, offset + 16)
            vec_total += vec_size
            if vec_total > limits.MSG_MAX_PAYLOAD_VEC_SIZE:
                raise KdbusError(errno.EMSGSIZE, f"payload vectors exceed {limits.MSG_MAX_PAYLOAD_VEC_SIZE}")
            items += _ITEM_HEADER.pack(size, Item.PAYLOAD_OFF) + _VEC.pack(vec_size, 0)
            if address:
                msg.offsets.append((start + 24, msg.n_payload))
                msg.vecs.append((msg.n_payload, address, vec_size))
                msg.n_payload += vec_size
            else:
                msg.offsets.append((start + 24, None))
                msg.n_payload += vec_size % 8
            items += _ZEROS[: -size & 7]
            continue
        parsed = ParsedItem(kind, offset, data[offset + 16 : offset + size])
        if kind == Item.PAYLOAD_MEMFD:
            memfds += 1
            if memfds > limits.MSG_MAX_MEMFD_ITEMS:
                raise KdbusError(errno.E2BIG, f"more than {limits.MSG_MAX_MEMFD_ITEMS} memfds")
            memfd = structs.MEMFD.unpack(parsed.payload)
            if memfd.start + memfd.size >= 1 << 64:
                raise KdbusError(errno.EMSGSIZE, "memfd range overflows")
            if files is None:
                raise KdbusError(errno.EBADF, "no access to the sender's descriptors")
            sender = files()
            _hold(msg, sender, [sender.check_memfd(memfd.fd, memfd.start, memfd.size)], [start + 16 + 16])
            items += data[parsed.offset : parsed.offset + size]
            msg.fd_slots.append(start + 16 + 16)
            # Keeps following vecs 8-aligned in the payload stream.
            msg.n_payload += memfd.size % 8
        elif kind == Item.FDS:
            n = len(parsed.payload) // 4
            if n > limits.CONN_MAX_FDS_PER_USER:
                raise KdbusError(errno.EMFILE, f"{n} fds, at most {limits.CONN_MAX_FDS_PER_USER}")
            msg.n_fds = n
            fds = list(struct.unpack_from(f"<{n}i", parsed.payload))
            if files is None:
                raise KdbusError(errno.EBADF, "no access to the sender's descriptors")
            sender = files()
            _hold(msg, sender, sender.check_fds(fds), [start + 16 + 4 * i for i in range(n)])
            items += data[parsed.offset : parsed.offset + size]
            msg.fd_slots.extend(start + 16 + 4 * i for i in range(n))
        elif kind == Item.BLOOM_FILTER:
            if (len(parsed.payload) - 8) % 8:
                raise KdbusError(errno.EFAULT, "bloom filter not a multiple of 8 bytes")
            if len(parsed.payload) - 8 != bloom_size:
                raise KdbusError(errno.EDOM, f"bloom filter of {len(parsed.payload) - 8} bytes, bus uses "
                                             f"{bloom_size}")
            msg.bloom = parsed.payload
            items += data[parsed.offset : parsed.offset + size]
        elif kind == Item.DST_NAME:
            msg.dst_name = parsed.string
            items += data[parsed.offset : parsed.offset + size]
        items += _ZEROS[: -size & 7]
    if found:
        # The message ends at the end of its last item, without that item's padding.
        pad = -found[-1][2] & 7
        if pad:
            del items[-pad:]
    if (msg.bloom is not None) != msg.is_signal:
        raise KdbusError(errno.EBADMSG, "a signal needs a bloom filter, and only a signal may have one")
    if msg.dst_id == 0 and msg.dst_name is None:
        raise KdbusError(errno.EDESTADDRREQ, "no destination id and no DST_NAME")
    if msg.is_broadcast:
        if msg.n_fds:
            raise KdbusError(errno.ENOTUNIQ, "broadcasts cannot carry fds")
        if msg.dst_name is not None:
            raise KdbusError(errno.EBADMSG, "broadcast with a DST_NAME")


def _hold(msg: Staged, sender: SenderFiles, fds: list[int], positions: list[int]) -> None:
    """Keep the daemon's duplicates of passed descriptors with the message, in slot order."""
    if msg.passed is None:
        msg.passed = Passed([], [], sender.release)
    msg.passed.fds += fds
    msg.passed.slots += [_MSG_SIZE + pos for pos in positions]


def stage_kernel(dst_id: int, cookie_reply: int, item_type: int, payload: bytes = b"") -> Staged:
    """A kernel notification: one notification item (TIMESTAMP is added per receiver)."""
    size = structs.ITEM_HEADER_SIZE + len(payload)
    items = bytearray(_ITEM_HEADER.pack(size, item_type) + payload)
    return Staged(MSG_SIGNAL if dst_id == DST_ID_BROADCAST else 0, 0, dst_id, SRC_ID_KERNEL,
                  PAYLOAD_KERNEL, 0, cookie_reply, items)
