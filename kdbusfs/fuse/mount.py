"""Getting a /dev/fuse descriptor mounted: mount(2) as root, fusermount3 for everyone else."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import socket
import stat
import subprocess
import threading
from typing import NamedTuple

from ..limits import DAEMON_ANSWER_TIMEOUT_S

MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class MountError(Exception):
    pass


def libc_mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    ok = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data else None)
    if ok != 0:
        raise MountError(f"mount {target}: {os.strerror(ctypes.get_errno())}")


def libc_umount(target: str, flags: int = 0) -> None:
    if _libc.umount2(target.encode(), flags) != 0:
        raise MountError(f"umount {target}: {os.strerror(ctypes.get_errno())}")


class Mount(NamedTuple):
    mount_id: int
    device: int
    point: str
    fstype: str
    source: str


def mountinfo(text: str | None = None) -> list[Mount]:
    """Every mount of this mount namespace, in mount order (/proc/self/mountinfo, or its `text`).

    Read by name, never by stat: a stat of our own mount would be a request to ourselves.
    """
    if text is None:
        with open("/proc/self/mountinfo") as f:
            text = f.read()
    out = []
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        major, minor = fields[2].split(":")
        out.append(Mount(int(fields[0]), os.makedev(int(major), int(minor)), _unescape(fields[4]),
                         fields[sep + 1], fields[sep + 2]))
    return out


def _unescape(path: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...).
    return path.encode().decode("unicode_escape") if "\\" in path else path


def check_mountpoint(mountpoint: str) -> None:
    """Refuse to mount over a live or stale FUSE mount, saying how to fix it."""
    fstype = None
    for mount in mountinfo():
        if mount.point == mountpoint:
            fstype = mount.fstype
    if fstype is None or not fstype.startswith("fuse"):
        return
    err = _ask_daemon(mountpoint)
    if err == errno.ENOTCONN:
        raise MountError(
            f"{mountpoint} holds a stale {fstype} mount whose daemon is gone; unmount it with "
            f"'fusermount3 -u {mountpoint}' (as root also 'umount -l {mountpoint}') and mount again"
        )
    if err is None:
        raise MountError(
            f"{mountpoint} holds a {fstype} mount whose daemon has not answered for "
            f"{DAEMON_ANSWER_TIMEOUT_S:.0f} s; if it is stuck, 'umount -l {mountpoint}' and mount again"
        )
    if err:
        raise MountError(f"{mountpoint}: {os.strerror(err)}")
    raise MountError(f"{mountpoint} is already a {fstype} mount; unmount it first")


def _ask_daemon(mountpoint: str) -> int | None:
    """0 if the daemon of the mount at `mountpoint` answers, its errno if the kernel refuses
    (ENOTCONN: the daemon is gone), None if it does not answer in time.

    statfs, not stat: the kernel answers stat from attributes it cached while the daemon lived,
    while every statfs is a request that reaches the daemon (or fails once its connection is gone).
    One exception: a caller the mount does not admit (root at a user's mount without allow_other)
    gets an answer made up by the kernel, so such a stale mount reads as live.
    """
    outcome: list[int] = []

    def probe() -> None:
        try:
            os.statvfs(mountpoint)
        except OSError as exc:
            outcome.append(exc.errno or errno.EIO)
        else:
            outcome.append(0)

    # A daemon alive but stuck would hold the probe forever; the thread cannot hold us up.
    thread = threading.Thread(target=probe, name="statfs-probe", daemon=True)
    thread.start()
    thread.join(DAEMON_ANSWER_TIMEOUT_S)
    return outcome[0] if outcome else None


def mount(mountpoint: str, fsname: str, subtype: str, allow_other: bool) -> int:
    """Mount a new FUSE file system at `mountpoint`; returns the /dev/fuse descriptor serving it."""
    st = os.stat(mountpoint)
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"{mountpoint}: not a directory")
    if os.geteuid() == 0:
        return _mount_direct(mountpoint, fsname, subtype, allow_other, st.st_mode)
    return _mount_fusermount(mountpoint, fsname, subtype, allow_other)


def _mount_direct(mountpoint: str, fsname: str, subtype: str, allow_other: bool, mode: int) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    options = [f"fd={fd}", f"rootmode={stat.S_IFMT(mode) | 0:o}", f"user_id={os.getuid()}",
               f"group_id={os.getgid()}", "default_permissions"]
    if allow_other:
        options.append("allow_other")
    data = ",".join(options).encode()
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if _libc.mount(fsname.encode(), mountpoint.encode(), f"fuse.{subtype}".encode(), flags, data) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise MountError(f"mount {mountpoint}: {os.strerror(err)}")
    return fd


def _mount_fusermount(mountpoint: str, fsname: str, subtype: str, allow_other: bool) -> int:
    fusermount = shutil.which("fusermount3")
    if fusermount is None:
        raise MountError("fusermount3 not found: install the fuse3 package")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise MountError("/dev/fuse is not accessible to this user (mode 0666 needed for user mounts)")
    options = [f"fsname={fsname}", f"subtype={subtype}", "nosuid", "nodev", "noexec",
               "default_permissions"]
    if allow_other:
        options.append("allow_other")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        proc = subprocess.run(
            [fusermount, "-o", ",".join(options), "--", mountpoint], env=env,
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        theirs.close()
        if proc.returncode != 0:
            raise MountError(proc.stderr.strip() or f"fusermount3 failed ({proc.returncode})")
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if not fds:
            raise MountError("fusermount3 sent no /dev/fuse descriptor")
        os.set_inheritable(fds[0], False)
        return fds[0]
    finally:
        ours.close()
        if theirs.fileno() >= 0:
            theirs.close()


def unmount(mountpoint: str, lazy: bool = True) -> None:
    """Detach the mount; the session loop then sees ENODEV and ends."""
    if os.geteuid() == 0:
        if _libc.umount2(mountpoint.encode(), MNT_DETACH if lazy else 0) != 0:
            err = ctypes.get_errno()
            raise MountError(f"umount {mountpoint}: {os.strerror(err)}")
        return
    args = ["fusermount3", "-u"] + (["-z"] if lazy else []) + ["--", mountpoint]
    proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise MountError(proc.stderr.strip() or "fusermount3 -u failed")
