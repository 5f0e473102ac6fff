# Fields of kdbus structs read straight from the bytes that hold them, for compiled modules.
from libc.stdint cimport uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING


cdef inline uint64_t u64_at(bytes data, Py_ssize_t offset) noexcept:
    """The u64 at `offset` of `data`, which the caller has checked holds offset + 8 bytes. The
    structs are the kernel ABI's native byte order, which structs.py spells "<" (x86-64, aarch64);
    memcpy because items and payloads need not be 8-aligned in a bytes object's buffer."""
    cdef uint64_t value
    memcpy(&value, PyBytes_AS_STRING(data) + offset, 8)
    return value
