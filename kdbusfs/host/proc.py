"""What /proc says about a task: credentials, namespaces, process facts for metadata.

Every read is of the task's /proc files, never of a file the task has open: a file of our own
mount would be a FUSE request to ourselves.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import struct
from collections import OrderedDict
from collections.abc import Callable

from .. import limits
from ..bus.metadata import DAEMON_USERNS, UNKNOWN_NS, Creds, IdMap, Ids, NsPids, UserNamespace

log = logging.getLogger("kdbusfs.host")

# ioctl(2) requests on nsfs descriptors (linux/nsfs.h): _IO(0xb7, 0x2) and _IO(0xb7, 0x4).
NS_GET_PARENT = 0xB702
NS_GET_OWNER_UID = 0xB704

# pidfd_open(2) of a thread, not its thread group (Linux 6.9), and PIDFD_GET_INFO (linux/pidfd.h,
# Linux 6.13): _IOWR(0xFF, 11, struct pidfd_info) in its first, 64-byte version (the size in the
# request tells the kernel which version the caller knows).
PIDFD_THREAD = os.O_EXCL
PIDFD_INFO = struct.Struct("<QQ11Ii")  # mask, cgroupid, pid, tgid, ppid, ruid, rgid, euid, egid, suid,
#                                        sgid, fsuid, fsgid, exit_code
PIDFD_GET_INFO = (3 << 30) | (PIDFD_INFO.size << 16) | (0xFF << 8) | 11
PIDFD_INFO_PID = 1 << 0
PIDFD_INFO_CREDS = 1 << 1
if PIDFD_INFO.size != 64:
    raise ImportError(f"struct pidfd_info's first version has 64 bytes, not {PIDFD_INFO.size}")
# What a message's sender is asked: its pids and its ids.
_PIDFD_ASK = PIDFD_INFO.pack(PIDFD_INFO_PID | PIDFD_INFO_CREDS, *(0,) * 13)


@functools.cache
def own_namespace(kind: str) -> int:
    """The daemon's own namespace of `kind` (its inode): ids and pids from /proc are as seen from
    it. 0 without nsfs: every task then counts as living in the daemon's namespaces."""
    try:
        return os.stat(f"/proc/self/ns/{kind}").st_ino
    except OSError:
        return 0


@functools.cache
def _cap_last_cap() -> int:
    return int((read_text("/proc/sys/kernel/cap_last_cap") or b"40").strip())


_SIGKILL_BIT = 1 << 8


def dying(tid: int) -> bool:
    """Whether a task is gone or has a fatal signal pending (SIGKILL, as fatal signals become)."""
    status = read_status(tid)
    if status is None:
        return True
    for key in (b"\nSigPnd:", b"\nShdPnd:"):
        if int(field(status, key) or b"0", 16) & _SIGKILL_BIT:
            return True
    return b"\nState:\tZ" in status or b"\nState:\tX" in status


def field(status: bytes, key: bytes) -> bytes:
    start = status.find(key)
    if start < 0:
        return b""
    start += len(key)
    end = status.find(b"\n", start)
    return status[start:end].strip()


def read_creds(tid: int, fsuid: int, fsgid: int) -> Creds:
    """A task's identity from /proc; falls back to the request's fsuid/fsgid if the task is gone."""
    return _creds_from_status(tid, fsuid, fsgid, read_status(tid))


def read_status(tid: int) -> bytes | None:
    return read_text(f"/proc/{tid}/status", 8192)


def ns_inode(tid: int, kind: str) -> int | None:
    """The inode of the task's namespace of `kind`; None if it cannot be read."""
    try:
        return os.stat(f"/proc/{tid}/ns/{kind}").st_ino
    except OSError:
        return None


def in_own_pid_namespace(pid: int) -> bool:
    """Whether `pid` (as we see it) lives in our pid namespace, so that the pids it names are ours.
    From its status, which any user may read (its ns link only those who may ptrace it): NSpid
    lists its pid in our namespace and in every one below down to its own."""
    status = read_status(pid) if pid > 0 else None
    return status is not None and len(field(status, b"\nNSpid:").split()) == 1


