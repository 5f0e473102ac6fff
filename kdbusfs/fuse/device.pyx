# cython: language_level=3, boundscheck=False, wraparound=False
"""Reads and writes of /dev/fuse for the session loop, as direct system calls.

Compiled: every request is one read and at least one write, and through os.readv and os.write each
cost a list, a tuple of arguments, an exception object for the ENOENT of an aborted request, and
a few Python frames around them (about 1.4 us a request, measured on the loop with a socketpair
standing in for the device).
"""

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_SetFromErrno
from libc.errno cimport errno
from posix.unistd cimport read, write


def read_into(int fd, buffer):
    """One read of `fd` into `buffer`; the bytes read. Failures raise OSError as os.read does
    (BlockingIOError when nothing is queued, InterruptedError, ...)."""
    cdef Py_buffer view
    cdef ssize_t done
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
    try:
        done = read(fd, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    if done < 0:
        PyErr_SetFromErrno(OSError)
    return done


def write_bytes(int fd, bytes message not None):
    """Write one whole message; 0, or the errno it failed with. (A failure is part of the
    protocol, ENOENT for an answer to an aborted request, so it is not made an exception.)"""
    cdef ssize_t done = write(fd, PyBytes_AS_STRING(message), <size_t>PyBytes_GET_SIZE(message))
    return errno if done < 0 else 0
