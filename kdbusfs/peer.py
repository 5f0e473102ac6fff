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
import fcntl
import logging
import os
import queue
import select
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from . import seccomp
from .bus.errors import KdbusError
from .bus.message import Passed
from .bus.metadata import DAEMON_USERNS, UNKNOWN_NS, Creds, IdMap, NsPids, UserNamespace
from .bus.pool import Pool
from .fuse.mount import mountinfo

log = logging.getLogger("kdbusfs.peer")

# Highest user-space address on x86-64 with 5-level paging; anything above is the kernel's.
USER_ADDRESS_LIMIT = 1 << 56


def _own_namespace(kind: str) -> int:
    try:
        return os.stat(f"/proc/self/ns/{kind}").st_ino
    except OSError:
        # No nsfs to compare with: every task then counts as living in the daemon's namespaces.
        return 0


# The daemon's own namespaces: ids and pids from /proc are as seen from these.
_OWN_NS = {kind: _own_namespace(kind) for kind in ("user", "pid", "mnt")}
# ioctl(2) requests on nsfs descriptors (linux/nsfs.h): _IO(0xb7, 0x2) and _IO(0xb7, 0x4).
NS_GET_PARENT = 0xB702
NS_GET_OWNER_UID = 0xB704


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
# Every argument is a plain integer (the iovecs are packed by hand into one buffer): ctypes converts
# those far cheaper than structures passed by reference, and this is on every message's path.
_VM_ARGS: list[type[Any]] = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                             ctypes.c_ulong, ctypes.c_ulong]
_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.argtypes = _VM_ARGS
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_writev = _libc.process_vm_writev
_process_vm_writev.argtypes = _VM_ARGS
_process_vm_writev.restype = ctypes.c_ssize_t
# Two struct iovec {base, len}: the local one, then the remote one.
_IOVECS = struct.Struct("<QQQQ")
_BOUNCE_SIZE = 64 * 1024


class ProcessMemory:
    """Reads and writes other processes' memory with process_vm_readv/writev.

    Unlike /proc/PID/mem (which pokes through page protections like a debugger), these calls honour
    the caller's protections: unmapped, PROT_NONE or read-only memory fails with EFAULT exactly
    where the kernel's copy_from_user/copy_to_user would.
    """

    def __init__(self) -> None:
        self._iovecs = ctypes.create_string_buffer(_IOVECS.size)
        self._iovecs_view = memoryview(self._iovecs).cast("B")
        self._local_iov = ctypes.addressof(self._iovecs)
        self._remote_iov = self._local_iov + 16
        # Small transfers bounce through here: one buffer, no allocation per call.
        self._bounce = ctypes.create_string_buffer(_BOUNCE_SIZE)
        self._bounce_view = memoryview(self._bounce).cast("B")
        self._bounce_address = ctypes.addressof(self._bounce)

    def _transfer(self, call: Any, tid: int, local: int, remote: int, size: int) -> int:
        _IOVECS.pack_into(self._iovecs_view, 0, local, size, remote, size)
        done: int = call(tid, self._local_iov, 1, self._remote_iov, 1, 0)
        if done < 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                log.warning("cannot access the memory of task %d: it runs as another user or is not "
                            "dumpable, so it cannot use this mount", tid)
                raise KdbusError(errno.EPERM, f"no access to the memory of task {tid}")
            if err == errno.ESRCH:
                raise KdbusError(errno.ESRCH, f"task {tid} is gone")
            raise KdbusError(errno.EFAULT, f"{size} bytes at {remote:#x} of task {tid}: {os.strerror(err)}")
        return done

    def read(self, tid: int, address: int, size: int) -> bytes:
        if size == 0:
            return b""
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"read of {size} bytes at {address:#x} outside user space")
        if size <= _BOUNCE_SIZE:
            done = self._transfer(_process_vm_readv, tid, self._bounce_address, address, size)
            data = self._bounce_view[:size].tobytes()
        else:
            large = ctypes.create_string_buffer(size)
            done = self._transfer(_process_vm_readv, tid, ctypes.addressof(large), address, size)
            data = large.raw
        if done != size:
            raise KdbusError(errno.EFAULT, f"short read of {size} bytes at {address:#x} of task {tid}")
        return data

    def read_into(self, tid: int, address: int, size: int, buffer: object, offset: int) -> None:
        """Copy caller memory straight into `buffer` (a pool) at `offset`: no intermediate copy."""
        if size == 0:
            return
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"read of {size} bytes at {address:#x} outside user space")
        if offset + size > len(buffer):  # type: ignore[arg-type]
            raise ValueError(f"{size} bytes at {offset} do not fit the buffer")
        # The address of one byte is all we need: no array type per size, no export kept.
        anchor = ctypes.c_char.from_buffer(buffer, offset)  # type: ignore[arg-type]
        local = ctypes.addressof(anchor)
        del anchor
        if self._transfer(_process_vm_readv, tid, local, address, size) != size:
            raise KdbusError(errno.EFAULT, f"short read of {size} bytes at {address:#x} of task {tid}")

    def write(self, tid: int, address: int, data: bytes) -> None:
        size = len(data)
        if size == 0:
            return
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"write at {address:#x} outside user space")
        if size <= _BOUNCE_SIZE:
            self._bounce_view[:size] = data
            local = self._bounce_address
        else:
            source = ctypes.create_string_buffer(data, size)
            local = ctypes.addressof(source)
        if self._transfer(_process_vm_writev, tid, local, address, size) != size:
            raise KdbusError(errno.EFAULT, f"short write of {size} bytes at {address:#x} of task {tid}")

    def close(self) -> None:
        pass


