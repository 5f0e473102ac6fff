"""The FUSE session loop: read a request from /dev/fuse, serve it inline, write the answers.

The loop is plain blocking code meant for a thread of its own. Serving a small ioctl costs about as
much Python as one trip through an event loop's scheduler, so the loop waits in epoll itself: per
request one read and one write, plus one epoll_wait when idle. The edge around it (signals,
unmounting) is the caller's business; stop() ends the loop from any thread.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeGuard

from .. import limits, seccomp
from ..forward import Forwarded, Inbox
from . import protocol as p
from .codec import Listen, Output, ProtocolError, Request, Unwatch, Watch, Written, parse_request
from .device import read_into
from .stores import StoreWriter

log = logging.getLogger("kdbusfs.session")

# Large enough for any request the kernel may send with the max_write we negotiate (the kernel
# rejects smaller buffers), allocated once: a fresh buffer per request costs page faults.
READ_BUFFER_SIZE = 128 * 1024 + 4096
# Deadlines are looked at whenever the loop runs out of requests, and also after this many
# requests in a row: a steady stream must not hold back timeouts.
DEADLINE_CHECK_EVERY = 64
# The longest single wait: a client may set any u64 timeout, and epoll cannot wait past an int of
# milliseconds (longer asks raise OverflowError). Waking early only looks at the deadline again.
MAX_WAIT_S = 24 * 3600.0


# Reads a notification from a seccomp listener (None if it went away first).
Receive = Callable[[int], "seccomp.Notification | None"]
# Requests already queued on /dev/fuse served before a launched client's ioctl, at most.
DRAIN_BEFORE_NOTIFICATION = 256
# How often a listener's thread looks whether the session is over, while nothing happens.
LISTENER_POLL_MS = 1000


_INIT = int(p.Opcode.INIT)
_DESTROY = int(p.Opcode.DESTROY)

# The outputs that change what the session watches (the rest are written or run).
_CONTROL = (Watch, Unwatch, Listen)

# Serves a descriptor added with Session.watch_fd: gets its epoll event mask, returns what to emit.
FdHandler = Callable[[int], "list[Output]"]


def _answers_only(outputs: list[Output]) -> TypeGuard[list[bytes]]:
    """Whether every output is a plain message (replies and notifications, most requests)."""
    for output in outputs:
        if type(output) is not bytes:
            return False
    return True


class _Outcome(enum.Enum):
    SERVED = "served"
    SKIPPED = "skipped"  # nothing to answer (interrupted, unreadable, unmounted)
    IDLE = "idle"  # no request queued


class Server(Protocol):
    """What the session serves (kdbusfs.fs.Filesystem)."""

    def handle(self, request: Request) -> list[Output]: ...

    def next_deadline(self) -> int | None: ...

    def tick(self) -> list[Output]: ...

    def cancel_fd_ready(self, fd: int) -> list[Output]: ...

    def listener_ready(self, listener: int, notification: seccomp.Notification) -> list[Output]: ...

    def listener_gone(self, listener: int) -> None: ...

    def forwarded_ready(self, forwarded: Forwarded) -> list[Output]: ...

    def close_fd(self, fd: int) -> None: ...


def spin_budget_ns(spin_us: int, cpus: int) -> int:
    """How long an idle loop keeps reading before it sleeps (limits.SPIN_BEFORE_SLEEP_US): never
    when the daemon may run on `cpus` = 1 CPU only, where spinning delays the client it waits for."""
    return spin_us * 1000 if cpus > 1 else 0


class Session:
    """Serves one FUSE connection until it is unmounted (reads fail with ENODEV) or stopped.

    The owner calls run() on a thread, stop() from anywhere, and close() when both are over.
    """

    def __init__(self, fd: int, server: Server, on_ready: Callable[[], None] | None = None,
                 debug: bool = False, receive: Receive = seccomp.receive,
                 inbox: Inbox | None = None, spin_us: int = limits.SPIN_BEFORE_SLEEP_US) -> None:
        self._fd = fd
        self._spin_us = spin_us
        self._server = server
        self._on_ready = on_ready
        self._debug = debug
        self._writer = StoreWriter(fd)
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN)
        self._epoll.register(self._stop_fd, select.EPOLLIN)
        # Watched CANCEL_FDs (the daemon's duplicates) and whether each is registered with the
        # epoll above. One that cannot be registered stays open, unwatched, until its call ends,
        # so that its number is not reused while the server still knows it.
        self._watched: dict[int, bool] = {}
        # Seccomp listeners, each read by a thread of its own (see _read_listener), which hands
        # what it reads over through this queue and eventfd; None: the listener is done. The
        # inbox's thread hands over notifications other mounts' daemons forward the same way.
        self._listeners: set[int] = set()
        # Descriptors served from this loop for others (a classic D-Bus endpoint's sockets).
        self._extra: dict[int, FdHandler] = {}
        self._receive = receive
        self._inbox = inbox
        self._notified: queue.SimpleQueue[tuple[int, seccomp.Notification | None] | Forwarded] = \
            queue.SimpleQueue()
        self._notify_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._epoll.register(self._notify_fd, select.EPOLLIN)
        self._stopped = False
        # Unmounted (reads fail with ENODEV) or DESTROYed: run() returns.
        self._ended = False
        self._buf = bytearray(READ_BUFFER_SIZE)
        self._view = memoryview(self._buf)

    def stop(self) -> None:
        """End run() soon; safe from any thread, before, during or after run()."""
        # The flag ends a loop that never runs out of requests; the eventfd wakes an idle one.
        self._stopped = True
        os.eventfd_write(self._stop_fd, 1)

    def watch_fd(self, fd: int, handler: FdHandler, events: int = select.EPOLLIN) -> None:
        """Serve another descriptor from this loop: `handler(mask)` runs on the serving thread when
        `fd` is ready, and what it returns is emitted as a request's outputs are. Handlers must not
        block (the loop serves every client of the mount) and should contain their own errors: one
        that raises is logged and its descriptor unwatched."""
        self._epoll.register(fd, events)
        self._extra[fd] = handler

    def rewatch_fd(self, fd: int, events: int) -> None:
        """Change the events a watched descriptor is served for."""
        if fd in self._extra:
            self._epoll.modify(fd, events)

    def unwatch_fd(self, fd: int) -> None:
        """Stop serving `fd` (before closing it)."""
        if self._extra.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def close(self) -> None:
        """Release the session's own descriptors, once run() has returned and stop() cannot come."""
        self._epoll.close()
        os.close(self._stop_fd)
        # Not the listener threads' eventfd: a thread may still be about to say goodbye on it.

    def run(self) -> None:
        os.set_blocking(self._fd, False)
        if self._inbox is not None:
            threading.Thread(target=self._inbox.serve, args=(self._hand_over, self._over),
                             name="kdbusfs-inbox", daemon=True).start()
        served = 0
        spin_ns = spin_budget_ns(self._spin_us, len(os.sched_getaffinity(0)))
        # Whether the next idle spell starts with a spin: only while spins find requests, or a
        # request came within a spin's reach of the last sleep (limits.SPIN_BEFORE_SLEEP_US).
        spinning = spin_ns > 0
        # While nonzero: the time until which an idle loop keeps reading rather than sleeping.
        spin_until = 0
        # While nonzero: when the loop last went to sleep, no request having come since.
        asleep_at = 0
        try:
            while not self._stopped and not self._ended:
                outcome = self._serve_next()
                if outcome is _Outcome.IDLE:
                    if spinning:
                        now = time.monotonic_ns()
                        if not spin_until:
                            spin_until = now + spin_ns
                        if now < spin_until:
                            continue
                        spinning = False
                    spin_until = 0
                    if spin_ns:
                        asleep_at = time.monotonic_ns()
                    self._wait()
                    continue
                spin_until = 0
                if asleep_at:
                    # The first request since a sleep: had it come within a spin's reach, a spin
                    # would have served it sooner. (Other wake-ups, a classic client's say, do not
                    # count: a spin reads only the FUSE device.)
                    spinning = time.monotonic_ns() - asleep_at < spin_ns
                    asleep_at = 0
                if outcome is not _Outcome.SERVED:
                    continue
                served += 1
                if served % DEADLINE_CHECK_EVERY == 0:
                    self._tick_if_due()
                    if self._listeners or self._inbox is not None or self._extra:
                        # A steady stream of requests must not hold launched clients' RECVs (or
                        # classic clients) back.
                        self._handle_events(self._epoll.poll(0))
        finally:
            for watched in self._watched:
                self._server.close_fd(watched)
            self._watched.clear()
            # Listener threads see the session is over and hand their listeners back to nobody.

    def _serve_next(self) -> _Outcome:
        """Read and serve one request, if one is queued."""
        try:
            n = read_into(self._fd, self._buf)
        except BlockingIOError:
            return _Outcome.IDLE
        except InterruptedError:
            return _Outcome.SKIPPED
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # the request was interrupted before we read it
                return _Outcome.SKIPPED
            if exc.errno == errno.ENODEV:  # unmounted
                log.info("file system unmounted")
                self._ended = True
                return _Outcome.SKIPPED
            raise
        try:
            request = parse_request(self._view[:n])
        except ProtocolError as exc:
            log.error("dropping unreadable request: %s", exc)
            return _Outcome.SKIPPED
        server = self._server
        if self._debug:
            log.debug("%s unique=%d node=%d pid=%d", p.opcode_name(request.opcode), request.unique,
                      request.header.nodeid, request.header.pid)
        self._emit(server.handle(request), request.opcode)
        if request.opcode == _INIT and self._on_ready is not None:
            self._on_ready()
            self._on_ready = None
        if request.opcode == _DESTROY:
            self._ended = True
        return _Outcome.SERVED

    def _wait(self) -> None:
        """Sleep until a request, a cancel fd, stop() or the next deadline; handle the latter three."""
        server = self._server
        deadline = server.next_deadline()
        timeout = -1.0
        if deadline is not None:
            timeout = min(MAX_WAIT_S, max(0.0, (deadline - time.monotonic_ns()) / 1e9))
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:
            return
        if self._handle_events(events):
            self._tick_if_due()

    def _handle_events(self, events: list[tuple[int, int]]) -> bool:
        """Serve what woke the loop besides requests; False if it was stop()."""
        server = self._server
        for ready, mask in events:
            if ready == self._fd:
                continue
            if ready == self._stop_fd:
                return False  # stop() has set the flag; this only woke us
            extra = self._extra.get(ready)
            if extra is not None:
                self._serve_extra(ready, extra, mask)
            elif ready == self._notify_fd:
                self._serve_notifications()
            elif self._watched.get(ready):
                self._emit(server.cancel_fd_ready(ready), "cancel fd")
                # A cancel fd fires once, whether or not its call was still waiting.
                self._unwatch(ready)
        return True

    def _serve_extra(self, fd: int, handler: FdHandler, mask: int) -> None:
        try:
            outputs = handler(mask)
        except Exception:
            # It costs the descriptor, never the loop every client depends on; it is not served
            # again: still ready, it would fail again at once and spin.
            log.exception("serving descriptor %d failed unexpectedly; no longer watching it", fd)
            self.unwatch_fd(fd)
            return
        self._emit(outputs, "classic endpoint")

    def _serve_notifications(self) -> None:
        try:
            os.eventfd_read(self._notify_fd)
        except BlockingIOError:
            pass
        while True:
            try:
                item = self._notified.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Forwarded):
                self._drain()
                self._emit(self._server.forwarded_ready(item), "forwarded")
                continue
            listener, notification = item
            if notification is None:
                self._listeners.discard(listener)
                self._server.listener_gone(listener)
                continue
            self._drain()
            self._emit(self._server.listener_ready(listener, notification), "seccomp")

    def _drain(self) -> None:
        """Whatever a launched client did before its notified ioctl reached us first (a close()
        of another connection, say, whose RELEASE is already queued on /dev/fuse): serve it, as
        the ioctl itself would have queued behind it (a bounded number: others keep sending)."""
        for _ in range(DRAIN_BEFORE_NOTIFICATION):
            if self._ended or self._serve_next() is _Outcome.IDLE:
                break

    def _over(self) -> bool:
        return self._stopped or self._ended

    def _hand_over(self, forwarded: Forwarded) -> None:
        """From the inbox's thread: a notification to serve on the session's."""
        self._notified.put(forwarded)
        os.eventfd_write(self._notify_fd, 1)

    def _read_listener(self, listener: int) -> None:
        """A listener's own thread. NOTIF_RECV waits until a notification comes, even after poll
        said one was there (another holder of the listener may take it first): on the serving
        thread that would let any client stop the mount."""
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        try:
            while not (self._stopped or self._ended):
                # The timeout only lets a thread notice that the session is over.
                events = poller.poll(LISTENER_POLL_MS)
                if not events:
                    continue
                if not events[0][1] & select.POLLIN:
                    return  # hung up: every task under the filter is gone
                notification = self._receive(listener)
                if notification is not None:
                    self._notified.put((listener, notification))
                    os.eventfd_write(self._notify_fd, 1)
        except OSError as exc:
            log.warning("seccomp listener %d: %s", listener, exc.strerror)
        finally:
            self._notified.put((listener, None))
            os.eventfd_write(self._notify_fd, 1)

    def _tick_if_due(self) -> None:
        deadline = self._server.next_deadline()
        if deadline is not None and time.monotonic_ns() >= deadline:
            self._emit(self._server.tick(), "timer")

    def _emit(self, outputs: list[Output], what: str | int) -> None:
        """Act on what the server handed over: descriptors to watch here, the rest to write."""
        if self._writer.idle and _answers_only(outputs):
            self._writer.write_answers(outputs, what)
            return
        writes: list[Written] = []
        for output in outputs:
            if isinstance(output, _CONTROL):
                self._control(output)
            else:
                writes.append(output)
        self._writer.write_all(writes, what)

    def _control(self, change: Watch | Unwatch | Listen) -> None:
        # Taken in order: a call may end (Unwatch) in the same breath as it blocked (Watch).
        if isinstance(change, Watch):
            try:
                self._epoll.register(change.fd, select.EPOLLIN)
            except OSError as exc:
                # Nothing will cancel this call early; its reply or timeout still ends it.
                log.warning("cannot watch cancel fd %d: %s", change.fd, exc.strerror)
                self._watched[change.fd] = False
                return
            self._watched[change.fd] = True
        elif isinstance(change, Unwatch):
            self._unwatch(change.fd)
        else:
            self._listeners.add(change.fd)
            threading.Thread(target=self._read_listener, args=(change.fd,),
                             name=f"kdbusfs-listener-{change.fd}", daemon=True).start()

    def _unwatch(self, fd: int) -> None:
        registered = self._watched.pop(fd, None)
        if registered is None:
            return
        if registered:
            self._epoll.unregister(fd)
        # Closing may wait on another file system (a FUSE daemon, perhaps us): never here.
        self._server.close_fd(fd)
