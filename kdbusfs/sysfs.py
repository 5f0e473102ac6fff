"""Placing a kdbusfs at /sys/fs/kdbus on a kernel without kdbus.

/sys/fs/kdbus exists only with the kdbus module, and sysfs refuses mkdir even to root. kdbusfs
therefore lays a small tmpfs over /sys/fs, recreates every original entry in it as a recursive bind
mount of the original (so cgroup, bpf, fuse/connections, ... keep working, submounts included),
adds the empty directory kdbus, and mounts there. Detaching that tmpfs (which the daemon does when
its mount goes away) brings back /sys/fs exactly as it was: the originals were never touched.

Entries that sysfs creates under /sys/fs while the overlay is in place (a module loaded later) stay
hidden until it is removed.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass

from .fuse.mount import MNT_DETACH, MountError, libc_mount, libc_umount, mountinfo

log = logging.getLogger("kdbusfs.sysfs")

SYS_FS = "/sys/fs"
OVERLAY_SOURCE = "kdbusfs-sysfs"
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384


def needs_overlay(mountpoint: str) -> bool:
    return os.path.dirname(mountpoint.rstrip("/")) == SYS_FS and not os.path.exists(mountpoint)


def overlay_present() -> bool:
    return any(m.point == SYS_FS and m.source == OVERLAY_SOURCE for m in mountinfo())


@dataclass
class Overlay:
    """The tmpfs over /sys/fs, while this daemon owns it."""

    def remove(self) -> None:
        try:
            libc_umount(SYS_FS, MNT_DETACH)
        except MountError as exc:
            log.warning("could not remove the /sys/fs overlay: %s", exc)
            return
        log.info("removed the /sys/fs overlay")


def make_room(mountpoint: str) -> Overlay | None:
    """Make `mountpoint` (a new entry of /sys/fs) exist; returns the overlay to remove later."""
    if not needs_overlay(mountpoint):
        if overlay_present():
            # Left by a daemon that died: adopt it, so it goes away with this mount.
            return Overlay()
        return None
    if os.geteuid() != 0:
        raise MountError(f"{mountpoint} does not exist and only root can create it under {SYS_FS}")
    if overlay_present():
        os.mkdir(mountpoint, 0o755)
        return Overlay()
    original = os.open(SYS_FS, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        entries = sorted(os.listdir(f"/proc/self/fd/{original}"))
        libc_mount(OVERLAY_SOURCE, SYS_FS, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   "mode=0755,size=64k,nr_inodes=4096")
        try:
            for name in entries:
                source = f"/proc/self/fd/{original}/{name}"
                target = os.path.join(SYS_FS, name)
                mode = os.stat(source, follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    os.mkdir(target, stat.S_IMODE(mode))
                else:
                    os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, stat.S_IMODE(mode)))
                libc_mount(source, target, None, MS_BIND | MS_REC, None)
            os.mkdir(mountpoint, 0o755)
        except BaseException:
            libc_umount(SYS_FS, MNT_DETACH)
            raise
    finally:
        os.close(original)
    log.info("laid a tmpfs over %s to provide %s (%d entries rebound)", SYS_FS, mountpoint, len(entries))
    return Overlay()
