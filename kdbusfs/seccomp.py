"""Seccomp user notification: how a daemon gets to install descriptors in a client's fd table.

A daemon cannot write into another process's fd table, except as the supervisor of a seccomp
filter of that process: while the process waits in a notified syscall, SECCOMP_IOCTL_NOTIF_ADDFD
places a descriptor in it. `kdbusfs run` (the launcher) installs a filter that turns the client's
KDBUS_CMD_RECV (and SEND) ioctls into notifications and hands the filter's listener to the daemon of its
mount; the daemon then serves those RECVs itself, installs the message's descriptors, and
answers the syscall. Every other syscall runs unnotified.

Both halves are here: the filter (for the launcher) and the listener's ioctls (for the daemon).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import platform
import struct
from dataclasses import dataclass
from typing import ClassVar

from .abi.constants import Cmd

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# Per architecture: (AUDIT_ARCH_*, the ioctl syscall number, the seccomp syscall number).
_ARCHES = {
    "x86_64": (0xC000003E, 16, 317),
    "aarch64": (0xC00000B7, 29, 277),
}

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
# Once the daemon has taken a notification, only a fatal signal ends the client's wait: a
# handled signal must not turn a RECV the daemon is serving into an error (as with FUSE).
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
SECCOMP_RET_ALLOW = 0x7FFF_0000
SECCOMP_RET_USER_NOTIF = 0x7FC0_0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
# struct seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64 each).
_DATA_NR = 0
_DATA_ARCH = 4
_DATA_ARG1_LOW = 16 + 8  # the ioctl request number is args[1], an unsigned int

# The listener's ioctls, _IOWR/_IOW('!', nr, struct).
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_ID_VALID = 0x40082102
NOTIF_ADDFD = 0x40182103
# struct seccomp_notif: id, pid, flags, then seccomp_data.
_NOTIF = struct.Struct("<QII" + "iIQ" + "6Q")
_NOTIF_RESP = struct.Struct("<QqiI")
_NOTIF_ADDFD = struct.Struct("<QIIII")
# What /proc/self/fd shows for a listener.
LISTENER_LINK = "anon_inode:seccomp notify"


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    # The notified thread, in the daemon's pid namespace (the daemon and launcher share it).
    tid: int
    syscall: int
    arch: int
    args: tuple[int, ...]

    # As the kernel gives it (struct seccomp_notif): forwarded to another daemon as is.
    SIZE: ClassVar[int] = _NOTIF.size

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Notification:
        fields = _NOTIF.unpack(buffer)
        notif_id, tid, _flags, syscall, arch, _ip = fields[:6]
        return cls(notif_id, tid, syscall, arch, tuple(fields[6:]))

    def pack(self) -> bytes:
        return _NOTIF.pack(self.id, self.tid, 0, self.syscall, self.arch, 0, *self.args)

    def is_kdbus_ioctl(self) -> bool:
        """An ioctl of this architecture asking RECV or SEND: all our filter notifies. A listener
        of another filter (one its client wrote) may notify anything, which we let run."""
        audit_arch, ioctl_nr, _ = _arch()
        return self.arch == audit_arch and self.syscall == ioctl_nr and \
            self.args[1] & 0xFFFF_FFFF in (Cmd.RECV, Cmd.SEND)


def _arch() -> tuple[int, int, int]:
    machine = platform.machine()
    if machine not in _ARCHES:
        raise OSError(errno.ENOSYS, f"kdbusfs run does not know the syscalls of {machine}")
    return _ARCHES[machine]


def _filter_program() -> bytes:
    """ioctl(_, KDBUS_CMD_RECV or KDBUS_CMD_SEND, _) notifies the supervisor (a SEND receives
    descriptors as a synchronous call's reply; the supervisor serves the others too, which costs
    less than letting them carry on to a FUSE request);
    everything else is allowed."""
    audit_arch, ioctl_nr, _ = _arch()
    insn = struct.Struct("<HBBI")
    program = [
        insn.pack(_BPF_LD_W_ABS, 0, 0, _DATA_ARCH),
        insn.pack(_BPF_JEQ_K, 0, 5, audit_arch),          # another ABI: allow
        insn.pack(_BPF_LD_W_ABS, 0, 0, _DATA_NR),
        insn.pack(_BPF_JEQ_K, 0, 3, ioctl_nr),            # not ioctl: allow
        insn.pack(_BPF_LD_W_ABS, 0, 0, _DATA_ARG1_LOW),
        insn.pack(_BPF_JEQ_K, 2, 0, int(Cmd.RECV)),       # RECV: notify
        insn.pack(_BPF_JEQ_K, 1, 0, int(Cmd.SEND)),       # SEND: notify
        insn.pack(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        insn.pack(_BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
    ]
    return b"".join(program)


def install_filter() -> int:
    """Put the calling thread (and what it execs and forks) under the filter; returns the listener.

    Sets no_new_privs first, which lets an unprivileged process install a filter.
    """
    _, _, seccomp_nr = _arch()
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    code = _filter_program()
    instructions = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("<HxxxxxxQ", len(code) // 8, ctypes.addressof(instructions))
    fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
    _libc.syscall.restype = ctypes.c_long
    listener = _libc.syscall(seccomp_nr, SECCOMP_SET_MODE_FILTER,
                             SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                             fprog_buffer)
    if listener < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(err)}")
    return int(listener)


def receive(listener: int) -> Notification | None:
    """The next notification, or None if it went away before it could be read (ENOENT)."""
    buffer = bytearray(_NOTIF.size)
    try:
        fcntl.ioctl(listener, NOTIF_RECV, buffer, True)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return Notification.unpack(buffer)


def is_listener(fd: int) -> bool:
    """Whether our `fd` is a seccomp listener (one handed to us could be any file)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == LISTENER_LINK
    except OSError:
        return False


def still_waiting(listener: int, notif_id: int) -> bool:
    """Whether the notified task still waits for this answer (not killed, its tid not reused)."""
    try:
        fcntl.ioctl(listener, NOTIF_ID_VALID, bytearray(struct.pack("<Q", notif_id)), True)
    except OSError:
        return False
    return True


def add_fd(listener: int, notif_id: int, fd: int) -> int:
    """Install a duplicate of our `fd` in the notified task, close-on-exec; its number there."""
    buffer = bytearray(_NOTIF_ADDFD.pack(notif_id, 0, fd, 0, os.O_CLOEXEC))
    return int(fcntl.ioctl(listener, NOTIF_ADDFD, buffer, True))


def answer(listener: int, notif_id: int, err: int) -> None:
    """End the notified syscall with 0 or -err. A task that is gone (ENOENT) needs no answer."""
    _send(listener, _NOTIF_RESP.pack(notif_id, 0, -err, 0))


def resume(listener: int, notif_id: int) -> None:
    """Let the notified syscall run as if no filter were there."""
    _send(listener, _NOTIF_RESP.pack(notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE))


def _send(listener: int, response: bytes) -> None:
    try:
        fcntl.ioctl(listener, NOTIF_SEND, bytearray(response), True)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
