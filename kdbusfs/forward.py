"""A launched client that uses the buses of two mounts: each daemon serves its own files.

`kdbusfs run` hands its seccomp listener to the daemon of one mount, which then receives every
notified RECV and SEND of the launched process tree. A notification on a file of another kdbusfs
mount (a client of both /sys/fs/kdbus and ~/kdbus) is forwarded, with the listener itself in
SCM_RIGHTS, to the daemon of that mount; that daemon serves it as its own: it installs the
descriptors through the listener and answers the notification.

Every daemon listens on a SOCK_SEQPACKET socket in the abstract namespace named after its mount's
device (the superblock's, the same in every mount namespace); a message is one struct
seccomp_notif with the listener attached, sent only once the inbox has said it took the connection
(what went to a refused one would be lost, its client left waiting).

Trust, both ways, rests on the socket's peer credentials:
- a forwarder hands the listener (which can answer any notification of the tree) only to a peer
  running as root, or as the user who launched the tree when the notified task is that user's
  too; checked for every notification, since one connection serves every tree. A socket squatted
  by someone else gets nothing; the task then carries on unnotified (-1 and INCOMPLETE_FDS);
- a daemon serves a forwarded notification as told only if the forwarder is root, or the notified
  task is a dumpable one of the forwarder's user that waits in that very syscall: a forwarder could
  name any tid, and serving it reads and writes that task's memory and its connection. Otherwise
  it lets the syscall carry on.
Daemon and forwarder must share the pid namespace (tids are the forwarder's); peers in another
are not accepted, and no user holds more than a few of the inbox's places.
A daemon that dies while holding a forwarded call leaves its caller waiting until killed (the
forwarder still holds the listener, so the kernel does not end the wait).
"""

from __future__ import annotations

import array
import logging
import os
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from . import seccomp
from .host.proc import in_own_pid_namespace, read_creds, read_text
from .limits import FORWARD_ACCEPT_TIMEOUT_MS, FORWARDERS_MAX, FORWARDERS_PER_USER

log = logging.getLogger("kdbusfs.forward")

_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
# What an inbox says to a forwarder it takes: only then may the forwarder send.
ACCEPTED = b"\x01"
# How often the inbox's thread looks whether the daemon is stopping, while nothing happens.
INBOX_POLL_MS = 1000


def address(device: int) -> bytes:
    """The abstract socket name of the daemon serving the mount of `device`."""
    return f"\0kdbusfs-forward/{_name(device)}".encode()


def _peer_creds(sock: socket.socket) -> tuple[int, int, int]:
    pid, uid, gid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
    return pid, uid, gid


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A notification another daemon received on a file of ours."""

    # Our own descriptor of the tree's listener: close it once the notification is answered.
    listener: int
    notification: seccomp.Notification
    forwarder_uid: int

    def may_serve(self) -> bool:
        """Whether the forwarder may have us act on the notified task (see the module's doc).

        A forwarder other than root says which task waits, and with which arguments: believe it
        only for a task of its own user that it could reach itself (dumpable: its /proc directory is
        the user's, not root's), and that really waits in that very syscall (/proc/TID/syscall)."""
        if self.forwarder_uid == 0:
            return True
        notification = self.notification
        tid = notification.tid
        creds = read_creds(tid, -1, -1)
        if {creds.uid, creds.euid, creds.suid, creds.fsuid} != {self.forwarder_uid}:
            return False
        try:
            dumpable = os.stat(f"/proc/{tid}").st_uid == self.forwarder_uid
            waiting_in = read_text(f"/proc/{tid}/syscall")
        except OSError:
            return False
        if not dumpable or waiting_in is None:
            return False
        fields = waiting_in.split()
        expected = [notification.syscall, *notification.args[:3]]
        try:
            return [int(field, 0) for field in fields[:4]] == expected
        except ValueError:
            return False  # "running": not waiting in any syscall


class Outbox:
    """The forwarding side: one connection per other mount's daemon, made when first needed."""

    def __init__(self) -> None:
        # Per device: the connection to that mount's daemon, and the uid it runs as.
        self._peers: dict[int, tuple[socket.socket, int]] = {}

    def forward(self, device: int, listener: int, notification: seccomp.Notification,
                launcher_uid: int) -> bool:
        """Hand the notification to the daemon of `device`; False if there is none to take it (the
        caller then lets the syscall carry on). The listener rules the whole tree `launcher_uid`
        launched: it goes only to a daemon running as root, or as that user when the notified task
        is that user's too (checked for every notification: one connection serves every tree)."""
        message = notification.pack()
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [listener]).tobytes())]
        task_uid = read_creds(notification.tid, -1, -1).fsuid
        for _attempt in range(2):
            found = self._peers.get(device) or self._connect(device)
            if found is None:
                return False
            peer, peer_uid = found
            if peer_uid != 0 and not peer_uid == task_uid == launcher_uid:
                log.warning("the socket of mount %s belongs to uid %d, neither root nor the launched "
                            "client's user (%d, launched by %d): not handing it the client's listener",
                            _name(device), peer_uid, task_uid, launcher_uid)
                return False
            try:
                peer.sendmsg([message], rights, socket.MSG_DONTWAIT)
                return True
            except BlockingIOError:
                log.warning("the daemon of mount %s is not keeping up: a launched client's ioctl "
                            "carries on without descriptors", _name(device))
                return False
            except OSError:
                # That daemon has gone (and perhaps come back since): try a fresh connection once.
                self._drop(device)
        return False

    def _connect(self, device: int) -> tuple[socket.socket, int] | None:
        sock = _seqpacket()
        try:
            sock.connect(address(device))
            _pid, uid, _gid = _peer_creds(sock)
            # Nothing goes out before the other daemon says it took the connection.
            answered = select.poll()
            answered.register(sock, select.POLLIN)
            if not answered.poll(FORWARD_ACCEPT_TIMEOUT_MS) or sock.recv(len(ACCEPTED) + 1) != ACCEPTED:
                raise ConnectionRefusedError(f"mount {_name(device)}'s daemon did not take the connection")
        except OSError:
            # Not a kdbusfs mount (or its daemon predates forwarding, or refused us): nobody to hand
            # it to.
            sock.close()
            return None
        self._peers[device] = (sock, uid)
        return sock, uid

    def _drop(self, device: int) -> None:
        found = self._peers.pop(device, None)
        if found is not None:
            found[0].close()

    def close(self) -> None:
        for device in list(self._peers):
            self._drop(device)


