"""Failed kdbus commands as `OSError`s: kdbus's errno, and what it means for that command.

kdbus gives many errnos a meaning of its own (ENXIO from SEND is "no such peer", from FREE "no such
slice"), so the message names the command, the errno and that meaning:
``KDBUS_CMD_SEND: ENXIO (no such peer)``. Errnos that Python has a subclass of `OSError` for are
raised as both, so ``except TimeoutError`` catches a synchronous call that timed out.
"""

from __future__ import annotations

import errno
import os

from ..abi.constants import Cmd

# What an errno means for one command (KDBUS-SPEC.md §2, §5.12); GENERIC covers the rest.
_MEANINGS: dict[Cmd, dict[int, str]] = {
    Cmd.BUS_MAKE: {
        errno.EEXIST: "a bus of that name exists",
        errno.EMFILE: "too many buses for this user",
        errno.EINVAL: "bad name (it must start with '<euid>-'), flags or bloom parameters",
    },
    Cmd.HELLO: {
        errno.EPERM: "monitors, activators and policy holders need bus owner rights",
        errno.EMFILE: "too many connections for this user",
        errno.EEXIST: "the name already has an activator or a policy holder",
        errno.EOPNOTSUPP: "no monitors on a custom endpoint",
        errno.EINVAL: "bad pool size, flags, attach flags or name",
    },
    Cmd.SEND: {
        errno.ENXIO: "no such peer",
        errno.ESRCH: "the name has no owner",
        errno.EREMCHG: "the name is owned by another connection",
        errno.EADDRNOTAVAIL: "the name is held by an activator only",
        errno.EPERM: "the policy does not let this connection talk to the peer",
        errno.ETIMEDOUT: "no reply before the timeout",
        errno.EPIPE: "the peer went away or dropped the call",
        errno.ECANCELED: "the call was cancelled",
        errno.EBADSLT: "no pending call this reply answers",
        errno.ENOBUFS: "the receiver's quota is used up",
        errno.EXFULL: "the receiver's pool is full",
        errno.EMLINK: "too many calls waiting for replies",
        errno.ECOMM: "the peer does not accept file descriptors",
        errno.EREMOTEIO: "the reply carried file descriptors this connection does not accept",
        errno.EBADMSG: "a broadcast must be a signal, and a signal needs a bloom filter",
        errno.ENOTUNIQ: "broadcasts take no timeout and no file descriptors; signals expect no reply",
        errno.EDESTADDRREQ: "no destination name given",
        errno.EDOM: "the bloom filter's size is not the bus's",
        errno.EMSGSIZE: "the message or its payload is too large",
        errno.EMFILE: "too many file descriptors",
        errno.EOPNOTSUPP: "only ordinary connections send",
    },
    Cmd.RECV: {errno.EAGAIN: "no message queued"},
    Cmd.FREE: {errno.ENXIO: "no such slice in the pool"},
    Cmd.BYEBYE: {errno.EBUSY: "messages are still queued"},
    Cmd.NAME_ACQUIRE: {
        errno.EEXIST: "the name is owned by another connection",
        errno.EPERM: "the policy does not let this connection own the name",
        errno.E2BIG: "too many names on this connection",
        errno.EINVAL: "not a valid well-known name",
    },
    Cmd.NAME_RELEASE: {
        errno.ESRCH: "no such name",
        errno.EADDRINUSE: "this connection neither owns the name nor waits for it",
    },
    Cmd.MATCH_ADD: {
        errno.EDOM: "the bloom mask is not whole bloom filters of the bus",
        errno.EMFILE: "too many match rules on this connection",
    },
    Cmd.MATCH_REMOVE: {errno.EBADSLT: "no match rule with this cookie"},
    Cmd.CONN_INFO: {
        errno.ENXIO: "no such peer",
        errno.ESRCH: "the name has no owner",
    },
    Cmd.UPDATE: {errno.EOPNOTSUPP: "this kind of connection cannot change that"},
}
_GENERIC: dict[int, str] = {
    errno.ECONNRESET: "the connection is closed",
    errno.EBADFD: "the file is not in the state this command needs",
    errno.ENOTTY: "not a kdbus node",
    errno.EOPNOTSUPP: "this kind of connection cannot do that",
    errno.EXFULL: "the pool is full",
    errno.EFAULT: "bad address",
    errno.EMSGSIZE: "the command is too large",
    errno.ESHUTDOWN: "the bus is going away",
}


# errno.errorcode picks one of two names for the same number; kdbus's documentation uses these.
_NAMES = {errno.EOPNOTSUPP: "EOPNOTSUPP", errno.EDEADLK: "EDEADLK"}


def errno_name(code: int) -> str:
    return _NAMES.get(code) or errno.errorcode.get(code, str(code))


class CommandError(OSError):
    """A kdbus command failed. `errno` is kdbus's errno, `command` the command's name.

    >>> str(CommandError(Cmd.SEND, errno.ENXIO))
    'KDBUS_CMD_SEND: ENXIO (no such peer)'
    """

    command: str

    def __init__(self, command: Cmd, code: int) -> None:
        name = f"KDBUS_CMD_{command.name}"
        super().__init__(code, f"{name}: {errno_name(code)} ({meaning(command, code)})")
        self.command = name

    def __str__(self) -> str:
        return str(self.strerror)


class CommandTimedOut(CommandError, TimeoutError):
    pass


class CommandWouldBlock(CommandError, BlockingIOError):
    pass


class CommandNotPermitted(CommandError, PermissionError):
    pass


class CommandConnectionReset(CommandError, ConnectionResetError):
    pass


class CommandBrokenPipe(CommandError, BrokenPipeError):
    pass


class CommandTargetExists(CommandError, FileExistsError):
    pass


class CommandInterrupted(CommandError, InterruptedError):
    pass


_CLASSES: dict[int, type[CommandError]] = {
    errno.ETIMEDOUT: CommandTimedOut,
    errno.EAGAIN: CommandWouldBlock,
    errno.EPERM: CommandNotPermitted,
    errno.EACCES: CommandNotPermitted,
    errno.ECONNRESET: CommandConnectionReset,
    errno.EPIPE: CommandBrokenPipe,
    errno.EEXIST: CommandTargetExists,
    errno.EINTR: CommandInterrupted,
}


def meaning(command: Cmd, code: int) -> str:
    """What `code` means when `command` fails with it."""
    return _MEANINGS.get(command, {}).get(code) or _GENERIC.get(code) or os.strerror(code).lower()


def command_error(command: Cmd, code: int) -> CommandError:
    """The exception for `command` failing with `code`, of the matching OSError subclass."""
    return _CLASSES.get(code, CommandError)(command, code)
