"""Pools as memfds the client maps directly (FUSE passthrough, which needs CAP_SYS_ADMIN).

Each open of an endpoint gets a memfd registered with the FUSE connection as its backing file: the
kernel then serves the client's reads and mappings of the file from the memfd, which is the
daemon's pool, and no pool byte needs copying into a page cache.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct

from ..fuse import protocol as p

log = logging.getLogger("kdbusfs.host")

# F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE (Python's fcntl lacks the last one).
F_SEAL_POOL = 0x0002 | 0x0004 | 0x0010


class PoolFiles:
    """Backing files on one FUSE connection (`fuse_fd`, the daemon's /dev/fuse descriptor)."""

    def __init__(self, fuse_fd: int) -> None:
        self._fuse_fd = fuse_fd

    def open(self) -> tuple[int, int] | None:
        """A fresh memfd and its backing id; None if passthrough cannot be had (logged)."""
        try:
            memfd = os.memfd_create("kdbusfs-pool", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError as exc:
            # Out of descriptors, say: this open's pool goes through the page cache instead.
            log.warning("no memfd for a pool (%s); using the page cache for it", exc.strerror)
            return None
        try:
            # A mutable buffer makes fcntl.ioctl return the call's result: the backing id.
            backing_map = bytearray(p.BACKING_MAP.pack(memfd, 0, 0))
            backing_id: int = fcntl.ioctl(self._fuse_fd, p.DEV_IOC_BACKING_OPEN, backing_map, True)
        except OSError:
            os.close(memfd)
            raise
        return memfd, backing_id

    def close(self, memfd: int, backing_id: int) -> None:
        try:
            fcntl.ioctl(self._fuse_fd, p.DEV_IOC_BACKING_CLOSE, struct.pack("<I", backing_id))
        except OSError as exc:
            log.warning("closing backing file %d: %s", backing_id, exc.strerror)
        os.close(memfd)


def map_pool(memfd: int, size: int) -> mmap.mmap:
    """A pool of `size` bytes in `memfd`, which the client maps through passthrough.

    Sealed only once its HELLO has succeeded (seal_pool): a HELLO that fails after this leaves
    the handle fresh, and the next HELLO on it may ask for another size.
    """
    os.ftruncate(memfd, 0)  # nothing of a failed HELLO's pool survives into the next one
    os.ftruncate(memfd, size)
    return mmap.mmap(memfd, size)


def seal_pool(memfd: int) -> None:
    # The daemon keeps its writable mapping; write(2) on the connection fd (which passthrough
    # would send to the memfd) now fails, and the pool's size is fixed. A writable shared mapping
    # cannot be refused this way: FUSE passthrough maps the memfd without shmem's seal check.
    fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, F_SEAL_POOL)