class Inbox:
    """The receiving side: notifications other daemons forward to this mount's daemon."""

    def __init__(self, device: int) -> None:
        self._device = device
        self._socket = _seqpacket()
        self._socket.bind(address(device))
        self._socket.listen(FORWARDERS_MAX)
        self._forwarders: dict[int, tuple[socket.socket, int]] = {}

    @classmethod
    def open(cls, device: int | None) -> Inbox | None:
        """The inbox of the mount of `device`; None (logged) if its name is taken."""
        if device is None:
            return None
        try:
            return cls(device)
        except OSError as exc:
            log.warning("cannot listen for notifications forwarded by other kdbusfs mounts (%s): "
                        "clients launched on another mount get -1 for descriptors from this one",
                        exc.strerror)
            return None

    def serve(self, deliver: Callable[[Forwarded], None], over: Callable[[], bool]) -> None:
        """Accept forwarders and hand each notification they send to `deliver`, until `over()`.
        Runs on a thread of its own: nothing here may wait on the session."""
        poller = select.poll()
        poller.register(self._socket, select.POLLIN)
        try:
            while not over():
                for fd, events in poller.poll(INBOX_POLL_MS):
                    if fd == self._socket.fileno():
                        self._accept(poller)
                    elif events & select.POLLIN:
                        forwarded, keep = self._receive(fd)
                        if forwarded is not None:
                            deliver(forwarded)
                        if not keep:
                            self._hang_up(poller, fd)
                    else:
                        self._hang_up(poller, fd)
        finally:
            for fd in list(self._forwarders):
                self._hang_up(poller, fd)
            self._socket.close()

    def _accept(self, poller: select.poll) -> None:
        try:
            sock, _ = self._socket.accept()
        except OSError:
            return
        pid, uid, _gid = _peer_creds(sock)
        of_user = sum(1 for _, forwarder_uid in self._forwarders.values() if forwarder_uid == uid)
        why = ("too many forwarders" if len(self._forwarders) >= FORWARDERS_MAX else
               f"user {uid} has {FORWARDERS_PER_USER} already" if of_user >= FORWARDERS_PER_USER else
               "another pid namespace" if not in_own_pid_namespace(pid) else None)
        try:
            if why is None:
                # Taken: only now may the forwarder send (what it sent to a refused connection
                # would be lost, and its client left waiting).
                sock.send(ACCEPTED)
        except OSError:
            why = "it went away"
        if why is not None:
            log.warning("refusing a forwarder (pid %d, uid %d): %s", pid, uid, why)
            sock.close()
            return
        self._forwarders[sock.fileno()] = (sock, uid)
        poller.register(sock, select.POLLIN)

    def _hang_up(self, poller: select.poll, fd: int) -> None:
        sock, _ = self._forwarders.pop(fd)
        poller.unregister(fd)
        sock.close()

    def _receive(self, fd: int) -> tuple[Forwarded | None, bool]:
        """The next forwarded notification, if one came, and whether to keep the forwarder (not
        when it hung up or sent garbage)."""
        sock, uid = self._forwarders[fd]
        try:
            data, ancillary, flags, _ = sock.recvmsg(seccomp.Notification.SIZE + 1,
                                                     socket.CMSG_SPACE(4 * 2), socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None, True
        except OSError:
            return None, False
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        well_formed = (len(data) == seccomp.Notification.SIZE and len(fds) == 1
                       and not flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC)
                       and seccomp.is_listener(fds[0]))
        if not well_formed:
            for received in fds:
                os.close(received)
            if data:
                log.warning("a forwarder (uid %d) sent %d bytes and %d descriptors, not a notification "
                            "and its listener: hanging up", uid, len(data), len(fds))
            return None, False
        return Forwarded(fds[0], seccomp.Notification.unpack(data), uid), True


def _seqpacket() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)


def _name(device: int) -> str:
    return f"{os.major(device)}:{os.minor(device)}"
