"""The FUSE session loop: read a request from /dev/fuse, serve it inline, write the answers."""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from . import protocol as p
from .codec import ProtocolError, Request, parse_request

log = logging.getLogger("kdbusfs.session")

# Large enough for any request the kernel may send with the max_write we negotiate (the kernel
# rejects smaller buffers), allocated once: a fresh buffer per request costs page faults.
READ_BUFFER_SIZE = 128 * 1024 + 4096


class Server(Protocol):
    """What the session serves (kdbusfs.fs.Filesystem)."""

    # Descriptors to watch for readability, and watched ones to stop watching and close.
    watch: list[int]
    unwatch: list[int]

    def handle(self, request: Request) -> list[bytes]: ...

    def next_deadline(self) -> int | None: ...

    def tick(self) -> list[bytes]: ...

    def cancel_fd_ready(self, fd: int) -> list[bytes]: ...


async def serve(fd: int, server: Server, on_ready: Callable[[], None] | None = None,
                debug: bool = False) -> None:
    """Serve the FUSE connection on `fd` until it is unmounted (the kernel then answers ENODEV)."""
    writer = _StoreWriter(fd)
    async with trio.open_nursery() as nursery:
        watches = _Watches(writer, server, nursery)
        await _serve(fd, server, watches, writer, on_ready, debug)
        watches.close_all()
        nursery.cancel_scope.cancel()


@dataclass(eq=False)
class _Watch:
    fd: int
    scope: trio.CancelScope | None = None
    stopped: bool = False


class _Watches:
    """One task per watched descriptor (a blocked call's CANCEL_FD).

    The task owns the descriptor: it closes it when it ends, so no descriptor is ever closed while
    trio waits on it, and a watch stopped before its task ran never waits at all.
    """

    def __init__(self, writer: _StoreWriter, server: Server, nursery: trio.Nursery) -> None:
        self._writer = writer
        self._server = server
        self._nursery = nursery
        self._watches: dict[int, _Watch] = {}
        # Closing may wait on another file system (a FUSE daemon, perhaps us): not on this thread.
        self._close: Callable[[int], None] = getattr(server, "close_fd", os.close)

    def sync(self) -> None:
        server = self._server
        while server.unwatch:
            watch = self._watches.pop(server.unwatch.pop(), None)
            if watch is not None:
                watch.stopped = True
                if watch.scope is not None:
                    watch.scope.cancel()
        while server.watch:
            watch = _Watch(server.watch.pop())
            self._watches[watch.fd] = watch
            self._nursery.start_soon(self._wait, watch)

    async def _wait(self, watch: _Watch) -> None:
        try:
            if watch.stopped:
                return
            with trio.CancelScope() as watch.scope:
                await trio.lowlevel.wait_readable(watch.fd)
                if not watch.stopped:
                    self._writer.write_all(self._server.cancel_fd_ready(watch.fd), "cancel fd")
                    self.sync()
        except (OSError, trio.ClosedResourceError) as exc:
            log.warning("watching cancel fd %d failed: %s", watch.fd, exc)
        finally:
            self._watches.pop(watch.fd, None)
            self._close(watch.fd)

    def close_all(self) -> None:
        for watch in self._watches.values():
            watch.stopped = True
            if watch.scope is not None:
                watch.scope.cancel()


async def _serve(fd: int, server: Server, watches: _Watches, writer: _StoreWriter,
                 on_ready: Callable[[], None] | None, debug: bool) -> None:
    os.set_blocking(fd, False)
    buf = bytearray(READ_BUFFER_SIZE)
    view = memoryview(buf)
    ready_sent = False
    while True:
        try:
            n = os.readv(fd, [buf])
        except BlockingIOError:
            deadline = server.next_deadline()
            if deadline is None:
                await trio.lowlevel.wait_readable(fd)
                continue
            delay = (deadline - time.monotonic_ns()) / 1e9
            if delay > 0:
                with trio.move_on_after(delay):
                    await trio.lowlevel.wait_readable(fd)
                    continue
            writer.write_all(server.tick(), "timer")
            watches.sync()
            continue
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # the request was interrupted before we read it
                continue
            if exc.errno == errno.ENODEV:  # unmounted
                log.info("file system unmounted")
                return
            raise
        try:
            request = parse_request(view[:n])
        except ProtocolError as exc:
            log.error("dropping unreadable request: %s", exc)
            continue
        if debug:
            log.debug("%s unique=%d node=%d pid=%d", _name(request.opcode), request.unique,
                      request.header.nodeid, request.header.pid)
        writer.write_all(server.handle(request), request.opcode)
        if server.watch or server.unwatch:
            watches.sync()
        if request.opcode == p.Opcode.INIT and not ready_sent:
            ready_sent = True
            if on_ready is not None:
                on_ready()
        if request.opcode == p.Opcode.DESTROY:
            return


def _write_one(fd: int, message: bytes, what: str | int) -> None:
    try:
        os.write(fd, message)
    except OSError as exc:
        # ENOENT: the request was interrupted and aborted, or a notification names a node the
        # kernel has already forgotten. ENODEV: unmounted, which the next read reports. Anything
        # else costs this one message, never the daemon.
        if exc.errno not in (errno.ENOENT, errno.ENODEV):
            log.warning("kernel refused a message for %s: %s",
                        _name(what) if isinstance(what, int) else what, exc.strerror)


_STORE = p.Notify.STORE


def _is_store(message: bytes) -> bool:
    # A notification is a reply with unique 0 and the notify code in the error field.
    return message[4] == _STORE and message[8:16] == b"\0" * 8 and message[5:8] == b"\0\0\0"


class _StoreWriter:
    """Writes FUSE_NOTIFY_STORE messages, and whatever must follow them, on a thread of its own.

    A store into a page-cache page waits for that page's lock, which a READ of the page holds until
    it is answered; the serving thread must stay free to answer it. Replies written after a store
    keep their order by queueing behind it while any store is pending; READ replies never wait.
    Mounts with passthrough pools never store and never start the thread.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: queue.SimpleQueue[tuple[bytes, str | int]] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def write_all(self, messages: list[bytes], what: str | int) -> None:
        for message in messages:
            if _is_store(message) or (self._pending and what != p.Opcode.READ):
                self._enqueue(message, what)
            else:
                _write_one(self._fd, message, what)

    def _enqueue(self, message: bytes, what: str | int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kdbusfs-stores", daemon=True)
            self._thread.start()
        with self._lock:
            self._pending += 1
        self._queue.put((message, what))

    def _run(self) -> None:
        while True:
            message, what = self._queue.get()
            _write_one(self._fd, message, what)
            with self._lock:
                self._pending -= 1


def _name(opcode: int) -> str:
    try:
        return p.Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode}"
