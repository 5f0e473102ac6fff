# cython: language_level=3
"""The task behind a request: a FUSE request's caller, or a launched client's notified ioctl.
It is the model's `handle.Caller`: memory, identity, descriptors.

Compiled: one is made for every ioctl, and every read of the caller's memory (the command, the
message, its payload) goes through it to host/memory.pyx without a Python frame in between.
"""

import logging
import struct

from posix.types cimport pid_t

from .memory cimport ProcessMemory

from .. import seccomp
from .files import SenderFiles
from .proc import ProcProcess

log = logging.getLogger("kdbusfs.host")


cdef class RequestCaller:
    """The `handle.Caller` of one FUSE request: the calling thread's memory and identity."""

    cdef ProcessMemory _memory
    cdef object _closer
    cdef object _task_files
    cdef readonly pid_t tid
    # FUSE gives u32 ids; a supervised caller's are -1 until /proc is read.
    cdef long long _fsuid
    cdef long long _fsgid
    cdef object _process
    cdef object _kdbus_dev
    cdef object _files

    def __init__(self, host, pid_t tid, long long fsuid, long long fsgid, kdbus_dev=None):
        _fill(self, host.memory, host.closer, host.task_files, tid, fsuid, fsgid, kdbus_dev)

    def files(self):
        if self._files is None:
            # The calling thread's descriptors: its thread-group leader may have exited already.
            self._files = SenderFiles(self.tid, self.process().creds().pid, self._kdbus_dev, self._closer)
        return self._files

    def close_fd(self, fd):
        self._closer.close(fd)

    def install(self, passed, pool, offset):
        # A FUSE request cannot place descriptors in its caller: the numbers stay -1.
        passed.close()
        return False

    def done(self):
        if self._files is not None:
            self._files.close()

    def creds(self):
        return self.process().creds()

    def process(self):
        if self._process is None:
            self._process = ProcProcess(self.tid, self._fsuid, self._fsgid, files=self._task_files)
        return self._process

    def read_into(self, unsigned long long address, Py_ssize_t size, buffer, Py_ssize_t offset):
        self._memory.read_into(self.tid, address, size, buffer, offset)

    def read(self, unsigned long long address, Py_ssize_t size):
        return self._memory.read(self.tid, address, size)

    def write(self, unsigned long long address, data):
        self._memory.write(self.tid, address, data)


cdef class Callers:
    """RequestCaller(host, ...) for one host, as one callable: a FUSE request's caller is made
    for every ioctl, so the host's parts are looked up once and no Python code runs to make one."""

    cdef ProcessMemory _memory
    cdef object _closer
    cdef object _task_files

    def __init__(self, host):
        self._memory = host.memory
        self._closer = host.closer
        self._task_files = host.task_files

    def __call__(self, pid_t tid, long long fsuid, long long fsgid, kdbus_dev):
        cdef RequestCaller caller = RequestCaller.__new__(RequestCaller)
        _fill(caller, self._memory, self._closer, self._task_files, tid, fsuid, fsgid, kdbus_dev)
        return caller


cdef int _fill(RequestCaller caller, ProcessMemory memory, closer, task_files, pid_t tid,
               long long fsuid, long long fsgid, kdbus_dev) except -1:
    caller._memory = memory
    caller._closer = closer
    caller._task_files = task_files
    caller.tid = tid
    caller._fsuid = fsuid
    caller._fsgid = fsgid
    caller._kdbus_dev = kdbus_dev
    return 0


class SupervisedCaller(RequestCaller):
    """A task whose ioctl reached us as a seccomp notification (it runs under `kdbusfs run`): the
    daemon serves the ioctl itself while the task waits, and can install descriptors in it."""

    def __init__(self, host, tid, listener, notif_id, kdbus_dev=None):
        # fsuid/fsgid are read from /proc with the rest of the creds; these only stand in if it
        # cannot be read.
        super().__init__(host, tid, -1, -1, kdbus_dev)
        self._listener = listener
        self._notif_id = notif_id

    def install(self, passed, pool, offset):
        complete = True
        touched = []
        for fd, slot in zip(passed.fds, passed.slots, strict=True):
            try:
                number = seccomp.add_fd(self._listener, self._notif_id, fd)
            except OSError as exc:
                # EMFILE (the task's RLIMIT_NOFILE), or the task is gone: kdbus leaves -1 and
                # says INCOMPLETE_FDS; the message is still delivered.
                log.debug("cannot install fd in task %d: %s", self.tid, exc.strerror)
                complete = False
                continue
            struct.pack_into("<i", pool.buffer, offset + slot, number)
            touched.append(offset + slot)
        if touched:
            pool.touched(min(touched), max(touched) + 4)
        passed.close()
        return complete
