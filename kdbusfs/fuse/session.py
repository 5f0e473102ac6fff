"""The FUSE session loop: read a request from /dev/fuse, serve it inline, write the answers."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
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
    async with trio.open_nursery() as nursery:
        watches = _Watches(fd, server, nursery)
        await _serve(fd, server, watches, on_ready, debug)
        watches.close_all()
        nursery.cancel_scope.cancel()


class _Watches:
    """One task per watched descriptor (a blocked call's CANCEL_FD)."""

    def __init__(self, fuse_fd: int, server: Server, nursery: trio.Nursery) -> None:
        self._fuse_fd = fuse_fd
        # Closing may wait on another file system (a FUSE daemon, perhaps us): not on this thread.
        self._close: Callable[[int], None] = getattr(server, "close_fd", os.close)
        self._server = server
        self._nursery = nursery
        self._watched: set[int] = set()

    def sync(self) -> None:
        server = self._server
        while server.unwatch:
            fd = server.unwatch.pop()
            if fd in self._watched:
                self._watched.discard(fd)
                trio.lowlevel.notify_closing(fd)
            self._close(fd)
        while server.watch:
            fd = server.watch.pop()
            self._watched.add(fd)
            self._nursery.start_soon(self._wait, fd)

    async def _wait(self, fd: int) -> None:
        try:
            await trio.lowlevel.wait_readable(fd)
        except trio.ClosedResourceError:
            return
        if fd in self._watched:
            _write_all(self._fuse_fd, self._server.cancel_fd_ready(fd), "cancel fd")
            self.sync()

    def close_all(self) -> None:
        for fd in self._watched:
            trio.lowlevel.notify_closing(fd)
            self._close(fd)
        self._watched.clear()


async def _serve(fd: int, server: Server, watches: _Watches, on_ready: Callable[[], None] | None,
                 debug: bool) -> None:
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
            _write_all(fd, server.tick(), "timer")
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
        _write_all(fd, server.handle(request), request.opcode)
        if server.watch or server.unwatch:
            watches.sync()
        if request.opcode == p.Opcode.INIT and not ready_sent:
            ready_sent = True
            if on_ready is not None:
                on_ready()
        if request.opcode == p.Opcode.DESTROY:
            return


def _write_all(fd: int, messages: list[bytes], what: str | int) -> None:
    """Write each message (one write per FUSE message); `what` names them in warnings."""
    for message in messages:
        try:
            os.write(fd, message)
        except OSError as exc:
            # ENOENT: the request was interrupted and aborted, or a notification names a node the
            # kernel has already forgotten. Neither is an error of ours.
            if exc.errno == errno.ENOENT:
                continue
            if exc.errno in (errno.EINVAL, errno.EAGAIN):
                log.warning("kernel refused a message for %s: %s",
                            _name(what) if isinstance(what, int) else what, exc.strerror)
                continue
            raise


def _name(opcode: int) -> str:
    try:
        return p.Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode}"
