"""Clients started by `kdbusfs run`: their RECV and SEND ioctls reach the daemon as seccomp
notifications, and the daemon serves them itself so that it can install the descriptors they
receive (seccomp.py has the mechanism, forward.py the hand-over between two mounts' daemons).

A notification on a connection of this mount is served like the FUSE request it replaces (the same
handle.ioctl), then answered through the listener after the pool bytes it published have reached
the client; a synchronous call is answered when its reply comes. One on another kdbusfs mount's
file goes to that mount's daemon; anything else carries on as if unnotified.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import forward, seccomp
from .abi.constants import KDBUSFS_SUPERVISE, RECV_RETURN_INCOMPLETE_FDS, Cmd
from .bus.reply import SyncWait
from .calls import Supervised
from .errors import KdbusError, LimitReached, user_named
from .fuse import codec
from .fuse.codec import Listen, Output
from .handle import Connected, Control, Handle, HandleType, Pending, ioctl
from .host.caller import RequestCaller
from .limits import LISTENERS_PER_USER

if TYPE_CHECKING:
    from .fs import Filesystem
    from .tree import OpenFile

log = logging.getLogger("kdbusfs.launched")


class Launched:
    """The seccomp listeners of launched process trees this mount's daemon serves."""

    def __init__(self, fs: Filesystem) -> None:
        self.fs = fs
        # Listeners handed over (KDBUSFS_CMD_SUPERVISE), by the user who handed each over.
        self._listeners: dict[int, int] = {}
        self._listeners_by_uid: dict[int, int] = {}
        # Listeners other mounts' daemons lent us with one notification each (forward.py), by the
        # notification's id: ours to close once it is answered. The ids stay in `_forwarded`
        # until the answer has been given (maybe on the session's writer thread): a notification
        # forwarded again meanwhile must not be served twice.
        self._borrowed: dict[int, int] = {}
        self._forwarded: set[int] = set()
        self._outbox = forward.Outbox()

    def listener_ready(self, listener: int, notification: seccomp.Notification) -> list[Output]:
        """A launched client's RECV or SEND waits in seccomp: serve it here, installing the
        descriptors it receives. The answer that releases the client comes last in what this
        returns, after the pool stores and wake-ups it depends on (or later, for a call that
        waits for its reply)."""
        if listener not in self._listeners:
            return []
        return self._serving(listener, notification, forwarded=False)

    def forwarded_ready(self, forwarded: forward.Forwarded) -> list[Output]:
        """Another mount's daemon hands us a launched client's ioctl on one of our files."""
        listener, notification = forwarded.listener, forwarded.notification
        if notification.id in self._forwarded or not seccomp.still_waiting(listener, notification.id):
            # Forwarded twice, or answered or killed since: not ours to answer.
            self.fs.host.close_fd(listener)
            return []
        self._forwarded.add(notification.id)
        self._borrowed[listener] = notification.id
        if not forwarded.may_serve():
            log.warning("a forwarder of uid %d names task %d of another user: letting its ioctl "
                        "carry on as it is", forwarded.forwarder_uid, notification.tid)
            return [self._answer_of(listener, notification.id, None)]
        return self._serving(listener, notification, forwarded=True)

    def _serving(self, listener: int, notification: seccomp.Notification, forwarded: bool) -> list[Output]:
        # The answer that releases the client goes after the pool stores it depends on.
        answers: list[Output] = []

        def serve() -> None:
            try:
                answer = self._serve_notification(listener, notification, forwarded)
            except Exception:
                log.exception("serving a launched client's ioctl failed unexpectedly")
                answer = self._answer_of(listener, notification.id, errno.EIO)
            if answer is not None:
                answers.append(answer)

        return self.fs.outside_requests("serving a launched client's ioctl", serve) + answers

    def _answer_of(self, listener: int, notif_id: int, err: int | None) -> Callable[[], None]:
        """What ends a notified syscall: -err, or 0, or carrying on as if unnotified (None). A
        borrowed listener is closed once it has given the answer."""
        if err is None:
            answer = functools.partial(seccomp.resume, listener, notif_id)
        else:
            answer = functools.partial(seccomp.answer, listener, notif_id, err)
        if self._borrowed.pop(listener, None) is None:
            return answer

        def answer_and_close() -> None:
            try:
                answer()
            finally:
                os.close(listener)
                self._forwarded.discard(notif_id)
        return answer_and_close

    def _serve_notification(self, listener: int, notification: seccomp.Notification,
                            forwarded: bool) -> Callable[[], None] | None:
        """Serve a notified ioctl; the answer to give now, or None if it waits (a call) or
        another mount's daemon gives it."""
        tid = notification.tid
        fd, cmd, arg = notification.args[0] & 0xFFFF_FFFF, notification.args[1] & 0xFFFF_FFFF, \
            notification.args[2]
        if not notification.is_kdbus_ioctl():
            return self._answer_of(listener, notification.id, None)
        found = self.fs.host.task_file(tid, fd)
        handle = self._handle_of(found)
        if handle is None:
            if found is not None and found[0] is not None and not forwarded and \
                    self._forward(found[0], listener, notification):
                return None
            # Not a connection of a kdbusfs mount, or nobody to serve it there.
            return self._answer_of(listener, notification.id, None)
        if not seccomp.still_waiting(listener, notification.id):
            # Killed since, and its tid may be another task's already: touch nothing of it (the
            # answer only meets ENOENT, and gives a borrowed listener back).
            return self._answer_of(listener, notification.id, None)
        caller = self.fs.host.supervised(tid, listener, notification.id, self.fs.device)
        err = 0
        try:
            # Every SEND is served here, not only calls that receive descriptors with their reply:
            # letting one carry on would cost a FUSE round trip on top of this one.
            out = ioctl(handle, cmd, arg, b"", caller)
            if isinstance(out, Pending):
                token = Supervised(listener, notification.id, tid, out.address, out.msg_address)
                self.fs.calls.block(out, token)
                return None
            # Only RECV and SEND are notified: neither connects a handle.
            assert not isinstance(out, Connected)
            if cmd == Cmd.RECV:
                # What FUSE would copy back for an _IOR command.
                self.fs.host.write(tid, arg, out)
                if handle.conn is not None:
                    # The installed numbers are pool bytes too: they must reach the client's page
                    # cache before the answer (flushed below), whatever else is still queued.
                    self.fs.domain.wake(handle.conn)
        except KdbusError as exc:
            self.fs.refused(f"{Cmd(cmd).name} (launched)", exc)
            err = exc.errno
        finally:
            caller.done()
        return self._answer_of(listener, notification.id, err)

    def _forward(self, device: int, listener: int, notification: seccomp.Notification) -> bool:
        """Hand an ioctl on another mount's file to that mount's daemon (forward.py)."""
        launcher_uid = self._listeners.get(listener)
        return device != self.fs.device and launcher_uid is not None and \
            self._outbox.forward(device, listener, notification, launcher_uid)

    def _handle_of(self, found: tuple[int | None, int] | None) -> Handle | None:
        """The connected handle behind a task's file (task_file's answer), if it is one of this
        mount's."""
        if found is None or found[0] != self.fs.device:
            return None
        node = self.fs.tree.find(found[1])
        if node is None or node.handle is None or node.handle.type is not HandleType.CONNECTED:
            return None
        return node.handle

    def supervise(self, opened: OpenFile, in_data: bytes, caller: RequestCaller) -> bytes:
        """KDBUSFS_CMD_SUPERVISE on `control`: take over the caller's seccomp listener."""
        if not isinstance(opened.handle.node, Control):
            raise KdbusError(errno.ENOTTY, "SUPERVISE is a command of the control node")
        if len(in_data) != KDBUSFS_SUPERVISE.size:
            raise KdbusError(errno.EINVAL, "malformed SUPERVISE")
        size, flags, fd = KDBUSFS_SUPERVISE.unpack(in_data)
        if size != KDBUSFS_SUPERVISE.size or flags:
            raise KdbusError(errno.EINVAL, f"SUPERVISE of size {size} with flags {flags:#x}")
        listener = caller.files().grab(fd, recheck=False)
        if not seccomp.is_listener(listener):
            self.fs.host.close_fd(listener)
            raise KdbusError(errno.EINVAL, f"fd {fd} is not a seccomp listener")
        uid = caller.creds().uid
        if self._listeners_by_uid.get(uid, 0) >= LISTENERS_PER_USER:
            self.fs.host.close_fd(listener)
            raise LimitReached(errno.EMFILE, f"user {uid} already has {LISTENERS_PER_USER} launched "
                                             "process trees supervised", "supervised launches per user",
                               LISTENERS_PER_USER, "kdbusfs fixes it", user_named(uid))
        self._listeners[listener] = uid
        self._listeners_by_uid[uid] = self._listeners_by_uid.get(uid, 0) + 1
        self.fs.emit(Listen(listener))
        log.info("task %d hands over its seccomp listener: its RECVs install descriptors", caller.tid)
        return codec.ioctl_out(0)

    def listener_gone(self, listener: int) -> None:
        """Every task under the listener's filter is gone: forget it, then close it."""
        uid = self._listeners.pop(listener, None)
        if uid is not None:
            self._listeners_by_uid[uid] -= 1
        self.fs.host.close_fd(listener)
        if not self._listeners:
            # Nothing left to forward: the daemon holds nothing of launched clients.
            self._outbox.close()

    def answer_call(self, wait: SyncWait, token: Supervised) -> Output | None:
        """A launched caller's call is over: install the reply's descriptors, then release it."""
        passed, wait.passed = wait.passed, None
        # Listeners are known by descriptor number, which a closed one's successor may reuse: a
        # borrowed one is this call's only if it was lent with this very notification.
        borrowed = self._borrowed.get(token.listener) == token.notif_id
        ours = token.listener in self._listeners or borrowed
        if not ours or not seccomp.still_waiting(token.listener, token.notif_id):
            # The caller is gone (and its tid may be another task's): nothing to install or tell.
            if passed is not None:
                passed.close()
            # A borrowed listener is given back with an answer that only meets ENOENT.
            return self._answer_of(token.listener, token.notif_id, None) if borrowed else None
        err = wait.errno or 0
        if not err:
            assert wait.reply is not None
            offset, size, flags = wait.reply
            if passed is not None:
                installer = self.fs.host.supervised(token.tid, token.listener, token.notif_id,
                                                    self.fs.device)
                if installer.install(passed, wait.caller.pool, offset):
                    flags &= ~RECV_RETURN_INCOMPLETE_FDS
                # The numbers must reach the caller's page cache before the call returns.
                self.fs.push(wait.caller)
            try:
                self.fs.write_reply(token, offset, size, flags)
            except KdbusError as exc:
                err = exc.errno
        elif passed is not None:
            passed.close()
        return self._answer_of(token.listener, token.notif_id, err)
