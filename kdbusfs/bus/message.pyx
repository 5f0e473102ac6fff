# cython: language_level=3, boundscheck=False, wraparound=False
"""Messages: a SEND's kdbus_msg parsed, checked and staged once, to be laid out in each
receiver's pool by layout.pyx.

Payload bytes are read from the sender's memory straight into the first receiver's pool: one copy.
Further receivers (broadcasts, monitors) get theirs from a private copy read once more from the
sender, never from a pool: a client can write to its own pool mapping (FUSE cannot refuse a
writable shared mapping), so pool bytes are output only.

Compiled (issue 12: every SEND stages its message here): a staged message is a cdef class with its
header fields as C integers, and the items are taken in with the header and vec fields read and
written in place.
"""


from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from ..abi.fields cimport u64_at

import errno
import mmap
import struct
from collections.abc import Callable
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
_ITEM_HEADER = structs.ITEM_HEADER.struct
cdef Py_ssize_t _MSG_SIZE = structs.MSG.size
cdef Py_ssize_t _ITEM_HEADER_SIZE = structs.ITEM_HEADER_SIZE
cdef bytes _ZEROS = bytes(8)


cdef MsgOffsets msg_offsets():
    cdef dict at = structs.MSG.offsets
    cdef MsgOffsets offsets
    offsets.size = at["size"]
    offsets.flags = at["flags"]
    offsets.priority = at["priority"]
    offsets.dst_id = at["dst_id"]
    offsets.src_id = at["src_id"]
    offsets.payload_type = at["payload_type"]
    offsets.cookie = at["cookie"]
    offsets.timeout_ns = at["timeout_ns"]
    return offsets


cdef MsgOffsets _MSG_AT = msg_offsets()

# The item and vec fields, at their declared offsets.
cdef Py_ssize_t _ITEM_AT_SIZE = structs.ITEM_HEADER.offsets["size"]
cdef Py_ssize_t _ITEM_AT_TYPE = structs.ITEM_HEADER.offsets["type"]
cdef Py_ssize_t _VEC_AT_SIZE = structs.VEC.offsets["size"]
cdef Py_ssize_t _VEC_AT_ADDRESS = structs.VEC.offsets["address"]
cdef Py_ssize_t _VEC_ITEM_SIZE = structs.ITEM_HEADER_SIZE + structs.VEC.size
# A PAYLOAD_VEC as the receiver gets it: a PAYLOAD_OFF whose offset is filled in per receiver.
cdef bytes _EMPTY_OFF_ITEM = bytes(_VEC_ITEM_SIZE)

cdef uint64_t _PAYLOAD_VEC = Item.PAYLOAD_VEC
cdef uint64_t _PAYLOAD_OFF = Item.PAYLOAD_OFF
cdef uint64_t _PAYLOAD_MEMFD = Item.PAYLOAD_MEMFD
cdef uint64_t _FDS = Item.FDS
cdef uint64_t _BLOOM_FILTER = Item.BLOOM_FILTER
cdef uint64_t _DST_NAME = Item.DST_NAME
cdef uint64_t _EXPECT_REPLY = MSG_EXPECT_REPLY
cdef uint64_t _SIGNAL = MSG_SIGNAL
cdef uint64_t _FLAGS = MSG_FLAGS
cdef uint64_t _BROADCAST = DST_ID_BROADCAST
cdef uint64_t _SYNC_REPLY = SEND_SYNC_REPLY
cdef uint64_t _KERNEL_PAYLOAD = PAYLOAD_KERNEL
cdef uint64_t _MAX_VEC_TOTAL = limits.MSG_MAX_PAYLOAD_VEC_SIZE

# Where a message is laid out: a pool's mapping, or daemon-private bytes.
Buffer = mmap.mmap | bytearray
# Reads `size` bytes of the sender's memory at `address` into `buffer[offset:offset + size]`.
ReadInto = Callable[[int, int, Buffer, int], None]


