# cython: language_level=3, boundscheck=False, wraparound=False
"""The FUSE message frame: a request's header read, a reply's header written. No I/O.

Compiled: every request of every client passes here, and in Python the header alone (a struct
unpack, a named tuple, a view, the reply's concatenation) cost about 1.6 us a request. The field
offsets are protocol.py's, derived from its one declaration of each header.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from . import protocol as p

cdef Py_ssize_t _IN_SIZE = p.IN_HEADER.size
cdef Py_ssize_t _AT_LEN = p.IN_HEADER_AT["len"]
cdef Py_ssize_t _AT_OPCODE = p.IN_HEADER_AT["opcode"]
cdef Py_ssize_t _AT_UNIQUE = p.IN_HEADER_AT["unique"]
cdef Py_ssize_t _AT_NODEID = p.IN_HEADER_AT["nodeid"]
cdef Py_ssize_t _AT_UID = p.IN_HEADER_AT["uid"]
cdef Py_ssize_t _AT_GID = p.IN_HEADER_AT["gid"]
cdef Py_ssize_t _AT_PID = p.IN_HEADER_AT["pid"]
cdef Py_ssize_t _AT_EXTLEN = p.IN_HEADER_AT["total_extlen"]
cdef Py_ssize_t _OUT_SIZE = p.OUT_HEADER.size
cdef Py_ssize_t _OUT_LEN = p.OUT_HEADER_AT["len"]
cdef Py_ssize_t _OUT_ERROR = p.OUT_HEADER_AT["error"]
cdef Py_ssize_t _OUT_UNIQUE = p.OUT_HEADER_AT["unique"]
cdef Py_ssize_t _IOCTL_IN_SIZE = p.IOCTL_IN.size
cdef Py_ssize_t _IOCTL_FH = p.IOCTL_IN_AT["fh"]
cdef Py_ssize_t _IOCTL_FLAGS = p.IOCTL_IN_AT["flags"]
cdef Py_ssize_t _IOCTL_CMD = p.IOCTL_IN_AT["cmd"]
cdef Py_ssize_t _IOCTL_ARG = p.IOCTL_IN_AT["arg"]
cdef Py_ssize_t _IOCTL_IN_LEN = p.IOCTL_IN_AT["in_size"]
cdef Py_ssize_t _POLL_IN_SIZE = p.POLL_IN.size
cdef Py_ssize_t _POLL_FH = p.POLL_IN_AT["fh"]
cdef Py_ssize_t _POLL_KH = p.POLL_IN_AT["kh"]
cdef Py_ssize_t _POLL_FLAGS = p.POLL_IN_AT["flags"]
cdef Py_ssize_t _POLL_OUT_SIZE = p.POLL_OUT.size
cdef Py_ssize_t _POLL_REVENTS = p.POLL_OUT_AT["revents"]
cdef int32_t _NOTIFY_POLL = p.Notify.POLL
cdef Py_ssize_t _NOTIFY_POLL_SIZE = p.NOTIFY_POLL.size
cdef Py_ssize_t _IOCTL_OUT_SIZE = p.IOCTL_OUT.size
cdef Py_ssize_t _IOCTL_RESULT = p.IOCTL_OUT_AT["result"]


class ProtocolError(Exception):
    """The kernel sent something this codec cannot read."""


cdef class Header:
    """The fields of struct fuse_in_header a server looks at (declared in frame.pxd)."""

    def __init__(self, uint32_t length, uint32_t opcode, uint64_t unique, uint64_t nodeid,
                 uint32_t uid, uint32_t gid, uint32_t pid):
        self.length, self.opcode, self.unique, self.nodeid = length, opcode, unique, nodeid
        self.uid, self.gid, self.pid = uid, gid, pid

    def _fields(self):
        return (self.length, self.opcode, self.unique, self.nodeid, self.uid, self.gid, self.pid)

    def __eq__(self, other):
        if not isinstance(other, Header):
            return NotImplemented
        return self._fields() == (<Header>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return (f"Header(length={self.length}, opcode={self.opcode}, unique={self.unique}, "
                f"nodeid={self.nodeid}, uid={self.uid}, gid={self.gid}, pid={self.pid})")


cdef class Request:
    """One request: its header and the body after it (extensions cut off; frame.pxd)."""

    def __init__(self, Header header, body):
        self.header = header
        self.body = body
        self.opcode = header.opcode
        self.unique = header.unique


def parse_request(buf):
    """The request in `buf` (exactly its bytes, as one read returned them)."""
    cdef Py_buffer raw
    cdef Header header = Header.__new__(Header)
    cdef Request request
    cdef uint16_t extlen
    cdef Py_ssize_t size, end
    cdef const char *at
    PyObject_GetBuffer(buf, &raw, PyBUF_SIMPLE)
    try:
        size = raw.len
        if size < _IN_SIZE:
            raise ProtocolError(f"request of {size} bytes is shorter than its header")
        at = <const char *>raw.buf
        memcpy(&header.length, at + _AT_LEN, 4)
        memcpy(&header.opcode, at + _AT_OPCODE, 4)
        memcpy(&header.unique, at + _AT_UNIQUE, 8)
        memcpy(&header.nodeid, at + _AT_NODEID, 8)
        memcpy(&header.uid, at + _AT_UID, 4)
        memcpy(&header.gid, at + _AT_GID, 4)
        memcpy(&header.pid, at + _AT_PID, 4)
        memcpy(&extlen, at + _AT_EXTLEN, 2)
    finally:
        PyBuffer_Release(&raw)
    if header.length != size:
        raise ProtocolError(f"header says {header.length} bytes, read {size}")
    end = size - <Py_ssize_t>extlen * 8
    if end < _IN_SIZE:
        raise ProtocolError(f"extensions of {extlen * 8} bytes do not fit a {size}-byte request")
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    request = Request.__new__(Request)
    request.header = header
    request.body = view[_IN_SIZE:end]
    request.opcode = header.opcode
    request.unique = header.unique
    return request


cdef bytes _out(uint64_t unique, int32_t error, const char *payload, Py_ssize_t size):
    cdef uint32_t length = <uint32_t>(_OUT_SIZE + size)
    message = PyBytes_FromStringAndSize(NULL, _OUT_SIZE + size)
    cdef char *at = PyBytes_AS_STRING(message)
    memcpy(at + _OUT_LEN, &length, 4)
    memcpy(at + _OUT_ERROR, &error, 4)
    memcpy(at + _OUT_UNIQUE, &unique, 8)
    if size:
        memcpy(at + _OUT_SIZE, payload, size)
    return message


cdef bytes ioctl_answer(uint64_t unique, bytes data):
    """The reply to FUSE_IOCTL `unique`: success, with `data` to copy over the caller's struct."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef uint32_t length = <uint32_t>(_OUT_SIZE + _IOCTL_OUT_SIZE + size)
    cdef int32_t zero = 0
    cdef bytes message = PyBytes_FromStringAndSize(NULL, length)
    cdef char *at = PyBytes_AS_STRING(message)
    memcpy(at + _OUT_LEN, &length, 4)
    memcpy(at + _OUT_ERROR, &zero, 4)
    memcpy(at + _OUT_UNIQUE, &unique, 8)
    memset(at + _OUT_SIZE, 0, _IOCTL_OUT_SIZE)
    if size:
        memcpy(at + _OUT_SIZE + _IOCTL_OUT_SIZE, PyBytes_AS_STRING(data), size)
    return message


