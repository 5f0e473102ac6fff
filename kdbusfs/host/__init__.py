"""The edge between the serving core and the system: everything that makes a syscall for it.

    host/memory.pyx  the caller's memory (process_vm_readv/writev)
    host/proc.py     what /proc says about a task: credentials, namespaces, metadata facts
    host/mounts.py   which mount a task's descriptor is on, found by name
    host/files.py    the sender's descriptors, taken with pidfd_getfd and checked as kdbus does
    host/caller.py   the task behind a request (FUSE or a launched client's notification)
    host/backing.py  pools as memfds the client maps directly (FUSE passthrough)
    host/closer.py   closing descriptors off the serving thread
    host/libc.py     the C library, loaded when first needed

`Host` is what the serving core (kdbusfs.fs) is given; tests give it one whose tasks and memory
are their own. Nothing here does any work at import.
"""

from __future__ import annotations

from collections.abc import Callable

from .caller import Callers, RequestCaller, SupervisedCaller
from .closer import Closer
from .memory import ProcessMemory
from .mounts import task_file
from .proc import ProcProcess, TaskFiles, dying


class Host:
    """The system as the serving core sees it: tasks, their memory and files, closing."""

    def __init__(self, memory: ProcessMemory | None = None, closer: Closer | None = None) -> None:
        self.memory = memory or ProcessMemory()
        self.closer = closer or Closer()
        # Senders' /proc files, read again for each of their messages.
        self.task_files = TaskFiles()

    def caller(self, tid: int, fsuid: int, fsgid: int, kdbus_dev: int | None) -> RequestCaller:
        """The task behind a FUSE request."""
        return RequestCaller(self, tid, fsuid, fsgid, kdbus_dev)

    def callers(self) -> Callable[[int, int, int, int | None], RequestCaller]:
        """caller() as the one callable the serving path keeps: one is made for every ioctl, so
        this class's own is made with no Python frame in between."""
        if type(self).caller is Host.caller:
            return Callers(self)
        return self.caller

    def supervised(self, tid: int, listener: int, notif_id: int, kdbus_dev: int | None) -> SupervisedCaller:
        """A launched task waiting in a notified ioctl."""
        return SupervisedCaller(self, tid, listener, notif_id, kdbus_dev)

    def process(self, pid: int, uid: int, gid: int) -> ProcProcess:
        return ProcProcess(pid, uid, gid)

    def forget_senders(self) -> None:
        """A client released a file: the tasks whose /proc files are kept open may be gone, and
        the daemon holds nothing for a client that left. Each sender reopens its own once, at its
        next message (a few µs), rather than the dead being held until their numbers come back."""
        self.task_files.close_files()

    def dying(self, tid: int) -> bool:
        return dying(tid)

    def task_file(self, tid: int, fd: int) -> tuple[int | None, int] | None:
        """(device, inode) of the file behind `fd` of task `tid`, found by name."""
        return task_file(tid, fd)

    def write(self, tid: int, address: int, data: bytes) -> None:
        self.memory.write(tid, address, data)

    def close_fd(self, fd: int) -> None:
        self.closer.close(fd)

    def close(self) -> None:
        self.memory.close()
        self.task_files.close()