cdef inline void _put_u64(bytearray buf, Py_ssize_t offset, uint64_t value) noexcept:
    """Write a u64 at `offset` of `buf`, which the caller has made long enough (native order, as
    fields.pxd's u64_at reads)."""
    memcpy(PyByteArray_AS_STRING(buf) + offset, &value, 8)


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


cdef class Passed:
    """The descriptors a message passes (FDS entries, then memfds, in item order), held by the
    daemon from SEND until every receiver that may get them has taken them at RECV (or can no
    more): the message while it is being sent, and each queue entry or call that got it."""

    def __init__(self, list fds not None, list slots not None, release, Py_ssize_t holders=1):
        self.fds = fds
        self.slots = slots
        self.release = release
        self.holders = holders

    def __repr__(self):
        return f"Passed(fds={self.fds!r}, slots={self.slots!r}, holders={self.holders})"

    def share(self):
        self.holders += 1
        return self

    def close(self):
        """One holder lets go; the last one closes the duplicates."""
        self.holders -= 1
        if self.holders == 0:
            fds, self.fds = self.fds, []
            if fds:
                self.release(fds)


cdef class Staged:
    """A message parsed and checked once, ready to be emitted into any number of pools (its fields
    are declared in message.pxd)."""

    def __init__(self, uint64_t flags, int64_t priority, uint64_t dst_id, uint64_t src_id,
                 uint64_t payload_type, uint64_t cookie, uint64_t timeout_or_reply, bytearray items=None):
        self.flags = flags
        self.priority = priority
        self.dst_id = dst_id
        self.src_id = src_id
        self.payload_type = payload_type
        self.cookie = cookie
        self.timeout_or_reply = timeout_or_reply
        self.items = bytearray() if items is None else items
        self.offsets = []
        self.vecs = []
        self.fd_slots = []

    def __repr__(self):
        return (f"Staged(flags={self.flags:#x}, dst_id={self.dst_id}, src_id={self.src_id}, "
                f"cookie={self.cookie}, timeout_or_reply={self.timeout_or_reply}, "
                f"items={bytes(self.items)!r})")

    def share_passed(self):
        """The held descriptors, for a receiver that may install them (one more holder)."""
        return self.passed.share() if self.passed is not None else None

    cpdef release_passed(self):
        """The message lets go of its descriptors: delivered (its receivers hold them) or failed."""
        if self.passed is not None:
            self.passed.close()
            self.passed = None

    @property
    def msg_size(self):
        return _MSG_SIZE + PyByteArray_GET_SIZE(self.items)

    @property
    def expects_reply(self):
        return (self.flags & _EXPECT_REPLY) != 0

    @property
    def is_signal(self):
        return (self.flags & _SIGNAL) != 0

    @property
    def is_broadcast(self):
        return self.dst_id == _BROADCAST

    @property
    def is_reply(self):
        return not (self.flags & _EXPECT_REPLY) and self.timeout_or_reply != 0


cdef class Parsed:
    """A sender's kdbus_msg past the generic checks (its struct, flags and item framing)."""

    def __init__(self, bytes data not None, uint64_t src_id, list found not None):
        self.data = data
        self.src_id = src_id
        self.found = found


def parse_user(bytes data not None):
    """The generic checks of a sender's kdbus_msg (already copied in, `data` = its `size` bytes),
    which kdbus makes before looking at anything else of the SEND (its CANCEL_FD, its src_id)."""
    if PyBytes_GET_SIZE(data) < _MSG_SIZE:
        structs.MSG.unpack(data)  # raises as for any short struct
    cdef uint64_t flags = u64_at(data, _MSG_AT.flags)
    if flags & ~_FLAGS:
        raise KdbusError(errno.EINVAL, f"unknown message flags {flags:#x}")
    return Parsed(data, u64_at(data, _MSG_AT.src_id), walk_message(data, _MSG_SIZE))