def _creds_from_status(tid: int, fsuid: int, fsgid: int, status: bytes | None,
                       user_ns: Callable[[], int | None] | None = None, defer_userns: bool = False) -> Creds:
    """Creds from a status read; `user_ns` gives the task's user namespace inode, when a caller
    that needs it anyway has (or will have) looked it up: each lookup costs a path walk in /proc.
    `defer_userns`: look it up only if a capability is asked about (Creds.in_domain_userns)."""
    if status is None:
        return Creds.for_ids(fsuid, fsgid, tid)
    uids = [int(x) for x in field(status, b"\nUid:").split()] or [fsuid] * 4
    gids = [int(x) for x in field(status, b"\nGid:").split()] or [fsgid] * 4
    caps = int(field(status, b"\nCapEff:") or b"0", 16)
    in_domain_userns: bool | Callable[[], bool] = True
    if caps:
        # Capabilities count only in the daemon's user namespace (the domain's).
        def lookup() -> bool:
            inode = user_ns() if user_ns is not None else ns_inode(tid, "user")
            return inode is not None and inode == own_namespace("user")
        in_domain_userns = lookup if defer_userns else lookup()
    return Creds(
        pid=int(field(status, b"\nTgid:") or tid), tid=tid, ppid=int(field(status, b"\nPPid:") or 0),
        uid=uids[0], euid=uids[1], suid=uids[2], fsuid=uids[3],
        gid=gids[0], egid=gids[1], sgid=gids[2], fsgid=gids[3],
        cap_effective=caps, in_domain_userns=in_domain_userns,
        comm=field(b"\n" + status, b"\nName:").decode("utf-8", "replace"),
        groups=tuple(int(x) for x in field(status, b"\nGroups:").split()),
    )


