# cython: language_level=3, boundscheck=False, wraparound=False
"""The command struct copied from the caller (`Args`) and the copy itself (`copy_in`).

Compiled with the command frame (kdbusfs/dispatch.pyx), which builds an Args for every ioctl: the
header fields the frame checks (size, flags, return_flags) are read straight from the copied bytes
at the offsets structs.py derives from its declaration of kdbus_cmd, and the named tuple bodies
read (`fields`) is made only when one asks for it. What goes back is bytes from the start: a
struct no body changed (FREE, a negotiation-free BYEBYE, MATCH_REMOVE, ...) goes back as it came,
and the compiled bodies (SEND, RECV) set their fields in place.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy

from ..abi.fields cimport u64_at

import errno as _errno

from .. import limits
from ..abi import structs
from ..abi.constants import FLAG_NEGOTIATE
from ..errors import KdbusError

# Offsets of the header every command struct starts with, from its one declaration (structs.Cmd).
cdef Py_ssize_t _AT_SIZE = structs.CMD.offsets["size"]
cdef Py_ssize_t _AT_FLAGS = structs.CMD.offsets["flags"]
cdef Py_ssize_t _AT_RETURN_FLAGS = structs.CMD.offsets["return_flags"]
cdef Py_ssize_t _HEADER_SIZE = structs.CMD.size
cdef uint64_t _NEGOTIATE = FLAG_NEGOTIATE
cdef uint64_t _CMD_MAX_SIZE = limits.CMD_MAX_SIZE
cdef unsigned long long _PAGE = limits.PAGE_SIZE
# One read usually covers the whole struct: up to this much, within the page.
cdef Py_ssize_t _READ_AHEAD = 512


cdef class Args:
    """A command struct copied from the caller: its fixed part as the caller wrote it (`fields`)
    and as it goes back (`out`, which commands replace fields of by name), and its items.

    What goes back is kept as the bytes it will be written as: compiled bodies set a field with
    `put` (no tuple made, compared or packed), Python ones replace `out` as a named tuple."""

    def __init__(self, unsigned long long address, bytes data not None, layout, dict items not None):
        _fill(self, address, data, layout, layout.size, items)

    @classmethod
    def __class_getitem__(cls, item):
        # Args[structs.CmdSend] in annotations evaluated at run time: the class itself.
        return cls

    cdef object unpacked(self):
        if self._fields is None:
            self._fields = self.layout.unpack(self.data)
        return self._fields

    cdef unsigned long long return_flags_in(self):
        return u64_at(self.data, _AT_RETURN_FLAGS)

    cdef unsigned long long return_flags_out(self):
        if self._out is None:
            return u64_at(self.data, _AT_RETURN_FLAGS)
        return u64_at(<bytes>self._out, _AT_RETURN_FLAGS)

    cdef int put(self, Py_ssize_t offset, uint64_t value) except -1:
        """Set the u64 at `offset` of the fixed part going back."""
        if self._out is None or self._handed_out:
            # A fresh copy no one else holds, so filling it in place is safe.
            self._out = PyBytes_FromStringAndSize(
                PyBytes_AS_STRING(self.data if self._out is None else self._out), self.size)
            self._handed_out = False
        memcpy(PyBytes_AS_STRING(self._out) + offset, &value, 8)
        return 0

    cdef bint changed(self) except -1:
        """Whether the fixed part going back differs from what the caller wrote."""
        return self._out is not None and memcmp(PyBytes_AS_STRING(self._out), PyBytes_AS_STRING(self.data),
                                                self.size) != 0

    @property
    def fields(self):
        return self.unpacked()

    @property
    def out(self):
        return self.unpacked() if self._out is None else self.layout.unpack(self._out)

    @out.setter
    def out(self, value):
        self._out = self.layout.pack_fields(value)
        self._handed_out = True

    cpdef unsigned long long u64(self, str name) except? 0:
        """A u64 field of the fixed part as the caller wrote it, read straight from its bytes: no
        tuple is made for a body that needs one field (FREE's offset)."""
        return u64_at(self.data, self.layout.offsets[name])

    def item(self, item_type):
        found = self.items.get(item_type)
        return found[0] if found else None

    def fixed(self):
        """The fixed part to write back."""
        if self._out is not None:
            self._handed_out = True
            return self._out
        if PyBytes_GET_SIZE(self.data) == self.size:
            return self.data
        return self.data[:self.size]


cdef Args make_args(unsigned long long address, bytes data, object layout, Py_ssize_t size,
                    dict items):
    """Args(address, data, layout, items) for a frame that knows the layout's size: no Python-level
    construction (every ioctl makes one)."""
    cdef Args args = Args.__new__(Args)
    _fill(args, address, data, layout, size, items)
    return args


cdef int _fill(Args args, unsigned long long address, bytes data, object layout, Py_ssize_t size,
               dict items) except -1:
    if PyBytes_GET_SIZE(data) < _HEADER_SIZE:
        raise ValueError(f"{len(data)} bytes hold no command header")
    args.address = address
    args.data = data
    args.layout = layout
    args.items = items
    args.negotiate = (u64_at(data, _AT_FLAGS) & _NEGOTIATE) != 0
    args.size = size
    return 0


cpdef bytes copy_in(object caller, unsigned long long address, object layout, bytes in_data):
    """The whole command struct from the caller: aligned, at least the fixed part, at most 32 KiB.

    `in_data` is what FUSE already copied (the fixed part of an _IOW command), else empty."""
    cdef Py_ssize_t fixed = layout.size
    cdef bytes head
    cdef Py_ssize_t chunk
    cdef uint64_t size
    if address & 7:
        raise KdbusError(_errno.EFAULT, f"{layout.name} at unaligned address {address:#x}")
    if in_data is not None and PyBytes_GET_SIZE(in_data) >= 8:
        head = in_data
    else:
        chunk = max(fixed, min(_READ_AHEAD, <Py_ssize_t>(_PAGE - address % _PAGE)))
        try:
            head = bytes(caller.read(address, chunk))
        except KdbusError:
            try:
                head = bytes(caller.read(address, fixed))
            except KdbusError:
                head = bytes(caller.read(address, 8))
    if PyBytes_GET_SIZE(head) < _AT_SIZE + 8:
        raise ValueError(f"the caller's read of {layout.name} returned {len(head)} bytes")
    size = u64_at(head, _AT_SIZE)
    if size < <uint64_t>fixed:
        raise KdbusError(_errno.EINVAL, f"size {size} below the {fixed}-byte {layout.name}")
    if size > _CMD_MAX_SIZE:
        raise KdbusError(_errno.EMSGSIZE, f"size {size} above {_CMD_MAX_SIZE}")
    if size == <uint64_t>PyBytes_GET_SIZE(head):
        return head
    if size < <uint64_t>PyBytes_GET_SIZE(head):
        return head[:size]
    return head + bytes(caller.read(address + PyBytes_GET_SIZE(head), size - PyBytes_GET_SIZE(head)))
