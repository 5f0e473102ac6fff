"""Closing descriptors off the serving thread."""

from __future__ import annotations

import os
import queue
import threading


class Closer:
    """Closes descriptors on a thread of its own.

    Closing a file of a FUSE file system sends FLUSH to its daemon and waits for the answer; for a
    file of our own mount that daemon is us, so the serving thread must never be the one waiting.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def close(self, fd: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kdbusfs-closer", daemon=True)
            self._thread.start()
        self._queue.put(fd)

    def _run(self) -> None:
        while True:
            fd = self._queue.get()
            try:
                os.close(fd)
            except OSError:
                pass
