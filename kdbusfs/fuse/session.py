"""The FUSE session loop: read a request from /dev/fuse, serve it inline, write the answers."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

import trio

from . import protocol as p
from .codec import ProtocolError, parse_request

log = logging.getLogger("kdbusfs.session")

# Large enough for any request the kernel may send with the max_write we negotiate (the kernel
# rejects smaller buffers), allocated once: a fresh buffer per request costs page faults.
READ_BUFFER_SIZE = 128 * 1024 + 4096


async def serve(
    fd: int, fs: Callable[..., list[bytes]], on_ready: Callable[[], None] | None = None,
    debug: bool = False,
) -> None:
    """Serve the FUSE connection on `fd` until it is unmounted (the kernel then answers ENODEV)."""
    os.set_blocking(fd, False)
    buf = bytearray(READ_BUFFER_SIZE)
    view = memoryview(buf)
    ready_sent = False
    while True:
        try:
            n = os.readv(fd, [buf])
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
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
        for message in fs(request):
            try:
                os.write(fd, message)
            except OSError as exc:
                # ENOENT: the request was interrupted and aborted; a notification about a node the
                # kernel has already forgotten is refused the same way. Neither is an error of ours.
                if exc.errno not in (errno.ENOENT, errno.EINVAL):
                    raise
                if exc.errno == errno.EINVAL:
                    log.warning("kernel refused a message for %s", _name(request.opcode))
        if request.opcode == p.Opcode.INIT and not ready_sent:
            ready_sent = True
            if on_ready is not None:
                on_ready()
        if request.opcode == p.Opcode.DESTROY:
            return


def _name(opcode: int) -> str:
    try:
        return p.Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode}"
