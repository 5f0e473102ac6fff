"""Which file system a task's descriptor belongs to, found by name (from /proc), never by
touching the file: one of our own mount's would be a FUSE request to ourselves."""

from __future__ import annotations

import errno
import functools
import os
import select

from ..errors import KdbusError
from ..fuse.mount import mountinfo
from .proc import field, ns_inode, own_namespace, read_text


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


@functools.cache
def _table() -> MountTable:
    """The daemon's table: its mount namespace is one for the daemon's life."""
    return MountTable()


def task_file(tid: int, fd: int) -> tuple[int | None, int] | None:
    """(device, inode) of the file behind `fd` of task `tid`, from /proc without touching the
    file (inode 0 where fdinfo does not say); None if the task has no such fd."""
    info = read_text(f"/proc/{tid}/fdinfo/{fd}")
    if info is None:
        return None
    info = b"\n" + info
    mount_id = field(info, b"\nmnt_id:")
    inode = field(info, b"\nino:")
    return (_mount_device(tid, int(mount_id)) if mount_id else None), int(inode or 0)


def _mount_device(tid: int, mount_id: int) -> int | None:
    """The device of mount `mount_id` as task `tid` sees it. Mount ids are per mount namespace:
    one the daemon's table does not know is looked up in the task's own (a service with
    PrivateTmp= and the like has a namespace of its own)."""
    device = _table().device(mount_id)
    if device is not None or ns_inode(tid, "mnt") == own_namespace("mnt"):
        # Known, or in our namespace and still unknown: a mount no table lists (pipefs, sockfs).
        return device
    text = read_text(f"/proc/{tid}/mountinfo", 1 << 20)
    if text is None:
        return None
    prefix = f"{mount_id} ".encode()
    for line in text.splitlines():
        if line.startswith(prefix):
            major, minor = line.split()[2].split(b":")
            return os.makedev(int(major), int(minor))
    return None


def fd_device(pid: int, fd: int) -> int | None:
    """Device of the file behind `fd` of `pid`, from /proc (without touching the file); EBADF if none."""
    found = task_file(pid, fd)
    if found is None:
        raise KdbusError(errno.EBADF, f"task {pid} has no fd {fd}")
    return found[0]


def mount_device(mountpoint: str) -> int | None:
    """st_dev of the file system mounted at `mountpoint` (read from mountinfo, not by stat)."""
    try:
        mounts = mountinfo()
    except OSError:
        return None
    # The last mount at a point is the one on top: ours, even over a stale one below it.
    devices = [m.device for m in mounts if m.point == mountpoint]
    return devices[-1] if devices else None
