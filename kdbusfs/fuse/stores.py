"""Writing a session's answers to /dev/fuse: stores on a thread of their own, the rest in order."""

from __future__ import annotations

import collections
import errno
import logging
import os
import threading
from collections.abc import Callable

from . import protocol as p
from .codec import Store, Written
from .device import write_bytes

log = logging.getLogger("kdbusfs.session")


def _write_one(fd: int, message: bytes | Store, what: str | int) -> None:
    if isinstance(message, Store):
        try:
            # One message in one writev, its bytes taken straight from the pool's memory.
            os.writev(fd, (message.head, message.data))
        except OSError as exc:
            _refused(exc.errno or 0, what)
        return
    err = write_bytes(fd, message)
    if err:
        _refused(err, what)


def _refused(err: int, what: str | int) -> None:
    # ENOENT: the request was interrupted and aborted, or a notification names a node the kernel
    # has already forgotten. ENODEV: unmounted, which the next read reports. Anything else costs
    # this one message, never the daemon.
    if err not in (errno.ENOENT, errno.ENODEV):
        log.warning("kernel refused a message for %s: %s",
                    p.opcode_name(what) if isinstance(what, int) else what, os.strerror(err))


def _run_one(action: Callable[[], None]) -> None:
    try:
        action()
    except OSError as exc:
        # A seccomp answer to a task that cannot take it any more: that task's loss alone.
        log.warning("answering a launched client failed: %s", exc.strerror)


class StoreWriter:
    """Writes FUSE_NOTIFY_STORE messages, and whatever must follow them, on a thread of its own.

    A store into a page-cache page waits for that page's lock, which a READ of the page holds until
    it is answered; the serving thread must stay free to answer it. Replies written after a store
    keep their order by queueing behind it while any store is pending; READ replies never wait.
    Mounts with passthrough pools never store and never start the thread.

    What one request queues goes over as one batch, with one wake-up through an eventfd. Each
    wake-up is a trip through the scheduler for both threads; through an eventfd it happens inside
    a system call, while the serving thread has let go of the GIL, so the woken thread never waits
    for it. (A queue.SimpleQueue wakes its reader while the GIL is still held: the two threads then
    pass the GIL back and forth, about 10 futex calls and 4-5 context switches more per method
    call on a user's mount, measured on one CPU.)
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        # Appended and popped whole under the GIL; the eventfd says there is something to pop.
        self._queue: collections.deque[tuple[list[Written], str | int]] = collections.deque()
        self._wake = -1
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def idle(self) -> bool:
        """No store is waiting to be written: nothing written now can overtake one."""
        return not self._pending

    def write_answers(self, messages: list[bytes], what: str | int) -> None:
        """Write plain messages now, in order (only while idle: the common case, and the one
        that must cost least)."""
        for message in messages:
            err = write_bytes(self._fd, message)
            if err:
                _refused(err, what)

    def write_all(self, messages: list[Written], what: str | int) -> None:
        batch: list[Written] = []
        read = what == p.Opcode.READ
        for message in messages:
            if isinstance(message, bytes) and read:
                # A store queued before may be waiting for the page lock this READ holds.
                _write_one(self._fd, message, what)
            elif batch or self._pending or isinstance(message, Store):
                # Behind the stores before it; an action runs after everything before it, the
                # stores it depends on included.
                batch.append(message)
            elif isinstance(message, bytes):
                _write_one(self._fd, message, what)
            else:
                _run_one(message)
        if batch:
            self._enqueue(batch, what)

    def _enqueue(self, batch: list[Written], what: str | int) -> None:
        if self._thread is None:
            # Made with the thread and kept as long as it: the thread may wait on it at any time.
            self._wake = os.eventfd(0, os.EFD_CLOEXEC)
            self._thread = threading.Thread(target=self._run, name="kdbusfs-stores", daemon=True)
            self._thread.start()
        with self._lock:
            self._pending += 1
        self._queue.append((batch, what))
        os.eventfd_write(self._wake, 1)

    def _run(self) -> None:
        while True:
            # Whatever is appended after the deque runs dry has written the eventfd again.
            os.eventfd_read(self._wake)
            while self._queue:
                batch, what = self._queue.popleft()
                self._write_batch(batch, what)
                # Not held while waiting for the next: a store's view of a pool keeps the pool's
                # memory mapped.
                del batch
                with self._lock:
                    self._pending -= 1

    def _write_batch(self, batch: list[Written], what: str | int) -> None:
        for message in batch:
            if isinstance(message, (Store, bytes)):
                _write_one(self._fd, message, what)
            else:
                _run_one(message)
