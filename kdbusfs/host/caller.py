"""The task behind a request: a FUSE request's caller, or a launched client's notified ioctl.
It is the model's `handle.Caller`: memory, identity, descriptors."""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from .. import seccomp
from ..bus.message import Buffer, Passed
from ..bus.metadata import Creds
from ..bus.pool import Pool
from .files import SenderFiles
from .proc import ProcProcess

if TYPE_CHECKING:
    from . import Host

log = logging.getLogger("kdbusfs.host")


class RequestCaller:
    """The `handle.Caller` of one FUSE request: the calling thread's memory and identity."""

    __slots__ = ("_memory", "_closer", "_task_files", "tid", "_ids", "_process", "_kdbus_dev", "_files")

    def __init__(self, host: Host, tid: int, fsuid: int, fsgid: int,
                 kdbus_dev: int | None = None) -> None:
        self._memory = host.memory
        self._closer = host.closer
        self._task_files = host.task_files
        self.tid = tid
        self._ids = (fsuid, fsgid)
        self._process: ProcProcess | None = None
        self._kdbus_dev = kdbus_dev
        self._files: SenderFiles | None = None

    def files(self) -> SenderFiles:
        if self._files is None:
            # The calling thread's descriptors: its thread-group leader may have exited already.
            self._files = SenderFiles(self.tid, self.process().creds().pid, self._kdbus_dev, self._closer)
        return self._files

    def close_fd(self, fd: int) -> None:
        self._closer.close(fd)

    def install(self, passed: Passed, pool: Pool, offset: int) -> bool:
        # A FUSE request cannot place descriptors in its caller: the numbers stay -1.
        passed.close()
        return False

    def done(self) -> None:
        if self._files is not None:
            self._files.close()

    def creds(self) -> Creds:
        return self.process().creds()

    def process(self) -> ProcProcess:
        if self._process is None:
            self._process = ProcProcess(self.tid, *self._ids, files=self._task_files)
        return self._process

    def read_into(self, address: int, size: int, buffer: Buffer, offset: int) -> None:
        self._memory.read_into(self.tid, address, size, buffer, offset)

    def read(self, address: int, size: int) -> bytes:
        return self._memory.read(self.tid, address, size)

    def write(self, address: int, data: bytes) -> None:
        self._memory.write(self.tid, address, data)


class SupervisedCaller(RequestCaller):
    """A task whose ioctl reached us as a seccomp notification (it runs under `kdbusfs run`): the
    daemon serves the ioctl itself while the task waits, and can install descriptors in it."""

    __slots__ = ("_listener", "_notif_id")

    def __init__(self, host: Host, tid: int, listener: int, notif_id: int,
                 kdbus_dev: int | None = None) -> None:
        # fsuid/fsgid are read from /proc with the rest of the creds; these only stand in if it
        # cannot be read.
        super().__init__(host, tid, -1, -1, kdbus_dev)
        self._listener = listener
        self._notif_id = notif_id

    def install(self, passed: Passed, pool: Pool, offset: int) -> bool:
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
