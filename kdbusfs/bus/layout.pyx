# cython: language_level=3, boundscheck=False, wraparound=False
"""Laying a staged message out in one receiver's slice.

What a receiver finds in its slice (KDBUS-SPEC.md §5.10):

    kdbus_msg header (64)       size = header + items (+ metadata), src_id = sender
    the sender's items          PAYLOAD_VEC rewritten to PAYLOAD_OFF {size, offset from slice start}
    zero padding to 8
    metadata items              chosen per receiver, so payload offsets differ per receiver
    zero padding to 8
    payload stream              data vecs back to back; size % 8 zeros per NULL vec and per memfd
    zero padding to 8

The first receiver's payload is read from the sender's memory straight into its pool; later ones
get theirs from a private copy (message.pyx says why never from a pool).

Compiled (issue 12: every delivery lays its message out here): the header, items, receiver-specific
values and zero padding are written through one pointer into the slice.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint64_t
from libc.string cimport memcpy, memset

from ..abi.fields cimport u64_at
from .message cimport MsgOffsets, Staged, msg_offsets
from .pool cimport Pool

from ..abi import structs
from .message import NULL_VEC_OFFSET

cdef Py_ssize_t _MSG_SIZE = structs.MSG.size
cdef MsgOffsets _MSG_AT = msg_offsets()
cdef uint64_t _NULL_VEC_OFFSET = NULL_VEC_OFFSET
# render() writes each header field as a u64 (priority, an s64, as the same bytes).
if structs.MSG.struct.format != "<QQqQQQQQ":
    raise ImportError(f"layout.pyx writes a kdbus_msg of 8 u64 fields, not {structs.MSG.struct.format}")


cdef inline Py_ssize_t _align8(Py_ssize_t n) noexcept:
    return (n + 7) & ~(<Py_ssize_t>7)


cdef inline void _put_u64(char *at, uint64_t value) noexcept:
    # Native order, as fields.pxd's u64_at reads; memcpy as slices need not be aligned in memory.
    memcpy(at, &value, 8)


cpdef tuple layout_size(Staged msg, meta, Py_ssize_t meta_pad):
    """(kdbus_msg.size, payload start, slice size) for a receiver getting `meta`."""
    cdef Py_ssize_t msg_size = _MSG_SIZE + PyByteArray_GET_SIZE(msg.items)
    if meta:
        msg_size = _align8(msg_size) + len(meta) - meta_pad
    cdef Py_ssize_t payload_start = _align8(msg_size)
    cdef Py_ssize_t size = payload_start
    if msg.n_payload:
        size = _align8(size + msg.n_payload)
    return msg_size, payload_start, size


cpdef Py_ssize_t last_item_padding(items) except -1:
    """Padding bytes after the last of a run of padded items (kdbus sizes end unpadded)."""
    cdef bytes raw = items if type(items) is bytes else bytes(items)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(raw)
    cdef Py_ssize_t pos = 0, nxt
    cdef uint64_t size
    if not end:
        return 0
    while True:
        if pos + 8 > end:
            size = int.from_bytes(raw[pos : pos + 8], "little")
        else:
            size = u64_at(raw, pos)
        nxt = pos + <Py_ssize_t>((size + 7) & ~(<uint64_t>7))
        if nxt >= end:
            return nxt - (pos + <Py_ssize_t>size)
        pos = nxt


cpdef tuple layout_for(Staged msg, meta):
    """layout_size() for a receiver getting the metadata items `meta` (each padded to 8)."""
    return layout_size(msg, meta, last_item_padding(meta) if meta else 0)


def write(Staged msg, Pool pool, Py_ssize_t offset, meta, tuple layout):
    """Lay the message out in `pool` at `offset` (the slice is allocated and large enough);
    `layout` is what layout_size() says for this receiver."""
    render(msg, pool.buffer, offset, meta, layout)
    pool.touched(offset, offset + <Py_ssize_t>layout[2])


cpdef render(Staged msg, buf, Py_ssize_t offset, meta, tuple layout):
    """write() into any buffer: a pool, or daemon-private bytes a message is kept in."""
    cdef Py_ssize_t msg_size = layout[0], payload_start = layout[1], size = layout[2]
    cdef bytearray items = msg.items
    cdef Py_ssize_t n_items = PyByteArray_GET_SIZE(items)
    cdef bytes meta_bytes = meta if type(meta) is bytes else bytes(meta)
    cdef Py_ssize_t n_meta = PyBytes_GET_SIZE(meta_bytes)
    cdef Py_ssize_t items_at, end_items, meta_at, payload_at, zero_from, start, length, stream
    cdef tuple entry
    cdef int32_t no_fd = -1
    cdef char *at
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    try:
        if offset < 0 or offset + size > view.len:
            raise AssertionError(f"a slice of {size} bytes at {offset} past the end of a {view.len}-byte buffer")
        at = <char *>view.buf + offset
        _put_u64(at + _MSG_AT.size, msg_size)
        _put_u64(at + _MSG_AT.flags, msg.flags)
        _put_u64(at + _MSG_AT.priority, <uint64_t>msg.priority)
        _put_u64(at + _MSG_AT.dst_id, msg.dst_id)
        _put_u64(at + _MSG_AT.src_id, msg.src_id)
        _put_u64(at + _MSG_AT.payload_type, msg.payload_type)
        _put_u64(at + _MSG_AT.cookie, msg.cookie)
        _put_u64(at + _MSG_AT.timeout_ns, msg.timeout_or_reply)
        items_at = _MSG_SIZE
        end_items = items_at + n_items
        memcpy(at + items_at, PyByteArray_AS_STRING(items), n_items)
        # Receiver-specific values go straight into the pool: payload offsets, fds it cannot get.
        for entry in msg.offsets:
            _put_u64(at + items_at + <Py_ssize_t>entry[0],
                     _NULL_VEC_OFFSET if entry[1] is None else <uint64_t>(payload_start + <Py_ssize_t>entry[1]))
        for pos in msg.fd_slots:
            memcpy(at + items_at + <Py_ssize_t>pos, &no_fd, 4)
        meta_at = _align8(end_items)
        memset(at + end_items, 0, meta_at - end_items)
        memcpy(at + meta_at, PyBytes_AS_STRING(meta_bytes), n_meta)
        if msg.n_payload:
            # Only what no data vec covers is zeroed (NULL vecs' and memfds' padding, the tail): a
            # slice may hold an earlier message's bytes, and big payloads should be written once.
            payload_at = payload_start
            zero_from = payload_at
            for entry in msg.vecs:
                stream = entry[0]
                length = entry[2]
                start = payload_at + stream
                if start > zero_from:
                    memset(at + zero_from, 0, start - zero_from)
                zero_from = start + length
            if size > zero_from:
                memset(at + zero_from, 0, size - zero_from)
    finally:
        PyBuffer_Release(&view)
    if msg.n_payload and msg.vecs:
        _copy_payload(msg, buf, offset + payload_start)


cdef _copy_payload(Staged msg, buf, Py_ssize_t payload_at):
    """The data vecs into `buf`: the first receiver's straight from the sender, later ones from a
    private copy (never from an earlier receiver's pool, which that receiver can write to)."""
    copy = msg.payload_copy
    if copy is None:
        read_into = msg.read_into
        if read_into is None:
            raise AssertionError("a message with data vecs and no sender memory")
        if not msg.payload_read:
            msg.payload_read = True
            for stream, address, length in msg.vecs:
                read_into(address, length, buf, payload_at + stream)
            return
        private = bytearray(msg.n_payload)
        for stream, address, length in msg.vecs:
            read_into(address, length, private, stream)
        copy = msg.payload_copy = memoryview(private)
    # render() has checked that the slice, and so every vec's place in it, lies inside `buf`; the
    # private copy holds the whole payload stream.
    cdef Py_buffer into, source
    cdef tuple vec
    cdef Py_ssize_t stream_at
    PyObject_GetBuffer(buf, &into, PyBUF_WRITABLE)
    try:
        PyObject_GetBuffer(copy, &source, PyBUF_SIMPLE)
        try:
            for vec in msg.vecs:
                stream_at = vec[0]
                memcpy(<char *>into.buf + payload_at + stream_at, <char *>source.buf + stream_at,
                       <Py_ssize_t>vec[2])
        finally:
            PyBuffer_Release(&source)
    finally:
        PyBuffer_Release(&into)