def reply(uint64_t unique, payload=b""):
    """A successful reply to request `unique` carrying `payload` (any bytes-like object)."""
    cdef Py_buffer raw
    PyObject_GetBuffer(payload, &raw, PyBUF_SIMPLE)
    try:
        return _out(unique, 0, <const char *>raw.buf, raw.len)
    finally:
        PyBuffer_Release(&raw)


def reply_error(uint64_t unique, int err):
    """A failed reply: the kernel hands -err to the caller."""
    return _out(unique, -err, NULL, 0)


def notification(int32_t code, payload):
    """A notification: a reply with unique 0 and the notify code in the error field."""
    cdef Py_buffer raw
    PyObject_GetBuffer(payload, &raw, PyBUF_SIMPLE)
    try:
        return _out(0, code, <const char *>raw.buf, raw.len)
    finally:
        PyBuffer_Release(&raw)


cdef bytes ioctl_args(object body, IoctlArgs *args):
    """FUSE_IOCTL's arguments into `args`; returns the input data the kernel copied in."""
    cdef Py_buffer raw
    cdef uint32_t in_size
    cdef const char *at
    PyObject_GetBuffer(body, &raw, PyBUF_SIMPLE)
    try:
        if raw.len < _IOCTL_IN_SIZE:
            raise ProtocolError(f"FUSE_IOCTL of {raw.len} bytes is shorter than its arguments")
        at = <const char *>raw.buf
        memcpy(&args.fh, at + _IOCTL_FH, 8)
        memcpy(&args.flags, at + _IOCTL_FLAGS, 4)
        memcpy(&args.cmd, at + _IOCTL_CMD, 4)
        memcpy(&args.arg, at + _IOCTL_ARG, 8)
        memcpy(&in_size, at + _IOCTL_IN_LEN, 4)
        # What follows the arguments is the input; never more than was read.
        return PyBytes_FromStringAndSize(at + _IOCTL_IN_SIZE, min(<Py_ssize_t>in_size, raw.len - _IOCTL_IN_SIZE))
    finally:
        PyBuffer_Release(&raw)


