"""The calling task's descriptors, as the edge reaches them."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from kdbusfs.errors import KdbusError
from kdbusfs.host import files


def test_without_pidfd_thread_the_thread_group_is_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[int, int]] = []
    real_open = os.pidfd_open

    def old_kernel(pid: int, flags: int = 0) -> int:
        opened.append((pid, flags))
        if flags:
            raise OSError(errno.EINVAL, "unknown flag")
        return real_open(pid, flags)

    monkeypatch.setattr(files.os, "pidfd_open", old_kernel)
    tid: list[int] = []
    thread = threading.Thread(target=lambda: tid.append(threading.get_native_id()))
    thread.start()
    thread.join()
    os.close(files._thread_pidfd(tid[0], os.getpid()))
    assert opened == [(tid[0], files.PIDFD_THREAD), (os.getpid(), 0)]


def test_a_gone_sender_is_ebadf() -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    gone = thread.native_id
    thread.join()
    assert gone is not None
    # join() returns once the thread's Python part is done; the task itself ends moments later.
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/self/task/{gone}") and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(KdbusError) as info:
        files._thread_pidfd(gone, gone)
    assert info.value.errno == errno.EBADF