def stage_parsed(Parsed parsed not None, uint64_t cmd_flags, Py_ssize_t bloom_size, files=None):
    """Classify a parsed message and take in its items (descriptors included)."""
    cdef bytes data = parsed.data
    cdef Staged staged = Staged.__new__(Staged)
    staged.flags = u64_at(data, _MSG_AT.flags)
    staged.priority = <int64_t>u64_at(data, _MSG_AT.priority)
    staged.dst_id = u64_at(data, _MSG_AT.dst_id)
    staged.src_id = u64_at(data, _MSG_AT.src_id)
    staged.payload_type = u64_at(data, _MSG_AT.payload_type)
    staged.cookie = u64_at(data, _MSG_AT.cookie)
    staged.timeout_or_reply = u64_at(data, _MSG_AT.timeout_ns)
    staged.items = bytearray()
    staged.offsets = []
    staged.vecs = []
    staged.fd_slots = []
    _classify(staged, cmd_flags)
    try:
        _import_items(staged, data, parsed.found, bloom_size, files)
    except BaseException:
        staged.release_passed()
        raise
    return staged


def stage_user(bytes data not None, uint64_t cmd_flags, Py_ssize_t bloom_size, files=None):
    """Parse, check and stage a sender's kdbus_msg in one go."""
    return stage_parsed(parse_user(data), cmd_flags, bloom_size, files)


cdef int _classify(Staged msg, uint64_t cmd_flags) except -1:
    """The flag rules of KDBUS-SPEC.md §5.2, in kdbus's order."""
    cdef bint signal = (msg.flags & _SIGNAL) != 0
    if msg.payload_type == _KERNEL_PAYLOAD:
        raise KdbusError(errno.EINVAL, "payload type 0 is reserved for the kernel")
    if msg.dst_id == _BROADCAST:
        if not signal:
            raise KdbusError(errno.EBADMSG, "broadcast without the SIGNAL flag")
        if msg.timeout_or_reply:
            raise KdbusError(errno.ENOTUNIQ, "broadcast with a timeout")
    if msg.flags & _EXPECT_REPLY:
        if msg.timeout_or_reply == 0:
            raise KdbusError(errno.EINVAL, "EXPECT_REPLY without a timeout")
        if signal:
            raise KdbusError(errno.ENOTUNIQ, "EXPECT_REPLY on a signal")
    else:
        if cmd_flags & _SYNC_REPLY:
            raise KdbusError(errno.EINVAL, "SYNC_REPLY without EXPECT_REPLY")
        if msg.timeout_or_reply and signal:
            raise KdbusError(errno.EINVAL, "a reply cannot be a signal")
    return 0