def ioctl_in(body):
    """FUSE_IOCTL's arguments: (fh, flags, cmd, arg, the input data the kernel copied in)."""
    cdef IoctlArgs args
    data = ioctl_args(body, &args)
    return args.fh, args.flags, args.cmd, args.arg, data


def ioctl_out(int32_t result, data=b""):
    """FUSE_IOCTL's answer: the ioctl's result and the out data the kernel copies over the
    caller's struct (no retry, no iovecs)."""
    cdef Py_buffer raw
    cdef bytes answer
    cdef char *at
    PyObject_GetBuffer(data, &raw, PyBUF_SIMPLE)
    try:
        answer = PyBytes_FromStringAndSize(NULL, _IOCTL_OUT_SIZE + raw.len)
        at = PyBytes_AS_STRING(answer)
        memset(at, 0, _IOCTL_OUT_SIZE)
        memcpy(at + _IOCTL_RESULT, &result, 4)
        if raw.len:
            memcpy(at + _IOCTL_OUT_SIZE, raw.buf, raw.len)
    finally:
        PyBuffer_Release(&raw)
    return answer


cdef int poll_args(object body, PollArgs *args) except -1:
    """FUSE_POLL's arguments into `args`."""
    cdef Py_buffer raw
    cdef const char *at
    PyObject_GetBuffer(body, &raw, PyBUF_SIMPLE)
    try:
        if raw.len < _POLL_IN_SIZE:
            raise ProtocolError(f"FUSE_POLL of {raw.len} bytes is shorter than its arguments")
        at = <const char *>raw.buf
        memcpy(&args.fh, at + _POLL_FH, 8)
        memcpy(&args.kh, at + _POLL_KH, 8)
        memcpy(&args.flags, at + _POLL_FLAGS, 4)
    finally:
        PyBuffer_Release(&raw)
    return 0


cdef bytes poll_answer(uint64_t unique, uint32_t revents):
    """The reply to FUSE_POLL `unique`: the events ready now."""
    cdef char answer[16]
    memset(answer, 0, _POLL_OUT_SIZE)
    memcpy(answer + _POLL_REVENTS, &revents, 4)
    return _out(unique, 0, answer, _POLL_OUT_SIZE)


cpdef bytes notify_poll(uint64_t kh):
    """FUSE_NOTIFY_POLL: wake whoever polls with handle `kh` (the kernel polls again)."""
    return _out(0, _NOTIFY_POLL, <const char *>&kh, _NOTIFY_POLL_SIZE)
