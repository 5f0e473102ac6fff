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
import struct

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

    def read_into(self, tid: int, address: int, size: int, buffer: object, offset: int) -> None:
        """Copy caller memory straight into `buffer` (a pool) at `offset`: no intermediate copy."""
        if size == 0:
            return
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"read of {size} bytes at {address:#x} outside user space")
        target = (ctypes.c_char * size).from_buffer(buffer, offset)  # type: ignore[arg-type]
        try:
            done = self._transfer(_process_vm_readv, tid, ctypes.addressof(target), address, size)
        finally:
            del target
        if done != size:
            raise KdbusError(errno.EFAULT, f"short read of {size} bytes at {address:#x} of task {tid}")

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
        groups=tuple(int(x) for x in _field(status, b"\nGroups:").split()),
    )


def _read_text(path: str, limit: int = 4096) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


_CAP_LAST_CAP = int((_read_text("/proc/sys/kernel/cap_last_cap") or b"40").strip())


class ProcProcess:
    """A task's process facts from /proc, each read the first time it is asked for."""

    __slots__ = ("tid", "_fsuid", "_fsgid", "_creds", "_cache")

    def __init__(self, tid: int, fsuid: int, fsgid: int) -> None:
        self.tid = tid
        self._fsuid = fsuid
        self._fsgid = fsgid
        self._creds: Creds | None = None
        self._cache: dict[str, object] = {}

    def creds(self) -> Creds:
        if self._creds is None:
            self._creds = read_creds(self.tid, self._fsuid, self._fsgid)
        return self._creds

    def _pid(self) -> int:
        return self.creds().pid

    def _string(self, key: str, path: str) -> str | None:
        if key not in self._cache:
            raw = _read_text(path)
            self._cache[key] = None if raw is None else raw.rstrip(b"\n").decode("utf-8", "replace")
        return self._cache[key]  # type: ignore[return-value]

    def tid_comm(self) -> str | None:
        return self._string("tid_comm", f"/proc/{self._pid()}/task/{self.tid}/comm")

    def pid_comm(self) -> str | None:
        return self._string("pid_comm", f"/proc/{self._pid()}/comm")

    def exe(self) -> str | None:
        if "exe" not in self._cache:
            try:
                self._cache["exe"] = os.readlink(f"/proc/{self._pid()}/exe")
            except OSError:
                self._cache["exe"] = None
        return self._cache["exe"]  # type: ignore[return-value]

    def cmdline(self) -> str | None:
        if "cmdline" not in self._cache:
            raw = _read_text(f"/proc/{self._pid()}/cmdline")
            # kdbus attaches argv[0] only.
            self._cache["cmdline"] = raw.split(b"\0", 1)[0].decode("utf-8", "replace") if raw else None
        return self._cache["cmdline"]  # type: ignore[return-value]

    def cgroup(self) -> str | None:
        if "cgroup" not in self._cache:
            raw = _read_text(f"/proc/{self._pid()}/cgroup")
            path = None
            if raw:
                # The first hierarchy listed: "<id>:<controllers>:<path>" (cgroup v2: "0::<path>").
                path = raw.split(b"\n", 1)[0].split(b":", 2)[-1].decode("utf-8", "replace")
            self._cache["cgroup"] = path
        return self._cache["cgroup"]  # type: ignore[return-value]

    def caps(self) -> bytes | None:
        if "caps" not in self._cache:
            status = _read_text(f"/proc/{self.tid}/status", 8192)
            value = None
            if status:
                words = []
                mask = (1 << (_CAP_LAST_CAP + 1)) - 1
                for key in (b"\nCapInh:", b"\nCapPrm:", b"\nCapEff:", b"\nCapBnd:"):
                    bits = int(_field(status, key) or b"0", 16) & mask
                    words.append(struct.pack("<II", bits & 0xFFFFFFFF, bits >> 32))
                value = struct.pack("<I", _CAP_LAST_CAP) + b"".join(words)
            self._cache["caps"] = value
        return self._cache["caps"]  # type: ignore[return-value]

    def audit(self) -> tuple[int, int] | None:
        if "audit" not in self._cache:
            session = _read_text(f"/proc/{self._pid()}/sessionid")
            login = _read_text(f"/proc/{self._pid()}/loginuid")
            self._cache["audit"] = None if session is None or login is None else \
                (int(session) & 0xFFFFFFFF, int(login) & 0xFFFFFFFF)
        return self._cache["audit"]  # type: ignore[return-value]


class RequestCaller:
    """The `handle.Caller` of one FUSE request: the calling thread's memory and identity."""

    __slots__ = ("_memory", "tid", "_process")

    def __init__(self, memory: ProcessMemory, tid: int, fsuid: int, fsgid: int) -> None:
        self._memory = memory
        self.tid = tid
        self._process = ProcProcess(tid, fsuid, fsgid)

    def creds(self) -> Creds:
        return self._process.creds()

    def process(self) -> ProcProcess:
        return self._process

    def read_into(self, address: int, size: int, buffer: object, offset: int) -> None:
        self._memory.read_into(self.tid, address, size, buffer, offset)

    def read(self, address: int, size: int) -> bytes:
        return self._memory.read(self.tid, address, size)

    def write(self, address: int, data: bytes) -> None:
        self._memory.write(self.tid, address, data)