cdef int _import_items(Staged msg, bytes data, list found, Py_ssize_t bloom_size, files) except -1:
    cdef uint64_t vec_total = 0, vec_size, address, kind
    cdef Py_ssize_t memfds = 0, offset, size, start, n, i
    cdef bytearray items = msg.items
    cdef tuple entry
    for entry in found:
        kind = entry[0]
        offset = entry[1]
        size = entry[2]
        start = PyByteArray_GET_SIZE(items)
        if kind == _PAYLOAD_VEC:
            vec_size = u64_at(data, offset + _ITEM_HEADER_SIZE + _VEC_AT_SIZE)
            address = u64_at(data, offset + _ITEM_HEADER_SIZE + _VEC_AT_ADDRESS)
            # vec_total stays within the limit, so this cannot wrap as vec_total + vec_size could.
            if vec_size > _MAX_VEC_TOTAL - vec_total:
                raise KdbusError(errno.EMSGSIZE, f"payload vectors exceed {limits.MSG_MAX_PAYLOAD_VEC_SIZE}")
            vec_total += vec_size
            # The walk accepts only whole vec items: `size` is _VEC_ITEM_SIZE, 8-aligned.
            items += _EMPTY_OFF_ITEM
            _put_u64(items, start + _ITEM_AT_SIZE, size)
            _put_u64(items, start + _ITEM_AT_TYPE, _PAYLOAD_OFF)
            _put_u64(items, start + _ITEM_HEADER_SIZE + _VEC_AT_SIZE, vec_size)
            if address:
                msg.offsets.append((start + _ITEM_HEADER_SIZE + _VEC_AT_ADDRESS, msg.n_payload))
                msg.vecs.append((msg.n_payload, address, vec_size))
                msg.n_payload += vec_size
            else:
                msg.offsets.append((start + _ITEM_HEADER_SIZE + _VEC_AT_ADDRESS, None))
                msg.n_payload += vec_size % 8
            continue
        parsed = ParsedItem(kind, offset, data[offset + _ITEM_HEADER_SIZE : offset + size])
        if kind == _PAYLOAD_MEMFD:
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
            items += data[offset : offset + size]
            msg.fd_slots.append(start + 16 + 16)
            # Keeps following vecs 8-aligned in the payload stream.
            msg.n_payload += memfd.size % 8
        elif kind == _FDS:
            n = len(parsed.payload) // 4
            if n > limits.CONN_MAX_FDS_PER_USER:
                raise KdbusError(errno.EMFILE, f"{n} fds, at most {limits.CONN_MAX_FDS_PER_USER}")
            msg.n_fds = n
            fds = list(struct.unpack_from(f"<{n}i", parsed.payload))
            if files is None:
                raise KdbusError(errno.EBADF, "no access to the sender's descriptors")
            sender = files()
            _hold(msg, sender, sender.check_fds(fds), [start + 16 + 4 * i for i in range(n)])
            items += data[offset : offset + size]
            msg.fd_slots.extend([start + 16 + 4 * i for i in range(n)])
        elif kind == _BLOOM_FILTER:
            if (len(parsed.payload) - 8) % 8:
                raise KdbusError(errno.EFAULT, "bloom filter not a multiple of 8 bytes")
            if len(parsed.payload) - 8 != bloom_size:
                raise KdbusError(errno.EDOM, f"bloom filter of {len(parsed.payload) - 8} bytes, bus uses "
                                             f"{bloom_size}")
            msg.bloom = parsed.payload
            items += data[offset : offset + size]
        elif kind == _DST_NAME:
            msg.dst_name = parsed.string
            items += data[offset : offset + size]
        items += _ZEROS[: -size & 7]
    cdef Py_ssize_t pad
    if found:
        # The message ends at the end of its last item, without that item's padding.
        pad = -(<Py_ssize_t>(<tuple>found[len(found) - 1])[2]) & 7
        if pad:
            del items[PyByteArray_GET_SIZE(items) - pad:]
    if (msg.bloom is not None) != ((msg.flags & _SIGNAL) != 0):
        raise KdbusError(errno.EBADMSG, "a signal needs a bloom filter, and only a signal may have one")
    if msg.dst_id == 0 and msg.dst_name is None:
        raise KdbusError(errno.EDESTADDRREQ, "no destination id and no DST_NAME")
    if msg.dst_id == _BROADCAST:
        if msg.n_fds:
            raise KdbusError(errno.ENOTUNIQ, "broadcasts cannot carry fds")
        if msg.dst_name is not None:
            raise KdbusError(errno.EBADMSG, "broadcast with a DST_NAME")
    return 0


cdef _hold(Staged msg, sender, list fds, list positions):
    """Keep the daemon's duplicates of passed descriptors with the message, in slot order."""
    if msg.passed is None:
        msg.passed = Passed([], [], sender.release)
    msg.passed.fds += fds
    msg.passed.slots += [_MSG_SIZE + pos for pos in positions]


def stage_kernel(uint64_t dst_id, uint64_t cookie_reply, uint64_t item_type, bytes payload not None = b""):
    """A kernel notification: one notification item (TIMESTAMP is added per receiver)."""
    size = _ITEM_HEADER_SIZE + len(payload)
    items = bytearray(_ITEM_HEADER.pack(size, item_type) + payload)
    return Staged(_SIGNAL if dst_id == _BROADCAST else 0, 0, dst_id, SRC_ID_KERNEL,
                  PAYLOAD_KERNEL, 0, cookie_reply, items)
