"""What /proc says about a sending task, read again for each of its messages (host/proc.py)."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from kdbusfs.bus.metadata import Ids, Snapshot
from kdbusfs.host import proc
from kdbusfs.host.proc import ProcProcess, TaskFiles, _creds_from_status, _status_name, read_status

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
    return ProcProcess(tid or threading.get_native_id(), -1, -1, files=files)


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


STATUS = (b"Name:\tsender\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t700\nNgid:\t0\nPid:\t701\nPPid:\t1\n"
          b"TracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nFDSize:\t64\n"
          b"Groups:\t5 6 \n"
          b"NStgid:\t700\nNSpid:\t701\nVmRSS:\t    1000 kB\nThreads:\t2\nSigPnd:\t0000000000000000\n"
          b"CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
          b"voluntary_ctxt_switches:\t10\n")


def test_a_status_is_parsed_again_only_when_an_identity_line_changed(files: TaskFiles) -> None:
    first = files.identity(701, STATUS)
    assert first is not None
    creds, comm = first
    assert (creds.pid, creds.tid, creds.ppid, creds.uid, creds.gid, creds.groups, comm) == \
        (700, 701, 1, 1000, 100, (5, 6), "sender")
    # What changes from message to message (memory, switches, fd table size) is not parsed again.
    busy = STATUS.replace(b"1000 kB", b"2000 kB").replace(b"switches:\t10", b"switches:\t11")
    again = files.identity(701, busy.replace(b"FDSize:\t64", b"FDSize:\t128"))
    assert again is not None and again[0] is creds
    # Any line Creds or the comm comes from is.
    changes = {
        b"Uid:\t1000\t1000\t1000\t1000": (b"Uid:\t1000\t0\t1000\t0", lambda c: (c.euid, c.fsuid) == (0, 0)),
        b"Gid:\t100\t100\t100\t100": (b"Gid:\t100\t100\t7\t100", lambda c: c.sgid == 7),
        b"Groups:\t5 6 ": (b"Groups:\t5 ", lambda c: c.groups == (5,)),
        b"CapEff:\t0000000000000000": (b"CapEff:\t0000000000200000", lambda c: c.cap_effective == 1 << 21),
        b"PPid:\t1": (b"PPid:\t9", lambda c: c.ppid == 9),
    }
    for old, (new, changed) in changes.items():
        found = files.identity(701, STATUS.replace(old, new))
        assert found is not None and changed(found[0]), new
    renamed = files.identity(701, STATUS.replace(b"Name:\tsender", b"Name:\tother"))
    assert renamed is not None and renamed[1] == "other"


def test_a_status_without_its_identity_lines_in_place_is_not_kept(files: TaskFiles) -> None:
    assert files.identity(701, STATUS.replace(b"FDSize:\t64\n", b"")) is None
    # Uid after FDSize: Creds would read a line the comparison does not cover.
    moved = STATUS.replace(b"Uid:\t1000\t1000\t1000\t1000\n", b"").replace(
        b"FDSize:\t64\n", b"FDSize:\t64\nUid:\t1000\t1000\t1000\t1000\n")
    assert files.identity(701, moved) is None


def test_the_identity_of_a_real_status_is_what_parsing_all_of_it_says(files: TaskFiles) -> None:
    status = read_status(os.getpid())
    assert status is not None
    found = files.identity(os.getpid(), status)
    assert found is not None
    whole = _creds_from_status(os.getpid(), -1, -1, status)
    assert replace(found[0], in_domain_userns=whole.in_domain_userns) == whole
    assert found[1] == own_comm()


def pidfd_info_here() -> bool:
    probe = TaskFiles()
    try:
        return probe.ids(os.getpid()) is not None
    finally:
        probe.close()


needs_pidfd_info = pytest.mark.skipif(not pidfd_info_here(), reason="needs PIDFD_GET_INFO (Linux 6.13)")


@needs_pidfd_info
def test_a_pidfd_says_the_pids_and_ids_a_status_says(files: TaskFiles) -> None:
    tids: list[int] = []
    said: list[tuple[Ids | None, Ids]] = []

    def thread() -> None:
        tid = threading.get_native_id()
        tids.append(tid)
        said.append((files.ids(tid), _creds_from_status(tid, -1, -1, read_status(tid)).ids()))

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    pid = os.getpid()
    assert said[0][0] == said[0][1] and said[0][0] is not None and said[0][0][:2] == (pid, tids[0])
    assert files.ids(pid) == _creds_from_status(pid, -1, -1, read_status(pid)).ids()


@needs_pidfd_info
def test_a_message_with_ids_and_comms_only_reads_no_status(files: TaskFiles, leader_named: None) -> None:
    set_comm(b"ids-only")
    process = sender(files)
    assert (process.ids().pid, process.tid_comm(), process.pid_comm()) == \
        (os.getpid(), "ids-only", "ids-only")
    assert set(files._open) == {(os.getpid(), "pidfd"), (os.getpid(), "comm")}


@needs_pidfd_info
def test_the_pidfd_of_a_task_that_is_gone_is_closed_not_asked(files: TaskFiles) -> None:
    child = os.fork()
    if child == 0:
        os._exit(0)
    assert files.ids(child) is not None
    os.waitpid(child, 0)
    assert files.ids(child) is None
    assert len(files) == 0


def test_without_pidfd_info_the_status_says_the_ids(files: TaskFiles,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def old_kernel(fd: int, request: int, arg: bytearray, mutate: bool) -> int:
        raise OSError(errno.ENOTTY, "no such ioctl")

    monkeypatch.setattr(proc.fcntl, "ioctl", old_kernel)
    process = sender(files)
    assert process.ids() == _creds_from_status(os.getpid(), -1, -1, read_status(os.getpid())).ids()
    # Asked once: the kernel's answer holds for every task.
    assert not files._pidfd_info
    assert (os.getpid(), "status") in files._open and (os.getpid(), "pidfd") not in files._open
