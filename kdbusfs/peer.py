"""The process behind a FUSE request: its memory and its credentials.

FUSE forwards an ioctl with only the fixed part of the struct, so the daemon reads the rest (items,
messages, payload vectors) from the caller's address space and writes results back the same way.
That needs ptrace-level access (process_vm_readv/writev): a root daemon has it; a user's daemon has
it over that user's dumpable processes, which is who may open a user mount.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os

from .bus.errors import KdbusError
from .bus.metadata import Creds

log = logging.getLogger("kdbusfs.peer")

# Highest user-space address on x86-64 with 5-level paging; anything above is the kernel's.
USER_ADDRESS_LIMIT = 1 << 56

_own_userns = os.stat("/proc/self/ns/user").st_ino


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_VM_ARGS = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.POINTER(_IoVec),
            ctypes.c_ulong, ctypes.c_ulong]
_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.argtypes = _VM_ARGS
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_writev = _libc.process_vm_writev
_process_vm_writev.argtypes = _VM_ARGS
_process_vm_writev.restype = ctypes.c_ssize_t


class ProcessMemory:
    """Reads and writes other processes' memory with process_vm_readv/writev.

    Unlike /proc/PID/mem (which pokes through page protections like a debugger), these calls honour
    the caller's protections: unmapped, PROT_NONE or read-only memory fails with EFAULT exactly
    where the kernel's copy_from_user/copy_to_user would.
    """

    def __init__(self) -> None:
        self._local = _IoVec()
        self._remote = _IoVec()
        self._buffer = ctypes.create_string_buffer(64 * 1024)

    def _transfer(self, call: object, tid: int, local: int, remote: int, size: int) -> int:
        self._local.base, self._local.len = local, size
        self._remote.base, self._remote.len = remote, size
        done = call(tid, ctypes.byref(self._local), 1, ctypes.byref(self._remote), 1, 0)  # type: ignore[operator]
        if done < 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                log.warning("cannot access the memory of task %d: it runs as another user or is not "
                            "dumpable, so it cannot use this mount", tid)
                raise KdbusError(errno.EPERM, f"no access to the memory of task {tid}")
            if err == errno.ESRCH:
                raise KdbusError(errno.ESRCH, f"task {tid} is gone")
            raise KdbusError(errno.EFAULT, f"{size} bytes at {remote:#x} of task {tid}: {os.strerror(err)}")
        return int(done)

    def read(self, tid: int, address: int, size: int) -> bytes:
        if size == 0:
            return b""
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"read of {size} bytes at {address:#x} outside user space")
        buffer = self._buffer if size <= len(self._buffer) else ctypes.create_string_buffer(size)
        if self._transfer(_process_vm_readv, tid, ctypes.addressof(buffer), address, size) != size:
            raise KdbusError(errno.EFAULT, f"short read of {size} bytes at {address:#x} of task {tid}")
        return buffer.raw[:size]

    def write(self, tid: int, address: int, data: bytes) -> None:
        size = len(data)
        if size == 0:
            return
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"write at {address:#x} outside user space")
        source = ctypes.c_char_p(data)
        local = ctypes.cast(source, ctypes.c_void_p).value or 0
        if self._transfer(_process_vm_writev, tid, local, address, size) != size:
            raise KdbusError(errno.EFAULT, f"short write of {size} bytes at {address:#x} of task {tid}")

    def close(self) -> None:
        pass


def _field(status: bytes, key: bytes) -> bytes:
    start = status.find(key)
    if start < 0:
        return b""
    start += len(key)
    end = status.find(b"\n", start)
    return status[start:end].strip()


def read_creds(tid: int, fsuid: int, fsgid: int) -> Creds:
    """A task's identity from /proc; falls back to the request's fsuid/fsgid if the task is gone."""
    try:
        fd = os.open(f"/proc/{tid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            status = os.read(fd, 8192)
        finally:
            os.close(fd)
    except OSError:
        return Creds.for_ids(fsuid, fsgid, tid)
    uids = [int(x) for x in _field(status, b"\nUid:").split()] or [fsuid] * 4
    gids = [int(x) for x in _field(status, b"\nGid:").split()] or [fsgid] * 4
    caps = int(_field(status, b"\nCapEff:") or b"0", 16)
    in_domain_userns = True
    if caps:
        # Capabilities count only in the daemon's user namespace (the domain's).
        try:
            in_domain_userns = os.stat(f"/proc/{tid}/ns/user").st_ino == _own_userns
        except OSError:
            in_domain_userns = False
    return Creds(
        pid=int(_field(status, b"\nTgid:") or tid), tid=tid, ppid=int(_field(status, b"\nPPid:") or 0),
        uid=uids[0], euid=uids[1], suid=uids[2], fsuid=uids[3],
        gid=gids[0], egid=gids[1], sgid=gids[2], fsgid=gids[3],
        cap_effective=caps, in_domain_userns=in_domain_userns,
        comm=_field(b"\n" + status, b"\nName:").decode("utf-8", "replace"),
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
