# The C-level interface of frame.pyx, for the compiled serving path (kdbusfs/fs.pyx).
from libc.stdint cimport int32_t, uint32_t, uint64_t


cdef class Header:
    cdef readonly uint32_t length
    cdef readonly uint32_t opcode
    cdef readonly uint64_t unique
    cdef readonly uint64_t nodeid
    cdef readonly uint32_t uid
    cdef readonly uint32_t gid
    cdef readonly uint32_t pid


cdef class Request:
    cdef readonly Header header
    cdef readonly object body
    cdef readonly uint32_t opcode
    cdef readonly uint64_t unique


# FUSE_IOCTL's arguments, read from a request body by ioctl_args().
cdef struct IoctlArgs:
    uint64_t fh
    uint32_t flags
    uint32_t cmd
    uint64_t arg


# FUSE_POLL's arguments, read from a request body by poll_args().
cdef struct PollArgs:
    uint64_t fh
    uint64_t kh
    uint32_t flags


cdef bytes ioctl_args(object body, IoctlArgs *args)
cdef int poll_args(object body, PollArgs *args) except -1
cdef bytes poll_answer(uint64_t unique, uint32_t revents)
cpdef bytes notify_poll(uint64_t kh)
cdef bytes ioctl_answer(uint64_t unique, bytes data)
