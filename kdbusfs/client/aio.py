"""Using a connection from trio tasks.

Receiving waits for the connection's file to become readable in trio's I/O loop, then RECVs.
A synchronous call runs in a worker thread with an eventfd as its CANCEL_FD: cancelling the task
signals the eventfd, so the bus ends the call with ECANCELED instead of leaving a thread behind.

    async with trio.open_nursery() as nursery:
        message = await aio.receive(conn)
        reply = await aio.call(conn, "org.example.Clock", b"now?", timeout=5)
"""

from __future__ import annotations

import os
import threading
from typing import Any

import trio

from .connection import Connection
from .message import Message
from .outgoing import Destination, Payload


async def wait_readable(conn: Connection) -> None:
    """Wait until the connection has a message (or a lost-message count) to receive."""
    await trio.lowlevel.wait_readable(conn.fd)


async def receive(conn: Connection, *, priority: int | None = None) -> Message:
    """The next message, waiting for one without blocking other tasks."""
    while True:
        message = conn.try_recv(priority=priority)
        if message is not None:
            return message
        await trio.lowlevel.wait_readable(conn.fd)


class _CancelSignal:
    """An eventfd the calling thread owns; the task may signal it until the thread closes it."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._lock = threading.Lock()

    def signal(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        with self._lock:
            os.close(self.fd)
            self.fd = -1


async def call(conn: Connection, destination: Destination, payload: Payload = b"",
               **options: Any) -> Message:
    """`conn.call(...)` without blocking other tasks; cancelling the task cancels the call."""
    # Past this check nothing yields before the worker starts, so the worker always runs and
    # closes the eventfd.
    await trio.lowlevel.checkpoint_if_cancelled()
    cancel = _CancelSignal()

    def run() -> Message:
        try:
            return conn.call(destination, payload, cancel_fd=cancel.fd, **options)
        finally:
            cancel.close()

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    except trio.Cancelled:
        cancel.signal()
        raise