class TaskFiles:
    """/proc files of tasks that send, kept open and read again (pread) for every message.

    kdbus takes a sender's creds, pids and comms from the sending thread at each SEND, so each
    message reads them again; what an open file spares is the path walk and the open and close
    (a status costs ~11 µs opened by path, ~6 µs read again). A file stays bound to the task it
    was opened for, not to its number: once that task is gone, reads fail with ESRCH and the file
    is opened again by path, then naming whichever task has the number.

    What a status says of a task's identity is parsed again only when the lines it comes from
    read differently (identity()): the comparison is of those very bytes, so it cannot go stale.

    Where the kernel has PIDFD_GET_INFO, a task's pids and ids come from its pidfd, kept open the
    same way (ids()): one ioctl of ~1 µs instead of a status of ~6 µs that also formats memory,
    signal and capability lines no CREDS or PIDS item needs."""

    __slots__ = ("_open", "_capacity", "_identities", "_pidfd_info")

    def __init__(self, capacity: int = limits.TASK_FILES_OPEN) -> None:
        # (tid, file name in /proc/TID or "pidfd") -> descriptor, least recently read first.
        self._open: OrderedDict[tuple[int, str], int] = OrderedDict()
        self._capacity = capacity
        # tid -> (its status's identity lines, the Creds and comm parsed from them), oldest first.
        self._identities: dict[int, tuple[bytes, Creds, str | None]] = {}
        # Until the kernel says it has no PIDFD_THREAD or PIDFD_GET_INFO.
        self._pidfd_info = True

    def ids(self, tid: int) -> Ids | None:
        """The pids and ids of task `tid` now, from its pidfd; None if the kernel cannot tell them
        so or the task is gone (its status then says what there is to say)."""
        if not self._pidfd_info:
            return None
        key = (tid, "pidfd")
        fd = self._open.get(key)
        if fd is not None:
            ids = self._pidfd_ids(fd)
            if ids is not None:
                self._open.move_to_end(key)
                return ids
            # Its task is gone: the number may belong to another one by now.
            del self._open[key]
            os.close(fd)
        try:
            fd = os.pidfd_open(tid, PIDFD_THREAD)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                self._pidfd_info = False
            return None
        ids = self._pidfd_ids(fd)
        if ids is None:
            os.close(fd)
            return None
        self._keep(key, fd)
        return ids

    def _pidfd_ids(self, fd: int) -> Ids | None:
        info = bytearray(_PIDFD_ASK)
        try:
            fcntl.ioctl(fd, PIDFD_GET_INFO, info, True)
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EINVAL):
                self._pidfd_info = False
            return None  # ESRCH: gone (or its parent is outside our pid namespace)
        (mask, _cgroup, pid, tgid, ppid, uid, gid, euid, egid, suid, sgid, fsuid, fsgid,
         _exit) = PIDFD_INFO.unpack(info)
        if mask & (PIDFD_INFO_PID | PIDFD_INFO_CREDS) != PIDFD_INFO_PID | PIDFD_INFO_CREDS:
            return None
        return Ids(tgid, pid, ppid, uid, euid, suid, fsuid, gid, egid, sgid, fsgid)

    def identity(self, tid: int, status: bytes) -> tuple[Creds, str | None] | None:
        """The Creds and comm in a status just read of `tid`: parsed only if its identity lines
        changed since the last; None if the status does not have them where expected."""
        lines = _identity_lines(status)
        if lines is None:
            return None
        known = self._identities.get(tid)
        if known is not None and known[0] == lines:
            return known[1], known[2]
        if not all(key in lines for key in _IDENTITY_KEYS):
            return None
        # Every line Creds reads is in `lines`, so what they say depends on nothing else; the
        # user namespace, not in a status, is looked up afresh whenever a capability is asked.
        creds = _creds_from_status(tid, -1, -1, lines, defer_userns=True)
        comm = _status_name(lines)
        if known is None and len(self._identities) >= self._capacity:
            del self._identities[next(iter(self._identities))]
        self._identities[tid] = (lines, creds, comm)
        return creds, comm

    def read(self, tid: int, name: str, limit: int = 4096) -> bytes | None:
        """The file `name` of task `tid` as it reads now; None if the task has none or is gone."""
        key = (tid, name)
        fd = self._open.get(key)
        if fd is not None:
            try:
                data = os.pread(fd, limit, 0)
            except OSError:
                # Its task is gone: the number may belong to another one by now.
                del self._open[key]
                os.close(fd)
            else:
                self._open.move_to_end(key)
                return data
        try:
            fd = os.open(f"/proc/{tid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = os.pread(fd, limit, 0)
        except OSError:
            os.close(fd)
            return None
        self._keep(key, fd)
        return data

    def _keep(self, key: tuple[int, str], fd: int) -> None:
        self._open[key] = fd
        if len(self._open) > self._capacity:
            os.close(self._open.popitem(last=False)[1])

    def __len__(self) -> int:
        return len(self._open)

    def close_files(self) -> None:
        """Close every file kept open (what was parsed from them stays: it holds no task)."""
        while self._open:
            os.close(self._open.popitem()[1])

    def close(self) -> None:
        self.close_files()
        self._identities.clear()


# The status lines Creds is made of, bar Groups and CapEff (_identity_lines takes those on their own).
_IDENTITY_KEYS = (b"\nTgid:", b"\nPPid:", b"\nUid:", b"\nGid:")


def _identity_lines(status: bytes) -> bytes | None:
    """The lines of a status Creds and the comm are made of, as one string: from Name up to FDSize
    (Name, Tgid, PPid, Uid, Gid and a few others), Groups and CapEff. None if one is missing."""
    fdsize = status.find(b"\nFDSize:")
    groups = status.find(b"\nGroups:")
    groups_end = status.find(b"\n", groups + 1)
    cap = status.find(b"\nCapEff:")
    cap_end = status.find(b"\n", cap + 1)
    if fdsize < 0 or groups < 0 or groups_end < 0 or cap < 0 or cap_end < 0:
        return None
    # Each piece starts at a line's newline; the last line keeps its own, as status lines end.
    return b"".join((status[:fdsize], status[groups:groups_end], status[cap : cap_end + 1]))


def read_text(path: str, limit: int = 4096) -> bytes | None:
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




def _namespace_path(tid: int, kind: str, owners: list[int] | None = None,
                    inode: int | None = None) -> tuple[int, ...]:
    """The task's namespace of `kind` and its ancestors below the daemon's, outermost first; with
    `owners`, also the owner uid of each (user namespaces). (UNKNOWN_NS,) if it cannot be read.
    `inode` is the namespace's inode if the caller has looked it up already."""
    if not own_namespace(kind):
        return ()  # no nsfs here at all: everyone shares the daemon's view
    if inode is None:
        inode = ns_inode(tid, kind)
        if inode is None:
            return (UNKNOWN_NS,)
    if inode == own_namespace(kind):
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
            if inode == own_namespace(kind):
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
    raw = read_text(f"/proc/{tid}/{name}") or b""
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
    """A task's process facts from /proc, each read the first time it is asked for.

    Each fact is cached as a 1-tuple once read (None: not read yet), since the fact itself may
    be None (unreadable, or absent like a security label).

    With `files`, the task is a request's caller, perhaps sending a message: its files are read
    through `files` (kept open, its status parsed only when it changed, its ids from its pidfd),
    and whether its capabilities count is looked up only if one is asked about (a SEND's creds
    serve metadata and policy, which never ask). Without, as for an opener, it is settled at
    once: kdbus judges privileges by the credentials of open()."""

    __slots__ = ("tid", "_fsuid", "_fsgid", "_files", "_creds", "_ids", "_userns_inode_read",
                 "_status_read", "_tid_comm", "_pid_comm", "_exe", "_cmdline", "_cgroup", "_caps", "_audit",
                 "_seclabel", "_userns", "_pidns", "_ns_pids", "_root")

    def __init__(self, tid: int, fsuid: int, fsgid: int, files: TaskFiles | None = None) -> None:
        self.tid = tid
        self._fsuid = fsuid
        self._fsgid = fsgid
        self._files = files
        self._creds: Creds | None = None
        self._ids: Ids | None = None
        self._userns_inode_read: tuple[int | None] | None = None
        self._status_read: tuple[bytes | None] | None = None
        self._tid_comm: tuple[str | None] | None = None
        self._pid_comm: tuple[str | None] | None = None
        self._exe: tuple[str | None] | None = None
        self._cmdline: tuple[str | None] | None = None
        self._cgroup: tuple[str | None] | None = None
        self._caps: tuple[bytes | None] | None = None
        self._audit: tuple[tuple[int, int] | None] | None = None
        self._seclabel: tuple[str | None] | None = None
        self._userns: UserNamespace | None = None
        self._pidns: tuple[int, ...] | None = None
        self._ns_pids: NsPids | None = None
        self._root: tuple[tuple[int, str] | None] | None = None

    def creds(self) -> Creds:
        if self._creds is None:
            status = self._status()
            known = None
            if self._files is not None and status is not None:
                known = self._files.identity(self.tid, status)
            if known is not None:
                self._creds, comm = known
                if comm is not None and self._tid_comm is None:
                    self._tid_comm = (comm,)
            else:
                self._creds = _creds_from_status(self.tid, self._fsuid, self._fsgid, status,
                                                 self._userns_inode, defer_userns=self._files is not None)
        return self._creds

    def ids(self) -> Ids:
        if self._ids is None:
            if self._creds is None and self._files is not None:
                # A sender whose message needs no more than its CREDS and PIDS items.
                self._ids = self._files.ids(self.tid)
            if self._ids is None:
                self._ids = self.creds().ids()
        return self._ids

    def _userns_inode(self) -> int | None:
        # Both the creds (do capabilities count?) and userns() need it: one /proc lookup.
        if self._userns_inode_read is None:
            self._userns_inode_read = (ns_inode(self.tid, "user"),)
        return self._userns_inode_read[0]

    def _status(self) -> bytes | None:
        # Creds, capabilities, namespace pids and the comm all come from it: one read per request.
        if self._status_read is None:
            self._status_read = (self._read(self.tid, "status", 8192),)
        return self._status_read[0]

    def _read(self, tid: int, name: str, limit: int = 4096) -> bytes | None:
        if self._files is not None:
            return self._files.read(tid, name, limit)
        return read_text(f"/proc/{tid}/{name}", limit)

    def _pid(self) -> int:
        return self.ids().pid

    def tid_comm(self) -> str | None:
        if self._tid_comm is None:
            comm = _status_name(self._status_read[0]) if self._status_read is not None else None
            if comm is None:
                comm = _line(self._read(self.tid, "comm"))
            self._tid_comm = (comm,)
        return self._tid_comm[0]

    def pid_comm(self) -> str | None:
        if self._pid_comm is None:
            pid = self._pid()
            # The thread-group leader's comm: the thread's own if it is the leader.
            self._pid_comm = (self.tid_comm() if pid == self.tid else _line(self._read(pid, "comm")),)
        return self._pid_comm[0]

    def exe(self) -> str | None:
        if self._exe is None:
            try:
                self._exe = (os.readlink(f"/proc/{self._pid()}/exe"),)
            except OSError:
                self._exe = (None,)
        return self._exe[0]

    def cmdline(self) -> str | None:
        if self._cmdline is None:
            raw = read_text(f"/proc/{self._pid()}/cmdline")
            # kdbus attaches argv[0] only.
            self._cmdline = (raw.split(b"\0", 1)[0].decode("utf-8", "replace") if raw else None,)
        return self._cmdline[0]

    def cgroup(self) -> str | None:
        if self._cgroup is None:
            raw = read_text(f"/proc/{self._pid()}/cgroup")
            path = None
            if raw:
                # The first hierarchy listed: "<id>:<controllers>:<path>" (cgroup v2: "0::<path>").
                path = raw.split(b"\n", 1)[0].split(b":", 2)[-1].decode("utf-8", "replace")
            self._cgroup = (path,)
        return self._cgroup[0]

    def caps(self) -> bytes | None:
        if self._caps is None:
            status = self._status()
            value = None
            if status:
                last_cap = _cap_last_cap()
                words = []
                mask = (1 << (last_cap + 1)) - 1
                for key in (b"\nCapInh:", b"\nCapPrm:", b"\nCapEff:", b"\nCapBnd:"):
                    bits = int(field(status, key) or b"0", 16) & mask
                    words.append(struct.pack("<II", bits & 0xFFFFFFFF, bits >> 32))
                value = struct.pack("<I", last_cap) + b"".join(words)
            self._caps = (value,)
        return self._caps[0]

    def audit(self) -> tuple[int, int] | None:
        if self._audit is None:
            session = read_text(f"/proc/{self._pid()}/sessionid")
            login = read_text(f"/proc/{self._pid()}/loginuid")
            self._audit = (None if session is None or login is None else
                           (int(session) & 0xFFFFFFFF, int(login) & 0xFFFFFFFF),)
        return self._audit[0]

    def seclabel(self) -> str | None:
        if self._seclabel is None:
            # EINVAL without a security module: kdbus then attaches no SECLABEL either.
            raw = read_text(f"/proc/{self.tid}/attr/current")
            label = raw.rstrip(b"\n\0").decode("utf-8", "replace") if raw else ""
            self._seclabel = (label or None,)
        return self._seclabel[0]

    def userns(self) -> UserNamespace:
        if self._userns is None:
            self._userns = user_namespace(self.tid, self._userns_inode())
        return self._userns

    def pidns(self) -> tuple[int, ...]:
        if self._pidns is None:
            self._pidns = _namespace_path(self.tid, "pid")
        return self._pidns

    def ns_pids(self) -> NsPids:
        if self._ns_pids is None:
            creds = self.creds()
            status = self._status() or b""
            tgids = _ids(field(status, b"\nNStgid:")) or (creds.pid,)
            tids = _ids(field(status, b"\nNSpid:")) or (creds.tid,)
            parent = read_status(creds.ppid) if creds.ppid else None
            parent_tgids = _ids(field(parent, b"\nNStgid:")) if parent else ()
            self._ns_pids = (tgids, tids, parent_tgids)
        return self._ns_pids

    def root(self) -> tuple[int, str] | None:
        if self._root is None:
            try:
                # readlink, never stat: the root may be a directory of this very mount.
                mnt_ns = os.stat(f"/proc/{self.tid}/ns/mnt").st_ino
                self._root = ((mnt_ns, os.readlink(f"/proc/{self.tid}/root")),)
            except OSError:
                self._root = (None,)
        return self._root[0]


def _status_name(status: bytes | None) -> str | None:
    """The comm in a status's Name line, None if it is not there as it is: status escapes a
    newline or a backslash in it (every escape starts with a backslash), the comm file does not."""
    if not status or not status.startswith(b"Name:\t"):
        return None
    end = status.find(b"\n")
    raw = status[6:end]
    if end < 0 or b"\\" in raw:
        return None
    return raw.decode("utf-8", "replace")


def _line(raw: bytes | None) -> str | None:
    return None if raw is None else raw.rstrip(b"\n").decode("utf-8", "replace")
