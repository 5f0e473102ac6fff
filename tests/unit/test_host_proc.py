"""What /proc says about a sending task, read again for each of its messages (host/proc.py)."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator

import pytest

from kdbusfs.bus.metadata import Snapshot
from kdbusfs.host.proc import ProcProcess, TaskFiles, _status_name

PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


def set_comm(name: bytes) -> None:
    """Rename the calling thread, as prctl(PR_SET_NAME) does in a client."""
    if _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")


def own_comm() -> str:
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", "rb") as f:
        return f.read().rstrip(b"\n").decode()


@pytest.fixture
def files() -> Iterator[TaskFiles]:
    opened = TaskFiles()
    yield opened
    opened.close()


@pytest.fixture
def leader_named() -> Iterator[None]:
    """This (main) thread's comm is renamed by the test and restored afterwards."""
    before = own_comm().encode()
    yield
    set_comm(before)


def sender(files: TaskFiles, tid: int | None = None) -> ProcProcess:
    """The process facts of one request, as a RequestCaller makes them."""
    return ProcProcess(tid or threading.get_native_id(), -1, -1, files=files, defer_userns=True)


def test_a_comm_change_between_two_messages_shows_in_the_second(files: TaskFiles, leader_named: None) -> None:
    assert threading.get_native_id() == os.getpid()
    for name in ("first", "second", "back\\slash", "new\nline", "trailing "):
        set_comm(name.encode())
        process = sender(files)
        assert (process.creds().pid, process.tid_comm(), process.pid_comm()) == (os.getpid(), name, name)
    # Every message read the same open files again: the status, and the comm file for the names
    # that status escapes.
    assert set(files._open) == {(os.getpid(), "status"), (os.getpid(), "comm")}


def test_a_threads_comm_is_its_own_and_its_leaders_is_the_pid_comm(files: TaskFiles) -> None:
    leader = own_comm()
    named, renamed, done = threading.Event(), threading.Event(), threading.Event()
    tid: list[int] = []

    def thread() -> None:
        tid.append(threading.get_native_id())
        set_comm(b"worker-1")
        named.set()
        renamed.wait()
        set_comm(b"worker-2")
        named.set()
        done.wait()

    worker = threading.Thread(target=thread)
    worker.start()
    try:
        named.wait()
        first = sender(files, tid[0])
        assert (first.creds().pid, first.creds().tid) == (os.getpid(), tid[0])
        assert (first.tid_comm(), first.pid_comm()) == ("worker-1", leader)
        named.clear()
        renamed.set()
        named.wait()
        second = sender(files, tid[0])
        assert (second.tid_comm(), second.pid_comm()) == ("worker-2", leader)
    finally:
        renamed.set()
        done.set()
        worker.join()


def test_the_file_of_a_task_that_is_gone_is_closed_not_read(files: TaskFiles) -> None:
    child = os.fork()
    if child == 0:
        # Until reaped it stays (a zombie), its number with it.
        os._exit(0)
    assert files.read(child, "status") is not None
    assert len(files) == 1
    os.waitpid(child, 0)
    # Reaped: its number may be another task's by now, and this file must not pass for it.
    assert files.read(child, "status") is None
    assert len(files) == 0


def test_past_the_limit_the_least_recently_read_file_is_closed() -> None:
    files = TaskFiles(capacity=2)
    try:
        pid = os.getpid()
        for name in ("status", "comm", "status", "stat"):
            assert files.read(pid, name) is not None
        assert len(files) == 2
        assert set(files._open) == {(pid, "status"), (pid, "stat")}
    finally:
        files.close()
    assert len(files) == 0


def test_a_comm_that_status_escapes_is_not_taken_from_it() -> None:
    assert _status_name(b"Name:\tplain name \nUmask:\t0022\n") == "plain name "
    assert _status_name(b"Name:\tback\\\\slash\nUmask:\t0022\n") is None
    assert _status_name(b"Name:\tnew\\nline\nUmask:\t0022\n") is None
    assert _status_name(b"Umask:\t0022\n") is None
    assert _status_name(None) is None


def test_a_senders_user_namespace_is_looked_up_only_when_a_capability_is_asked(files: TaskFiles) -> None:
    creds = sender(files).creds()
    if not creds.cap_effective:
        pytest.skip("needs a task with capabilities")
    # The user namespace lookup waits until a capability is asked about ...
    assert callable(creds.in_domain_userns)
    assert creds.has_cap(0) == (creds.cap_effective & 1 == 1)
    # ... but a snapshot keeps the answer, not a lookup into a task that may be gone.
    snapshot = Snapshot.capture(sender(files))
    assert isinstance(snapshot.creds().in_domain_userns, bool)
    assert snapshot.creds().has_cap(0) == creds.has_cap(0)
