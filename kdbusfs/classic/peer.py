"""Who is at the other end of a classic client's socket, fixed when the endpoint accepts it.

The identity is the kernel's, taken at connect(2): SO_PEERCRED's uid and gid (its effective ids)
stand for all four of kdbus's uids and gids, SO_PEERGROUPS gives the supplementary groups, and
there are no capabilities. /proc is never asked who the peer is: by the time a client says Hello
its process may have exec'd a setuid program, or exited and its pid gone to another process, and
its status would then grant what the connecting process never had.

The other process facts kdbus attaches (comm, exe, cmdline, cgroup, audit ids, security label,
namespaces) can only come from /proc; they are read once, at accept, and kept only if they are
known to be the connecting process's: through the pidfd SO_PEERPIDFD gives (Linux 6.5+), which
pins that process, or, without one, if the pid's start time is the same before and after the
reads and its Uid/Gid lines are SO_PEERCRED's ids. Otherwise they stay absent, and the peer's
namespaces count as unknown (it sees others' ids and pids as from outside, and is seen so).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import struct

from ..abi.constants import ATTACH_ALL, Attach
from ..bus.metadata import UNKNOWN_NS, UNKNOWN_USERNS, Creds, Snapshot
from ..host.proc import ProcProcess, field, read_status, read_text

log = logging.getLogger("kdbusfs.classic")

# Not in every Python's socket module (asm-generic/socket.h values, the same on every architecture
# kdbusfs runs on).
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
_UCRED = struct.Struct("3i")
# Supplementary groups SO_PEERGROUPS may report (the kernel's NGROUPS_MAX).
_NGROUPS_MAX = 65536
# Every fact but the capabilities: capability sets read from /proc after connect(2) may be a
# setuid program's, and the identity they would go with is SO_PEERCRED's, which has none.
_FACTS = ATTACH_ALL & ~Attach.CAPS


def credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected, as the daemon's namespaces see them (pid 0:
    a process in a pid namespace the daemon cannot see)."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid, gid


def capture(sock: socket.socket, pid: int, uid: int, gid: int) -> Snapshot:
    """The peer's identity and process facts for its kdbus connection, all read now."""
    creds = Creds(pid, pid, 0, uid, uid, uid, uid, gid, gid, gid, gid, groups=_groups(sock))
    facts = _facts(sock, pid, uid, gid) if pid > 0 else None
    if facts is None:
        return absent(creds)
    # Only what /proc adds to the identity: the parent's pid and the command name.
    read = facts.creds_
    facts.creds_ = Creds(pid, pid, read.ppid, uid, uid, uid, uid, gid, gid, gid, gid, comm=read.comm,
                         groups=creds.groups)
    return facts


def absent(creds: Creds) -> Snapshot:
    """An identity without process facts: its namespaces unknown, never taken for the daemon's."""
    return Snapshot(creds, userns_=UNKNOWN_USERNS, pidns_=(UNKNOWN_NS,))


def _groups(sock: socket.socket) -> tuple[int, ...]:
    size = 64 * 4
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            # ERANGE: more groups than the buffer holds (the kernel says how many only in C).
            if exc.errno == errno.ERANGE and size < _NGROUPS_MAX * 4:
                size *= 16
                continue
            return ()
        return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])


def _facts(sock: socket.socket, pid: int, uid: int, gid: int) -> Snapshot | None:
    try:
        pidfd = peer_pidfd(sock)
    except OSError as exc:
        if exc.errno != errno.ENOPROTOOPT:
            return None  # the connecting process is gone: nothing about it can be read any more
        return _facts_by_start_time(pid, uid, gid)
    try:
        if _pidfd_pid(pidfd) != pid:
            return None
        facts = _read(pid, uid, gid)
        # While the pidfd's process lives (a zombie included) no other process gets its pid: if
        # it lives now, every read above was of its /proc directory.
        return facts if _alive(pidfd) else None
    finally:
        os.close(pidfd)


def peer_pidfd(sock: socket.socket) -> int:
    """A pidfd of the process that connected (OSError ENOPROTOOPT before Linux 6.5)."""
    pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    os.set_inheritable(pidfd, False)
    return pidfd


def _pidfd_pid(pidfd: int) -> int:
    info = read_text(f"/proc/self/fdinfo/{pidfd}") or b""
    try:
        return int(field(b"\n" + info, b"\nPid:") or b"0")
    except ValueError:
        return 0


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except PermissionError:
        return True  # it exists; the daemon may just not signal it
    except OSError:
        return False
    return True


def _facts_by_start_time(pid: int, uid: int, gid: int) -> Snapshot | None:
    """Without a pidfd: the facts count only if one process with the peer's ids answered every
    read (the same start time before and after them, SO_PEERCRED's ids in its status both times).
    A pid reused before the accept by another process of the same user passes: the fallback's
    limit, which only costs wrong facts, never rights."""
    started = _start_time(pid)
    if started is None or not _has_ids(pid, uid, gid):
        return None
    facts = _read(pid, uid, gid)
    if _start_time(pid) != started or not _has_ids(pid, uid, gid):
        return None
    return facts


def _start_time(pid: int) -> int | None:
    raw = read_text(f"/proc/{pid}/stat", 1024)
    if raw is None:
        return None
    # After "pid (comm) ": the comm may hold spaces and parentheses, so cut at the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # starttime, field 22 of stat(5)
    except (IndexError, ValueError):
        return None


def _has_ids(pid: int, uid: int, gid: int) -> bool:
    status = read_status(pid)
    if status is None:
        return False
    uids = field(status, b"\nUid:").split()
    gids = field(status, b"\nGid:").split()
    return uids == [str(uid).encode()] * 4 and gids == [str(gid).encode()] * 4


def _read(pid: int, uid: int, gid: int) -> Snapshot:
    return Snapshot.capture(ProcProcess(pid, uid, gid), _FACTS)
