"""The process behind a FUSE request: its memory (through /proc/TID/mem) and its credentials.

FUSE forwards an ioctl with only the fixed part of the struct, so the daemon reads the rest (items,
messages, payload vectors) from the caller's address space and writes results back the same way.
That needs ptrace-level access: a root daemon has it; a user's daemon has it over that user's
dumpable processes, which is who may open a user mount.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import OrderedDict

from .bus.errors import KdbusError
from .bus.metadata import Creds

log = logging.getLogger("kdbusfs.peer")

# Highest user-space address on x86-64 with 5-level paging; anything above is the kernel's.
USER_ADDRESS_LIMIT = 1 << 56
# Open /proc/TID/mem descriptors kept: one per recently active thread is enough.
MEM_CACHE_SIZE = 64

_own_userns = os.stat("/proc/self/ns/user").st_ino


class ProcessMemory:
    """Reads and writes other processes' memory through cached /proc/TID/mem descriptors."""

    def __init__(self, cache_size: int = MEM_CACHE_SIZE) -> None:
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._cache_size = cache_size

    def _fd(self, tid: int) -> int:
        fd = self._fds.get(tid)
        if fd is not None:
            self._fds.move_to_end(tid)
            return fd
        try:
            fd = os.open(f"/proc/{tid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except PermissionError as exc:
            log.warning("cannot access memory of task %d (%s): it runs as another user or is not "
                        "dumpable; such callers cannot use this mount", tid, exc.strerror)
            raise KdbusError(errno.EPERM, f"no access to the memory of task {tid}") from None
        except OSError as exc:
            raise KdbusError(errno.ESRCH, f"task {tid} is gone ({exc.strerror})") from None
        self._fds[tid] = fd
        if len(self._fds) > self._cache_size:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def _drop(self, tid: int) -> None:
        fd = self._fds.pop(tid, None)
        if fd is not None:
            os.close(fd)

    def read(self, tid: int, address: int, size: int) -> bytes:
        if size == 0:
            return b""
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"read of {size} bytes at {address:#x} outside user space")
        for attempt in (0, 1):
            try:
                data = os.pread(self._fd(tid), size, address)
            except OSError:
                data = b""
            if len(data) == size:
                return data
            # A stale descriptor (the task exec'd or the tid was reused) reads nothing: reopen once.
            self._drop(tid)
            if attempt == 0 and data == b"" and self._alive(tid):
                continue
            break
        raise KdbusError(errno.EFAULT, f"cannot read {size} bytes at {address:#x} of task {tid}")

    def write(self, tid: int, address: int, data: bytes) -> None:
        if not data:
            return
        if address + len(data) > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"write at {address:#x} outside user space")
        for attempt in (0, 1):
            try:
                written = os.pwrite(self._fd(tid), data, address)
            except OSError:
                written = 0
            if written == len(data):
                return
            self._drop(tid)
            if attempt == 0 and written == 0 and self._alive(tid):
                continue
            break
        raise KdbusError(errno.EFAULT, f"cannot write {len(data)} bytes at {address:#x} of task {tid}")

    @staticmethod
    def _alive(tid: int) -> bool:
        return os.path.exists(f"/proc/{tid}")

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def read_creds(tid: int, fsuid: int, fsgid: int) -> Creds:
    """A task's identity from /proc; falls back to the request's fsuid/fsgid if the task is gone."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            status = f.read()
        userns = os.stat(f"/proc/{tid}/ns/user").st_ino
    except OSError:
        return Creds.for_ids(fsuid, fsgid, tid)
    fields: dict[bytes, bytes] = {}
    for line in status.split(b"\n"):
        key, _, value = line.partition(b":")
        fields[key] = value.strip()
    uids = [int(x) for x in fields.get(b"Uid", b"").split()] or [fsuid] * 4
    gids = [int(x) for x in fields.get(b"Gid", b"").split()] or [fsgid] * 4
    pid = int(fields.get(b"Tgid", tid))
    return Creds(
        pid=pid, tid=tid, ppid=int(fields.get(b"PPid", 0)),
        uid=uids[0], euid=uids[1], suid=uids[2], fsuid=uids[3],
        gid=gids[0], egid=gids[1], sgid=gids[2], fsgid=gids[3],
        cap_effective=int(fields.get(b"CapEff", b"0"), 16),
        in_domain_userns=userns == _own_userns,
        comm=fields.get(b"Name", b"").decode("utf-8", "replace"),
    )


class RequestCaller:
    """The `handle.Caller` of one FUSE request: the calling thread's memory and identity."""

    __slots__ = ("_memory", "tid", "_fsuid", "_fsgid", "_creds")

    def __init__(self, memory: ProcessMemory, tid: int, fsuid: int, fsgid: int) -> None:
        self._memory = memory
        self.tid = tid
        self._fsuid = fsuid
        self._fsgid = fsgid
        self._creds: Creds | None = None

    def creds(self) -> Creds:
        if self._creds is None:
            self._creds = read_creds(self.tid, self._fsuid, self._fsgid)
        return self._creds

    def read(self, address: int, size: int) -> bytes:
        return self._memory.read(self.tid, address, size)

    def write(self, address: int, data: bytes) -> None:
        self._memory.write(self.tid, address, data)
