"""The FUSE session loop: read a request from /dev/fuse, serve it inline, write the answers."""

from __future__ import annotations

import errno
import logging
import os
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
    async with trio.open_nursery() as nursery:
        watches = _Watches(fd, server, nursery)
        await _serve(fd, server, watches, on_ready, debug)
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

    def __init__(self, fuse_fd: int, server: Server, nursery: trio.Nursery) -> None:
        self._fuse_fd = fuse_fd
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
                    _write_all(self._fuse_fd, self._server.cancel_fd_ready(watch.fd), "cancel fd")
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
            if exc.errno == errno.ENODEV:
                return  # unmounted: the next read says so and ends the session
            # Anything else costs this one message, never the daemon.
            log.warning("kernel refused a message for %s: %s",
                        _name(what) if isinstance(what, int) else what, exc.strerror)


def _name(opcode: int) -> str:
    try:
        return p.Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode}"
