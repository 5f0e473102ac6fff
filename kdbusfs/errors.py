"""Typed errors of the model; the FUSE edge maps them to errnos and logs the reason once."""

from __future__ import annotations

import errno


class KdbusError(Exception):
    """A kdbus command failed with `errno`; `why` explains it for the log."""

    def __init__(self, err: int, why: str) -> None:
        super().__init__(err, why)
        self.errno = err
        self.why = why

    def __str__(self) -> str:
        return f"{errno.errorcode.get(self.errno, self.errno)}: {self.why}"


class Refused:
    """A command failing as a matter of course (RECV on an empty queue, the commonest request
    there is): returned by its body and the frame instead of raised, because an exception through
    every layer costs more than the whole command. Edges that want an exception get one."""

    __slots__ = ("errno", "why")

    def __init__(self, err: int, why: str) -> None:
        self.errno = err
        self.why = why

    def error(self) -> KdbusError:
        return KdbusError(self.errno, self.why)


class LimitReached(KdbusError):
    """A resource limit stopped a command: not bad input, so the operator is told (in bursts).

    `limit` names it as an operator knows it, `value` is its value where it was hit, `raised_by`
    says what raises it (a mount option, or the client's own choice where kdbus fixes the rest),
    and `user` who hit it, as user_named() words it.
    """

    def __init__(self, err: int, why: str, limit: str, value: int, raised_by: str, user: str) -> None:
        super().__init__(err, why)
        self.limit = limit
        self.value = value
        self.raised_by = raised_by
        self.user = user


def user_named(uid: int | None) -> str:
    """Who a limit was reached by, for the log: a uid, or the anonymous users of a custom endpoint
    (one accounting user for everyone connecting through it)."""
    return "anonymous users of a custom endpoint" if uid is None else f"user {uid}"
