"""The sender's descriptors: taken with pidfd_getfd and checked as kdbus checks them."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket

from ..errors import KdbusError
from .closer import Closer
from .libc import libc
from .mounts import fd_device

# pidfd_getfd(2) has no wrapper in Python's os module.
_SYS_PIDFD_GETFD = 438
F_GET_SEALS = 1034
# A memfd must be sealed against all change to be passed: kdbus then needs no copy of it.
REQUIRED_SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL | SHRINK | GROW | WRITE

# pidfd_open(2) flag: a pidfd for the thread itself, not its thread group (Linux 6.9).
PIDFD_THREAD = os.O_EXCL


def is_unix_socket(fd: int) -> bool:
    """Whether the daemon's own `fd` is an AF_UNIX socket, which kdbus refuses to pass (a socket
    in flight could carry itself: a cycle no one could collect)."""
    if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
        return False
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return sock.family == socket.AF_UNIX
    finally:
        sock.close()


def memfd_refusal(copy: int, fd: int, start: int, size: int) -> KdbusError | None:
    """Why the daemon's `copy` of a sender's PAYLOAD_MEMFD `fd` cannot be passed, as kdbus says it
    (EMEDIUMTYPE: not a memfd, ETXTBSY: not sealed against change, EFAULT: the range is past its
    end), or None. F_GET_SEALS touches no file system: it fails for anything but shmem, kdbus files
    included, with the errno kdbus gives them."""
    try:
        seals = fcntl.fcntl(copy, F_GET_SEALS)
    except OSError:
        return KdbusError(errno.EMEDIUMTYPE, f"fd {fd} is not a memfd")
    if seals & REQUIRED_SEALS != REQUIRED_SEALS:
        return KdbusError(errno.ETXTBSY, f"memfd {fd} is not sealed (seals {seals:#x})")
    if start + size > os.fstat(copy).st_size:
        return KdbusError(errno.EFAULT, f"memfd {fd}: range {start}+{size} past its end")
    return None


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

    def __init__(self, tid: int, tgid: int, kdbus_dev: int | None, closer: Closer) -> None:
        self._closer = closer
        self._tid = tid
        self._tgid = tgid
        self._kdbus_dev = kdbus_dev
        self._pidfd: int | None = None

    def _is_kdbus(self, pid: int, fd: int) -> bool:
        return self._kdbus_dev is not None and fd_device(pid, fd) == self._kdbus_dev

    def grab(self, fd: int, recheck: bool = True) -> int:
        """A duplicate of the sender's `fd` (close-on-exec, as pidfd_getfd makes it); EBADF if it
        is closed. Unless told not to, a kdbus file swapped in after the check by name is refused."""
        if fd < 0:
            raise KdbusError(errno.EBADF, f"negative fd {fd}")
        if self._pidfd is None:
            self._pidfd = _thread_pidfd(self._tid, self._tgid)
        got = libc().syscall(_SYS_PIDFD_GETFD, self._pidfd, fd, 0)
        if got < 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                raise KdbusError(errno.EPERM, f"no access to the descriptors of task {self._tid}")
            raise KdbusError(errno.EBADF, f"sender has no fd {fd} ({os.strerror(err)})")
        copy = int(got)
        if recheck and self._is_kdbus(os.getpid(), copy):
            # Swapped in after the check by name: refuse it, and let the closer send the FLUSH.
            self._closer.close(copy)
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
                if is_unix_socket(copy):
                    raise KdbusError(errno.EOPNOTSUPP, f"fd {fd} is a unix socket and cannot be passed")
        except BaseException:
            self.release(held)
            raise
        return held

    def release(self, held: list[int]) -> None:
        # Closing may wait on another file system (the fd's, perhaps ours): never on this thread.
        for fd in held:
            self._closer.close(fd)

    def check_memfd(self, fd: int, start: int, size: int) -> int:
        # No placing by name first (memfd_refusal touches no file system before it knows the copy
        # is shmem); a copy that is not shmem may be another file system's, closed off this thread.
        copy = self.grab(fd, recheck=False)
        try:
            refusal = memfd_refusal(copy, fd, start, size)
        except BaseException:
            self._closer.close(copy)
            raise
        if refusal is not None:
            if refusal.errno == errno.EMEDIUMTYPE:
                self._closer.close(copy)
            else:
                os.close(copy)
            raise refusal
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
            self._closer.close(copy)
            raise KdbusError(errno.EBADF, f"cancel fd {fd} cannot be placed") from None
        if link.startswith("/") and not link.startswith("/dev/"):
            # A file or directory on a file system: regular files have no poll in kdbus's sense.
            self._closer.close(copy)
            raise KdbusError(errno.EINVAL, f"cancel fd {fd} ({link}) cannot be polled")
        return copy

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
