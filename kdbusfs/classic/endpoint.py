"""The classic D-Bus endpoint of a mount: a unix socket whose clients join one kdbus bus.

    -o dbus_socket=PATH[,dbus_bus=NAME]

serves the bus `<uid>-NAME` of the mount (uid: the daemon's; NAME: `system` for a daemon running
as root, `user` otherwise), the names kdbus-era systemd gave the system and user buses. The bus is
used if it exists when a client connects, and made (by the daemon, which then holds it until it
stops; world-accessible, with kdbus's default policy) if it does not: no native client has to come
first, and the GUID the SASL exchange names is the bus's id128, which GetId returns too. The socket
is mode 0666 on a mount open to others, 0600 otherwise.

Everything runs on the FUSE serving thread (the bus model is single-threaded): the listening
socket, each client socket and an eventfd that says "a classic client's connection was woken" are
watched by the session's epoll loop, as is a timer for the clients that have not said Hello in
time (admission.py) and for accepting again after accept(2) ran out of descriptors. Work that
changes the bus runs through `Filesystem.outside_requests`, so that native clients it wakes are
told as after a FUSE request. Whatever goes wrong with one client (its end, its violations, a bug
of ours while serving it) closes that client only.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import select
import socket
import stat
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Protocol

from .. import limits
from ..abi import structs
from ..abi.constants import MAKE_ACCESS_WORLD, Cmd, Item
from ..abi.items import item, string_item
from ..bus.bus import Bus
from ..bus.connection import Connection
from ..bus.domain import Domain
from ..bus.endpoint import Endpoint
from ..errors import KdbusError, LimitReached, user_named
from ..fuse.codec import Output
from ..handle import Control, Handle, ioctl
from ..host.proc import ProcProcess
from . import peer
from .admission import Admission, Timer
from .caller import ClassicCaller
from .client import ClassicClient, ClientClosed
from .closures import FIXED, ClosureLog

log = logging.getLogger("kdbusfs.classic")

# The bloom parameters sd-bus gave the buses it made: 64 bytes, 8 hashes.
BLOOM_SIZE, BLOOM_N_HASH = 64, 8


class Loop(Protocol):
    """What the endpoint needs of the serving loop (kdbusfs.fuse.session.Session)."""

    def watch_fd(self, fd: int, handler: Callable[[int], list[Output]], events: int = ...) -> None: ...

    def rewatch_fd(self, fd: int, events: int) -> None: ...

    def unwatch_fd(self, fd: int) -> None: ...


class Served(Protocol):
    """What the endpoint needs of the file system (kdbusfs.fs.Filesystem)."""

    domain: Domain
    device: int | None
    in_process: dict[int, Callable[[Connection], None]]

    def outside_requests(self, what: str, action: Callable[[], None]) -> list[Output]: ...

    def close_fd(self, fd: int) -> None: ...


def default_bus_name(euid: int) -> str:
    return "system" if euid == 0 else "user"


# accept(2) errors that say "no room now" (descriptors, memory): the socket stays readable, so it
# is not watched again until a client closes or CLASSIC_ACCEPT_RETRY_S has passed.
_ACCEPT_EXHAUSTED = {errno.EMFILE: "open files of the daemon", errno.ENFILE: "open files of the system",
                     errno.ENOBUFS: "memory", errno.ENOMEM: "memory"}


class ClassicEndpoint:
    def __init__(self, served: Served, listener: socket.socket, path: str, bus_suffix: str) -> None:
        self.served = served
        self.domain = served.domain
        self.device = served.device
        self.path = path
        self.bus_name = f"{os.geteuid()}-{bus_suffix}"
        self.clients: dict[int, ClassicClient] = {}
        self._by_conn: dict[int, ClassicClient] = {}
        self._woken: set[int] = set()
        self._loop: Loop | None = None
        self._owner: Handle | None = None
        # Listening already (listen()), made before the mount so that a taken path stops it early.
        self._listener = listener
        self._accepting = True
        self._accept_retry: float | None = None
        # Accepting waits for a place among those that have not said Hello (not for descriptors).
        self._waiting_for_place = False
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._timer = Timer()
        self._admission = Admission()
        # Clients whose socket is not read: they have not read enough of what was written to them.
        self._held: set[int] = set()
        self._log = ClosureLog()
        # The daemon itself (as the bus's owner): its own /proc is its own word.
        euid, egid = os.geteuid(), os.getegid()
        self._daemon = ClassicCaller(os.getpid(), euid, egid, self.device, served.close_fd,
                                     ProcProcess(os.getpid(), euid, egid))
        self._machine_id: str | None = None
        # Only if the bus cannot be made: its clients' Hello fails anyway.
        self._no_bus_guid = uuid.uuid4().hex
        log.info("classic D-Bus clients at %s join bus %s", path, self.bus_name)

    def attach(self, loop: Loop) -> None:
        self._loop = loop
        loop.watch_fd(self._listener.fileno(), self._accept_ready)
        loop.watch_fd(self._wake_fd, self._woken_ready)
        loop.watch_fd(self._timer.fd, self._timer_ready)

    def detach(self) -> None:
        """The loop is over (its epoll is closing): nothing is watched any more."""
        self._loop = None

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._log.ordinary(client.describe(), "the daemon is stopping")
            self._drop(client)
        if self._loop is not None:
            if self._accepting:
                self._loop.unwatch_fd(self._listener.fileno())
            self._loop.unwatch_fd(self._wake_fd)
            self._loop.unwatch_fd(self._timer.fd)
        self._listener.close()
        os.close(self._wake_fd)
        self._timer.close()
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass

    def close_fd(self, fd: int) -> None:
        self.served.close_fd(fd)

    def machine_id(self) -> str:
        if self._machine_id is None:
            try:
                with open("/etc/machine-id") as file:
                    self._machine_id = file.read().strip()
            except OSError:
                self._machine_id = uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname()).hex
        return self._machine_id

    # -- the bus ------------------------------------------------------------------------------
    @property
    def guid(self) -> str:
        """The server GUID of the SASL exchange: the bus's id128, as GetId gives it (the D-Bus
        specification has them the same). Asked for when a client connects: the bus is made then
        if it does not exist."""
        endpoint = self.bus_endpoint()
        return endpoint.bus.id128.hex() if endpoint is not None else self._no_bus_guid

    def bus_endpoint(self) -> Endpoint | None:
        """The bus's default endpoint, the bus made first if it does not exist."""
        bus = self.domain.buses.get(self.bus_name)
        if bus is None or not bus.active:
            bus = self._make_bus()
        return bus.default_endpoint if bus is not None else None

    def _make_bus(self) -> Bus | None:
        if self._owner is not None:
            self._owner.release()
        name_item = string_item(Item.MAKE_NAME, self.bus_name)
        bloom = item(Item.BLOOM_PARAMETER, structs.BLOOM_PARAMETER.pack(BLOOM_SIZE, BLOOM_N_HASH))
        items = name_item + bloom
        command = bytearray(structs.CMD.pack(structs.CMD.size + len(items), MAKE_ACCESS_WORLD, 0) + items)
        owner = Handle(Control(self.domain), self._daemon.creds())
        arena = self._daemon.arena
        try:
            ioctl(owner, Cmd.BUS_MAKE, arena.place(command), b"", self._daemon)
        except KdbusError as exc:
            log.warning("cannot make bus %s for classic clients: %s", self.bus_name, exc)
            return None
        finally:
            arena.reset()
        self._owner = owner
        return owner.bus

    def may_connect(self, endpoint: Endpoint, caller: ClassicCaller) -> bool:
        """As open(2) of the endpoint's file would decide (read and write) for a task with the
        peer's creds: SO_PEERCRED's ids and groups, no capabilities (so no root override unless
        the peer connected as root)."""
        creds = caller.creds()
        if creds.fsuid == 0:
            return True
        mode = endpoint.mode
        if creds.fsuid == endpoint.uid:
            bits = mode >> 6
        elif creds.fsgid == endpoint.gid or endpoint.gid in creds.groups:
            bits = mode >> 3
        else:
            bits = mode
        return bits & 0o6 == 0o6

    # -- accepting ----------------------------------------------------------------------------
    def _accept_ready(self, mask: int) -> list[Output]:
        return self.served.outside_requests("accepting classic clients", self._accept)

    def _accept(self) -> None:
        # As many as there is room for (at least one, which may make room for itself): a burst
        # beyond that waits in the socket's backlog while the loop serves those accepted, rather
        # than have the newest close the oldest before they could say a word.
        for _ in range(max(1, limits.CLASSIC_UNAUTHENTICATED_MAX - len(self._admission))):
            if self._admission_full_of_newcomers():
                return
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                self._stop_accepting(exc)
                return
            try:
                self._admit(sock)
            except Exception:
                log.exception("classic endpoint %s: admitting a client failed unexpectedly", self.path)
                self._abandon(sock)

    def _admission_full_of_newcomers(self) -> bool:
        """All places are taken, the oldest since less than CLASSIC_ADMISSION_GRACE_S: the next
        client waits in the backlog (unwatched socket, the timer set for the end of that time)
        while those are served, instead of closing one in the middle of its exchange. Once one
        says Hello or closes, or the time is over, accepting goes on (and makes room if need be)."""
        came = self._admission.oldest_arrival()
        if len(self._admission) < limits.CLASSIC_UNAUTHENTICATED_MAX or came is None:
            return False
        until = came + limits.CLASSIC_ADMISSION_GRACE_S
        if time.monotonic() >= until:
            return False
        if self._accepting and self._loop is not None:
            self._loop.unwatch_fd(self._listener.fileno())
        self._accepting = False
        self._waiting_for_place = True
        self._accept_retry = until
        self._arm_timer()
        return True

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        pid, uid, gid = peer.credentials(sock)
        for fd in self._admission.make_room(uid):
            self._evict(fd)
        # Everything the connection will say about its process, read now (peer.py).
        process = peer.capture(sock, pid, uid, gid)
        client = ClassicClient(self, sock, pid, uid, gid)
        client.caller = ClassicCaller(pid, uid, gid, self.device, self.close_fd, process)
        self.clients[client.fd] = client
        self._admission.add(client.fd, uid)
        self._arm_timer()
        assert self._loop is not None
        self._loop.watch_fd(client.fd, partial(self._client_ready, client), select.EPOLLIN)

    def _abandon(self, sock: socket.socket) -> None:
        client = self.clients.get(sock.fileno())
        if client is not None and client.sock is sock:
            self._forget(client)
        else:
            sock.close()

    def _evict(self, fd: int) -> None:
        client = self.clients.get(fd)
        if client is None:
            self._admission.remove(fd)
            return
        limit, value = "classic connections authenticating", limits.CLASSIC_UNAUTHENTICATED_MAX
        why = f"closed its oldest that had not said Hello ({client.describe()}) to admit another"
        self._log.limit(client.describe(), why, LimitReached(errno.EMFILE, why, limit, value, FIXED,
                                                             user_named(client.uid)))
        self._drop(client)

    def _stop_accepting(self, exc: OSError) -> None:
        """No room to accept (or accept failing otherwise): stop watching the socket, which stays
        readable (watching it would spin), until a client closes or a little time has passed."""
        if self._accepting and self._loop is not None:
            self._loop.unwatch_fd(self._listener.fileno())
        self._accepting = False
        self._accept_retry = time.monotonic() + limits.CLASSIC_ACCEPT_RETRY_S
        self._arm_timer()
        what = _ACCEPT_EXHAUSTED.get(exc.errno or 0, "accept(2) on the classic socket")
        value = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if exc.errno == errno.EMFILE else 0
        who, why = f"classic endpoint {self.path}", f"accept failed: {exc.strerror}"
        self._log.limit(who, why, LimitReached(exc.errno or errno.EIO, why, what, value, "raise the "
                                               "daemon's LimitNOFILE (RLIMIT_NOFILE) or close clients", who))

    def _resume_accepting(self) -> None:
        self._accept_retry = None
        self._waiting_for_place = False
        if self._accepting or self._loop is None:
            return
        self._accepting = True
        self._loop.watch_fd(self._listener.fileno(), self._accept_ready)

    def _timer_ready(self, mask: int) -> list[Output]:
        self._timer.clear()
        return self.served.outside_requests("timing out classic clients", self._on_time)

    def _on_time(self) -> None:
        now = time.monotonic()
        timeout = limits.CLASSIC_AUTH_TIMEOUT_S
        for fd in self._admission.expired(now):
            client = self.clients.get(fd)
            if client is None:
                self._admission.remove(fd)
                continue
            why = f"did not authenticate and say Hello within {timeout:g} s"
            self._log.limit(client.describe(), why, LimitReached(
                errno.ETIMEDOUT, f"{client.describe()} {why}", "time to authenticate (seconds)", int(timeout),
                FIXED, user_named(client.uid)))
            self._drop(client)
        if self._accept_retry is not None and now >= self._accept_retry:
            self._resume_accepting()
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self._admission.next_deadline()
        if self._accept_retry is not None:
            deadline = self._accept_retry if deadline is None else min(deadline, self._accept_retry)
        self._timer.arm(deadline)

    # -- clients ------------------------------------------------------------------------------
    def registered(self, client: ClassicClient) -> None:
        """The client's connection exists: wakes of it reach this endpoint."""
        assert client.conn is not None
        self._admission.remove(client.fd)
        if self._waiting_for_place:
            self._resume_accepting()
        self._by_conn[client.conn.id] = client
        self.served.in_process[client.conn.id] = self._conn_woken

    def reregistered(self, client: ClassicClient, old_id: int) -> None:
        """The client's connection was replaced (BecomeMonitor)."""
        self._by_conn.pop(old_id, None)
        self.served.in_process.pop(old_id, None)
        self._woken.discard(old_id)
        self.registered(client)

    def _client_ready(self, client: ClassicClient, mask: int) -> list[Output]:
        serve = partial(self._serve, client, mask)
        return self.served.outside_requests("serving a classic client", partial(self._guarded, client, serve))

    def _guarded(self, client: ClassicClient, action: Callable[[], None]) -> None:
        """Work for one client: its end, or a bug of ours while serving it, closes it alone."""
        if client.closed:
            return
        try:
            action()
        except ClientClosed as exc:
            self._log.ended(client.describe(), client.uid, exc.ending, str(exc))
            self._drop(client)
        except Exception:
            log.exception("%s: serving it failed unexpectedly; closing it", client.describe())
            try:
                self._forget(client)
            except Exception as exc:  # the same bug again: its traceback is logged above already
                log.error("%s: closing it failed too: %r", client.describe(), exc)

    def _serve(self, client: ClassicClient, mask: int) -> None:
        if mask & select.EPOLLOUT:
            client.flush()
        # A held client's requests stay in its socket; its end (or an error) is still taken.
        held = client.fd in self._held
        if mask & (select.EPOLLHUP | select.EPOLLERR) or (mask & select.EPOLLIN and not held):
            client.readable()
        client.receive_queued()
        client.flush()
        self._watch(client)

    def _watch(self, client: ClassicClient) -> None:
        """Read the client's socket only while it reads what is written to it: past
        CLASSIC_OUTGOING_MAX bytes (or CLASSIC_OUTGOING_FDS_MAX descriptors) unread, what it sends
        waits in its socket, until it is down to the RESUME values."""
        fd = client.fd
        if (client.outgoing_size >= limits.CLASSIC_OUTGOING_MAX
                or client.outgoing_fds >= limits.CLASSIC_OUTGOING_FDS_MAX):
            self._held.add(fd)
        elif (client.outgoing_size < limits.CLASSIC_OUTGOING_RESUME
              and client.outgoing_fds < limits.CLASSIC_OUTGOING_FDS_RESUME):
            self._held.discard(fd)
        events = (0 if fd in self._held else select.EPOLLIN) | (select.EPOLLOUT if client.outgoing else 0)
        assert self._loop is not None
        self._loop.rewatch_fd(fd, events)

    def _drop(self, client: ClassicClient) -> None:
        """Close a client (its end logged by the caller, by whose doing it was: closures.py)."""
        try:
            client.flush()  # the last words (an authentication error), if the socket takes them
        except ClientClosed:
            pass
        self._forget(client)

    def _forget(self, client: ClassicClient) -> None:
        """Out of every table and unwatched first (so that nothing serves it again, whatever
        happens next), then closed."""
        fd = client.fd
        if self._loop is not None and self.clients.get(fd) is client:
            self._loop.unwatch_fd(fd)
        if self.clients.get(fd) is client:
            del self.clients[fd]
            self._admission.remove(fd)
            self._held.discard(fd)
        if client.conn is not None and client.conn.conn is not None:
            conn_id = client.conn.id
            self._by_conn.pop(conn_id, None)
            self.served.in_process.pop(conn_id, None)
            self._woken.discard(conn_id)
        client.close()
        # A descriptor is free again: accept(2) may work now.
        self._resume_accepting()

    # -- wake-ups of clients' connections ------------------------------------------------------
    def _conn_woken(self, conn: Connection) -> None:
        # Called while the file system hands out a request's effects: only note it, and serve
        # it from the loop.
        if not self._woken:
            os.eventfd_write(self._wake_fd, 1)
        self._woken.add(conn.id)

    def _woken_ready(self, mask: int) -> list[Output]:
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass
        return self.served.outside_requests("delivering to classic clients", self._deliver_woken)

    def _deliver_woken(self) -> None:
        # Anything woken while delivering (its own RECVs included) writes the eventfd again and
        # waits for the next turn of the loop.
        woken, self._woken = self._woken, set()
        for conn_id in woken:
            client = self._by_conn.get(conn_id)
            if client is not None:
                self._guarded(client, partial(self._deliver, client))

    def _deliver(self, client: ClassicClient) -> None:
        client.receive_queued()
        client.flush()
        self._watch(client)