_SIGKILL_BIT = 1 << 8


def dying(tid: int) -> bool:
    """Whether a task is gone or has a fatal signal pending (SIGKILL, as fatal signals become)."""
    status = _read_status(tid)
    if status is None:
        return True
    for key in (b"\nSigPnd:", b"\nShdPnd:"):
        if int(_field(status, key) or b"0", 16) & _SIGKILL_BIT:
            return True
    return b"\nState:\tZ" in status or b"\nState:\tX" in status


def _field(status: bytes, key: bytes) -> bytes:
    start = status.find(key)
    if start < 0:
        return b""
    start += len(key)
    end = status.find(b"\n", start)
    return status[start:end].strip()


def read_creds(tid: int, fsuid: int, fsgid: int) -> Creds:
    """A task's identity from /proc; falls back to the request's fsuid/fsgid if the task is gone."""
    return _creds_from_status(tid, fsuid, fsgid, _read_status(tid))


def _read_status(tid: int) -> bytes | None:
    return _read_text(f"/proc/{tid}/status", 8192)


def _ns_inode(tid: int, kind: str) -> int | None:
    """The inode of the task's namespace of `kind`; None if it cannot be read."""
    try:
        return os.stat(f"/proc/{tid}/ns/{kind}").st_ino
    except OSError:
        return None


def in_own_pid_namespace(pid: int) -> bool:
    """Whether `pid` (as we see it) lives in our pid namespace, so that the pids it names are ours.
    From its status, which any user may read (its ns link only those who may ptrace it): NSpid
    lists its pid in our namespace and in every one below down to its own."""
    status = _read_status(pid) if pid > 0 else None
    return status is not None and len(_field(status, b"\nNSpid:").split()) == 1


def _creds_from_status(tid: int, fsuid: int, fsgid: int, status: bytes | None,
                       user_ns: Callable[[], int | None] | None = None) -> Creds:
    """Creds from a status read; `user_ns` gives the task's user namespace inode, when a caller
    that needs it anyway has (or will have) looked it up: each lookup costs a path walk in /proc."""
    if status is None:
        return Creds.for_ids(fsuid, fsgid, tid)
    uids = [int(x) for x in _field(status, b"\nUid:").split()] or [fsuid] * 4
    gids = [int(x) for x in _field(status, b"\nGid:").split()] or [fsgid] * 4
    caps = int(_field(status, b"\nCapEff:") or b"0", 16)
    in_domain_userns = True
    if caps:
        # Capabilities count only in the daemon's user namespace (the domain's).
        inode = user_ns() if user_ns is not None else _ns_inode(tid, "user")
        in_domain_userns = inode is not None and inode == _OWN_NS["user"]
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


