# cython: language_level=3, boundscheck=False, wraparound=False
"""The calling process's memory, read and written with process_vm_readv/writev.

FUSE forwards an ioctl with only the fixed part of the struct, so the daemon reads the rest (items,
messages, payload vectors) from the caller's address space and writes results back the same way.
That needs ptrace-level access: a root daemon has it; a user's daemon has it over that user's
dumpable processes, which is who may open a user mount.

Compiled: a call costs nine of these transfers, and through ctypes each cost twice the syscall
itself (argument conversion, a bounce buffer, three Python frames). Here the syscall reads straight
into the bytes object or pool it fills.
"""

import errno as _errno
import logging
import os

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport errno
from posix.types cimport pid_t
from posix.uio cimport iovec

from ..errors import KdbusError

cdef extern from "<sys/uio.h>" nogil:
    ssize_t process_vm_readv(pid_t pid, const iovec *local_iov, unsigned long liovcnt,
                             const iovec *remote_iov, unsigned long riovcnt, unsigned long flags)
    ssize_t process_vm_writev(pid_t pid, const iovec *local_iov, unsigned long liovcnt,
                              const iovec *remote_iov, unsigned long riovcnt, unsigned long flags)

log = logging.getLogger("kdbusfs.host")

# Highest user-space address on x86-64 with 5-level paging; anything above is the kernel's.
USER_ADDRESS_LIMIT = 1 << 56
cdef unsigned long long _USER_ADDRESS_LIMIT = USER_ADDRESS_LIMIT
# Larger transfers let other threads (the store writer, listener threads) run meanwhile.
cdef Py_ssize_t _KEEP_GIL_BELOW = 64 * 1024


cdef ssize_t _transfer(bint write, pid_t tid, void *local, unsigned long long remote,
                       Py_ssize_t size) except -1:
    """One process_vm_* call; a failure becomes kdbus's errno for a bad user pointer."""
    cdef iovec here, there
    cdef ssize_t done
    here.iov_base = local
    here.iov_len = <size_t>size
    there.iov_base = <void *>remote
    there.iov_len = <size_t>size
    if size < _KEEP_GIL_BELOW:
        if write:
            done = process_vm_writev(tid, &here, 1, &there, 1, 0)
        else:
            done = process_vm_readv(tid, &here, 1, &there, 1, 0)
    else:
        with nogil:
            if write:
                done = process_vm_writev(tid, &here, 1, &there, 1, 0)
            else:
                done = process_vm_readv(tid, &here, 1, &there, 1, 0)
    if done < 0:
        _fail(errno, tid, remote, size)
    return done


cdef int _fail(int err, pid_t tid, unsigned long long remote, Py_ssize_t size) except -1:
    if err == _errno.EPERM:
        log.warning("cannot access the memory of task %d: it runs as another user or is not "
                    "dumpable, so it cannot use this mount", tid)
        raise KdbusError(_errno.EPERM, f"no access to the memory of task {tid}")
    if err == _errno.ESRCH:
        raise KdbusError(_errno.ESRCH, f"task {tid} is gone")
    raise KdbusError(_errno.EFAULT, f"{size} bytes at {remote:#x} of task {tid}: {os.strerror(err)}")


cdef int _check_range(unsigned long long address, Py_ssize_t size, str what) except -1:
    if address + <unsigned long long>size > _USER_ADDRESS_LIMIT or address + <unsigned long long>size < address:
        raise KdbusError(_errno.EFAULT, f"{what} of {size} bytes at {address:#x} outside user space")
    return 0


cdef class ProcessMemory:
    """Reads and writes other processes' memory with process_vm_readv/writev.

    Unlike /proc/PID/mem (which pokes through page protections like a debugger), these calls honour
    the caller's protections: unmapped, PROT_NONE or read-only memory fails with EFAULT exactly
    where the kernel's copy_from_user/copy_to_user would.
    """

    cpdef bytes read(self, pid_t tid, unsigned long long address, Py_ssize_t size):
        """`size` bytes of task `tid`'s memory at `address`, as bytes."""
        if size <= 0:
            if size < 0:
                raise ValueError(f"negative size {size}")
            return b""
        _check_range(address, size, "read")
        data = PyBytes_FromStringAndSize(NULL, size)
        if _transfer(False, tid, PyBytes_AS_STRING(data), address, size) != size:
            raise KdbusError(_errno.EFAULT, f"short read of {size} bytes at {address:#x} of task {tid}")
        return data

    cpdef read_into(self, pid_t tid, unsigned long long address, Py_ssize_t size, object buffer,
                    Py_ssize_t offset):
        """Copy caller memory straight into `buffer` (a pool) at `offset`: no intermediate copy."""
        cdef Py_buffer view
        cdef ssize_t done
        if size <= 0:
            if size < 0:
                raise ValueError(f"negative size {size}")
            return
        _check_range(address, size, "read")
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if offset < 0 or offset + size > view.len:
                raise ValueError(f"{size} bytes at {offset} do not fit the buffer")
            done = _transfer(False, tid, <char *>view.buf + offset, address, size)
        finally:
            PyBuffer_Release(&view)
        if done != size:
            raise KdbusError(_errno.EFAULT, f"short read of {size} bytes at {address:#x} of task {tid}")

    cpdef write(self, pid_t tid, unsigned long long address, object data):
        """Write `data` (any bytes-like object) into task `tid`'s memory at `address`."""
        cdef Py_buffer view
        cdef ssize_t done
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                return
            _check_range(address, view.len, "write")
            done = _transfer(True, tid, view.buf, address, view.len)
            if done != view.len:
                raise KdbusError(_errno.EFAULT,
                                 f"short write of {view.len} bytes at {address:#x} of task {tid}")
        finally:
            PyBuffer_Release(&view)

    def close(self):
        pass