def _namespace_path(tid: int, kind: str, owners: list[int] | None = None,
                    inode: int | None = None) -> tuple[int, ...]:
    """The task's namespace of `kind` and its ancestors below the daemon's, outermost first; with
    `owners`, also the owner uid of each (user namespaces). (UNKNOWN_NS,) if it cannot be read.
    `inode` is the namespace's inode if the caller has looked it up already."""
    if not _OWN_NS[kind]:
        return ()  # no nsfs here at all: everyone shares the daemon's view
    if inode is None:
        inode = _ns_inode(tid, kind)
        if inode is None:
            return (UNKNOWN_NS,)
    if inode == _OWN_NS[kind]:
        return ()
    try:
        fd = os.open(f"/proc/{tid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return (UNKNOWN_NS,)
    path: list[int] = []
    found_owners: list[int] = []
    try:
        while True:
            inode = os.fstat(fd).st_ino
            if inode == _OWN_NS[kind]:
                break
            if owners is not None:
                uid = bytearray(4)
                fcntl.ioctl(fd, NS_GET_OWNER_UID, uid, True)
                found_owners.append(int.from_bytes(uid, "little"))
            path.append(inode)
            try:
                parent = fcntl.ioctl(fd, NS_GET_PARENT)
            except OSError:
                break  # EPERM: the top of what the daemon may see
            os.close(fd)
            fd = parent
    except OSError as exc:
        log.warning("cannot place the %s namespace of task %d: %s", kind, tid, exc.strerror)
        return (UNKNOWN_NS,)
    finally:
        os.close(fd)
    if owners is not None:
        owners.extend(reversed(found_owners))
    return tuple(reversed(path))


def _id_map(tid: int, name: str) -> IdMap:
    raw = _read_text(f"/proc/{tid}/{name}") or b""
    ranges = []
    for line in raw.splitlines():
        fields = line.split()
        if len(fields) == 3:
            inside, outside, count = (int(x) for x in fields)
            ranges.append((inside, outside, count))
    return IdMap(tuple(ranges))


def user_namespace(tid: int, inode: int | None = None) -> UserNamespace:
    """The user namespace a task lives in, with what is needed to show ids and caps inside it
    (`inode`: that namespace's inode, if already looked up)."""
    owners: list[int] = []
    path = _namespace_path(tid, "user", owners, inode)
    if not path:
        return DAEMON_USERNS
    if UNKNOWN_NS in path:
        return UserNamespace(path)
    return UserNamespace(path, tuple(owners), _id_map(tid, "uid_map"), _id_map(tid, "gid_map"))


def _ids(line: bytes) -> tuple[int, ...]:
    return tuple(int(x) for x in line.split())


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
            self._creds = _creds_from_status(self.tid, self._fsuid, self._fsgid, self._status(),
                                             self._user_ns_inode)
        return self._creds

    def _user_ns_inode(self) -> int | None:
        # Both the creds (do capabilities count?) and userns() need it: one /proc lookup.
        if "user_ns_inode" not in self._cache:
            self._cache["user_ns_inode"] = _ns_inode(self.tid, "user")
        return self._cache["user_ns_inode"]  # type: ignore[return-value]

    def _status(self) -> bytes | None:
        # Creds, capabilities and namespace pids all come from it: one read per request.
        if "status" not in self._cache:
            self._cache["status"] = _read_status(self.tid)
        return self._cache["status"]  # type: ignore[return-value]

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
            status = self._status()
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

    def seclabel(self) -> str | None:
        if "seclabel" not in self._cache:
            # EINVAL without a security module: kdbus then attaches no SECLABEL either.
            raw = _read_text(f"/proc/{self.tid}/attr/current")
            label = raw.rstrip(b"\n\0").decode("utf-8", "replace") if raw else ""
            self._cache["seclabel"] = label or None
        return self._cache["seclabel"]  # type: ignore[return-value]

    def userns(self) -> UserNamespace:
        if "userns" not in self._cache:
            self._cache["userns"] = user_namespace(self.tid, self._user_ns_inode())
        return self._cache["userns"]  # type: ignore[return-value]

    def pidns(self) -> tuple[int, ...]:
        if "pidns" not in self._cache:
            self._cache["pidns"] = _namespace_path(self.tid, "pid")
        return self._cache["pidns"]  # type: ignore[return-value]

    def ns_pids(self) -> NsPids:
        if "ns_pids" not in self._cache:
            creds = self.creds()
            status = self._status() or b""
            tgids = _ids(_field(status, b"\nNStgid:")) or (creds.pid,)
            tids = _ids(_field(status, b"\nNSpid:")) or (creds.tid,)
            parent = _read_status(creds.ppid) if creds.ppid else None
            parent_tgids = _ids(_field(parent, b"\nNStgid:")) if parent else ()
            self._cache["ns_pids"] = (tgids, tids, parent_tgids)
        return self._cache["ns_pids"]  # type: ignore[return-value]

    def root(self) -> tuple[int, str] | None:
        if "root" not in self._cache:
            try:
                # readlink, never stat: the root may be a directory of this very mount.
                self._cache["root"] = (os.stat(f"/proc/{self.tid}/ns/mnt").st_ino,
                                       os.readlink(f"/proc/{self.tid}/root"))
            except OSError:
                self._cache["root"] = None
        return self._cache["root"]  # type: ignore[return-value]


class RequestCaller:
    """The `handle.Caller` of one FUSE request: the calling thread's memory and identity."""

    __slots__ = ("_memory", "tid", "_ids", "_process", "_kdbus_dev", "_files")

    def __init__(self, memory: ProcessMemory, tid: int, fsuid: int, fsgid: int,
                 kdbus_dev: int | None = None) -> None:
        self._memory = memory
        self.tid = tid
        self._ids = (fsuid, fsgid)
        self._process: ProcProcess | None = None
        self._kdbus_dev = kdbus_dev
        self._files: SenderFiles | None = None

    def files(self) -> SenderFiles:
        if self._files is None:
            # The calling thread's descriptors: its thread-group leader may have exited already.
            self._files = SenderFiles(self.tid, self.process().creds().pid, self._kdbus_dev)
        return self._files

    def close_fd(self, fd: int) -> None:
        closer.close(fd)

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
            self._process = ProcProcess(self.tid, *self._ids)
        return self._process

    def read_into(self, address: int, size: int, buffer: object, offset: int) -> None:
        self._memory.read_into(self.tid, address, size, buffer, offset)

    def read(self, address: int, size: int) -> bytes:
        return self._memory.read(self.tid, address, size)

    def write(self, address: int, data: bytes) -> None:
        self._memory.write(self.tid, address, data)


class SupervisedCaller(RequestCaller):
    """A task whose ioctl reached us as a seccomp notification (it runs under `kdbusfs run`): the
    daemon serves the ioctl itself while the task waits, and can install descriptors in it."""

    __slots__ = ("_listener", "_notif_id")

    def __init__(self, memory: ProcessMemory, tid: int, listener: int, notif_id: int,
                 kdbus_dev: int | None = None) -> None:
        # fsuid/fsgid are read from /proc with the rest of the creds; these only stand in if it
        # cannot be read.
        super().__init__(memory, tid, -1, -1, kdbus_dev)
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
            pool.dirty.append((min(touched), max(touched) + 4))
        passed.close()
        return complete


# pidfd_getfd(2) has no wrapper in Python's os module.
_SYS_PIDFD_GETFD = 438
_libc.syscall.restype = ctypes.c_long
F_GET_SEALS = 1034
# A memfd must be sealed against all change to be passed: kdbus then needs no copy of it.
REQUIRED_SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL | SHRINK | GROW | WRITE


class Closer:
    """Closes descriptors on a thread of its own.

    Closing a file of a FUSE file system sends FLUSH to its daemon and waits for the answer; for a
    file of our own mount that daemon is us, so the serving thread must never be the one waiting.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def close(self, fd: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kdbusfs-closer", daemon=True)
            self._thread.start()
        self._queue.put(fd)

    def _run(self) -> None:
        while True:
            fd = self._queue.get()
            try:
                os.close(fd)
            except OSError:
                pass


closer = Closer()


class MountTable:
    """Maps mount ids (from fdinfo) to devices (from mountinfo), so files are placed by name only.

    kdbusfs must not fstat, poll or close a descriptor of its own mount on its serving thread: each
    of those is a FUSE request to itself. The table is read again only when the kernel says the
    mount table changed (POLLPRI on an open mountinfo): ids of internal mounts (pipes, sockets,
    memfds) are never listed, and looking for them must not mean reading mountinfo every time.
    """

    def __init__(self) -> None:
        self._devices: dict[int, int] = {}
        self._file: int | None = None
        self._poll = select.poll()

    def _changed(self) -> bool:
        if self._file is None:
            self._file = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            self._poll.register(self._file, select.POLLPRI | select.POLLERR)
            return True
        return bool(self._poll.poll(0))

    def device(self, mount_id: int) -> int | None:
        if self._changed():
            assert self._file is not None
            # The poll that reported the change also acknowledged it; read the new table.
            os.lseek(self._file, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(self._file, 65536):
                chunks.append(chunk)
            text = b"".join(chunks).decode("utf-8", "surrogateescape")
            self._devices = {m.mount_id: m.device for m in mountinfo(text)}
        return self._devices.get(mount_id)


_mounts = MountTable()


def task_file(tid: int, fd: int) -> tuple[int | None, int] | None:
    """(device, inode) of the file behind `fd` of task `tid`, from /proc without touching the
    file (inode 0 where fdinfo does not say); None if the task has no such fd."""
    info = _read_text(f"/proc/{tid}/fdinfo/{fd}")
    if info is None:
        return None
    info = b"\n" + info
    mount_id = _field(info, b"\nmnt_id:")
    inode = _field(info, b"\nino:")
    return (_mount_device(tid, int(mount_id)) if mount_id else None), int(inode or 0)


def _mount_device(tid: int, mount_id: int) -> int | None:
    """The device of mount `mount_id` as task `tid` sees it. Mount ids are per mount namespace:
    one the daemon's table does not know is looked up in the task's own (a service with
    PrivateTmp= and the like has a namespace of its own)."""
    device = _mounts.device(mount_id)
    if device is not None or _ns_inode(tid, "mnt") == _OWN_NS["mnt"]:
        # Known, or in our namespace and still unknown: a mount no table lists (pipefs, sockfs).
        return device
    text = _read_text(f"/proc/{tid}/mountinfo", 1 << 20)
    if text is None:
        return None
    prefix = f"{mount_id} ".encode()
    for line in text.splitlines():
        if line.startswith(prefix):
            major, minor = line.split()[2].split(b":")
            return os.makedev(int(major), int(minor))
    return None


def _fd_device(pid: int, fd: int) -> int | None:
    """Device of the file behind `fd` of `pid`, from /proc (without touching the file); EBADF if none."""
    found = task_file(pid, fd)
    if found is None:
        raise KdbusError(errno.EBADF, f"task {pid} has no fd {fd}")
    return found[0]


# pidfd_open(2) flag: a pidfd for the thread itself, not its thread group (Linux 6.9).
PIDFD_THREAD = os.O_EXCL


def _thread_pidfd(tid: int, tgid: int) -> int:
    """A pidfd of the sending thread, whose fd table stays reachable after its leader exits."""
    try:
        return os.pidfd_open(tid, PIDFD_THREAD)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise KdbusError(errno.EBADF, f"sender {tid} is gone ({exc.strerror})") from None
    try:
        # A kernel without PIDFD_THREAD opens thread groups only: the fds of the group, which
        # its threads share (unless the leader has exited: then they cannot be reached).
        return os.pidfd_open(tgid)
    except OSError as exc:
        raise KdbusError(errno.EBADF, f"sender {tgid} is gone ({exc.strerror})") from None


class SenderFiles:
    """The sender's descriptors, checked as kdbus checks them.

    Each is first placed through /proc (a kdbus file of this mount is refused without being
    touched), then duplicated with pidfd_getfd (the same open file description) for the checks that
    need the file. The duplicates of passed fds and memfds are the message's to hold until its
    receiver takes them; everything else is closed again.
    """

    def __init__(self, tid: int, tgid: int, kdbus_dev: int | None) -> None:
        self._tid = tid
        self._tgid = tgid
        self._kdbus_dev = kdbus_dev
        self._pidfd: int | None = None

    def _is_kdbus(self, pid: int, fd: int) -> bool:
        return self._kdbus_dev is not None and _fd_device(pid, fd) == self._kdbus_dev

    def grab(self, fd: int, recheck: bool = True) -> int:
        """A duplicate of the sender's `fd` (close-on-exec, as pidfd_getfd makes it); EBADF if it
        is closed. Unless told not to, a kdbus file swapped in after the check by name is refused."""
        if fd < 0:
            raise KdbusError(errno.EBADF, f"negative fd {fd}")
        if self._pidfd is None:
            self._pidfd = _thread_pidfd(self._tid, self._tgid)
        got = _libc.syscall(_SYS_PIDFD_GETFD, self._pidfd, fd, 0)
        if got < 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                raise KdbusError(errno.EPERM, f"no access to the descriptors of task {self._tid}")
            raise KdbusError(errno.EBADF, f"sender has no fd {fd} ({os.strerror(err)})")
        copy = int(got)
        if recheck and self._is_kdbus(os.getpid(), copy):
            # Swapped in after the check by name: refuse it, and let the closer send the FLUSH.
            closer.close(copy)
            raise KdbusError(errno.EOPNOTSUPP, f"fd {fd} is a kdbus file")
        return copy

    def check_fds(self, fds: list[int]) -> list[int]:
        held: list[int] = []
        try:
            for fd in fds:
                if self._is_kdbus(self._tid, fd):
                    raise KdbusError(errno.EOPNOTSUPP, f"fd {fd} is a kdbus file and cannot be passed")
                copy = self.grab(fd)
                held.append(copy)
                link = os.readlink(f"/proc/self/fd/{copy}")
                if link.startswith("socket:"):
                    sock = socket.socket(fileno=os.dup(copy))
                    try:
                        family = sock.family
                    finally:
                        sock.close()
                    if family == socket.AF_UNIX:
                        raise KdbusError(errno.EOPNOTSUPP, f"fd {fd} is a unix socket and cannot be passed")
        except BaseException:
            self.release(held)
            raise
        return held

    def release(self, held: list[int]) -> None:
        # Closing may wait on another file system (the fd's, perhaps ours): never on this thread.
        for fd in held:
            closer.close(fd)

    def check_memfd(self, fd: int, start: int, size: int) -> int:
        # No placing by name first: F_GET_SEALS touches no file system (it fails for anything but
        # shmem, kdbus files included, with the errno kdbus gives them), and once it succeeds the
        # copy is shmem, which may be fstat'ed and closed right here.
        copy = self.grab(fd, recheck=False)
        try:
            seals = fcntl.fcntl(copy, F_GET_SEALS)
        except OSError:
            closer.close(copy)
            raise KdbusError(errno.EMEDIUMTYPE, f"fd {fd} is not a memfd") from None
        try:
            if seals & REQUIRED_SEALS != REQUIRED_SEALS:
                raise KdbusError(errno.ETXTBSY, f"memfd {fd} is not sealed (seals {seals:#x})")
            if start + size > os.fstat(copy).st_size:
                raise KdbusError(errno.EFAULT, f"memfd {fd}: range {start}+{size} past its end")
        except BaseException:
            os.close(copy)
            raise
        return copy

    def pollable(self, fd: int) -> int:
        """A duplicate of a CANCEL_FD to watch: EBADF if closed, EINVAL if it cannot be polled."""
        if fd >= 0 and self._is_kdbus(self._tid, fd):
            # Polling our own file would be a request to ourselves.
            raise KdbusError(errno.EINVAL, f"cancel fd {fd} is a kdbus file")
        copy = self.grab(fd)
        try:
            link = os.readlink(f"/proc/self/fd/{copy}")
        except OSError:
            closer.close(copy)
            raise KdbusError(errno.EBADF, f"cancel fd {fd} cannot be placed") from None
        if link.startswith("/") and not link.startswith("/dev/"):
            # A file or directory on a file system: regular files have no poll in kdbus's sense.
            closer.close(copy)
            raise KdbusError(errno.EINVAL, f"cancel fd {fd} ({link}) cannot be polled")
        return copy

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def mount_device(mountpoint: str) -> int | None:
    """st_dev of the file system mounted at `mountpoint` (read from mountinfo, not by stat)."""
    try:
        mounts = mountinfo()
    except OSError:
        return None
    # The last mount at a point is the one on top: ours, even over a stale one below it.
    devices = [m.device for m in mounts if m.point == mountpoint]
    return devices[-1] if devices else None
