"""The session loop's own duties, driven through a socketpair standing in for /dev/fuse.

A datagram socket keeps the kernel's framing (one read, one request); what it cannot show (ENODEV
on unmount, stores into page caches) the end-to-end tests cover through a real mount.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from kdbusfs import seccomp
from kdbusfs.fuse import codec
from kdbusfs.fuse import protocol as p
from kdbusfs.fuse.codec import Request
from kdbusfs.fuse.session import DEADLINE_CHECK_EVERY, Session, spin_budget_ns

Kernel = tuple[socket.socket, socket.socket]


class Recorder:
    """A server that answers every request with an empty reply and records what it was asked."""

    def __init__(self) -> None:
        # Watches and listens to hand over with the next answer.
        self.pending: list[codec.Output] = []
        # Notified when a listener's answer runs or the listener is gone (other threads do both).
        self.listener_events = threading.Condition()
        self.listened: list[int] = []
        self.answered: list[int] = []
        self.handled: list[int] = []
        self.cancelled: list[int] = []
        self.closed: list[int] = []
        self.ticks = 0
        self.deadline: int | None = None

    def handle(self, request: Request) -> list[codec.Output]:
        self.handled.append(request.unique)
        pending, self.pending = self.pending, []
        return [*pending, codec.reply(request.unique)]

    def next_deadline(self) -> int | None:
        return self.deadline

    def tick(self) -> list[bytes]:
        self.ticks += 1
        self.deadline = None
        return [codec.reply(999)]

    def listener_ready(self, listener: int, notification: seccomp.Notification) -> list[codec.Output]:
        self.listened.append(notification.id)

        def answer() -> None:
            with self.listener_events:
                self.answered.append(listener)
                self.listener_events.notify_all()
        return [codec.reply(888), answer]

    def listener_gone(self, listener: int) -> None:
        with self.listener_events:
            self.closed.append(listener)
            self.listener_events.notify_all()

    def cancel_fd_ready(self, fd: int) -> list[bytes]:
        self.cancelled.append(fd)
        return []

    def close_fd(self, fd: int) -> None:
        with self.listener_events:
            self.closed.append(fd)
            self.listener_events.notify_all()
        os.close(fd)


def request(unique: int, opcode: int = p.Opcode.GETATTR) -> bytes:
    return p.IN_HEADER.pack(p.IN_HEADER.size, opcode, unique, 1, 0, 0, 1, 0, 0)


def unique_of(reply: bytes) -> int:
    return int.from_bytes(reply[8:16], "little")


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


@contextmanager
def serving(ours: socket.socket, server: Recorder,
            receive: Callable[[int], seccomp.Notification | None] = seccomp.receive) -> Iterator[Session]:
    """The session running on a thread of its own; stopped, joined and closed afterwards."""
    session = Session(ours.fileno(), server, receive=receive)
    thread = threading.Thread(target=session.run, daemon=True)
    thread.start()
    try:
        yield session
    finally:
        session.stop()
        thread.join(5)
        assert not thread.is_alive()
        session.close()


def ask(theirs: socket.socket, unique: int) -> int:
    """Send one request and return the unique of the answer that comes back."""
    theirs.send(request(unique))
    return unique_of(theirs.recv(4096))


def test_requests_are_answered_in_order_and_stop_ends_the_loop(kernel: Kernel) -> None:
    ours, theirs = kernel
    with serving(ours, Recorder()) as session:
        for unique in (1, 2, 3):
            theirs.send(request(unique))
        assert [unique_of(theirs.recv(4096)) for _ in range(3)] == [1, 2, 3]
        session.stop()
    # serving() stops it once more: harmless once the loop is over.


def test_a_due_deadline_ticks_without_any_request(kernel: Kernel) -> None:
    ours, theirs = kernel
    server = Recorder()
    server.deadline = time.monotonic_ns() + 50_000_000
    with serving(ours, server):
        assert unique_of(theirs.recv(4096)) == 999
        assert server.ticks == 1


def test_a_deadline_centuries_away_is_waited_for_while_serving(kernel: Kernel) -> None:
    # A client may set any u64 timeout: the loop must neither overflow epoll nor stop serving.
    ours, theirs = kernel
    server = Recorder()
    server.deadline = 2**64 - 1
    with serving(ours, server):
        theirs.send(request(7))
        assert unique_of(theirs.recv(4096)) == 7
        assert server.ticks == 0


def test_a_cancel_fd_fires_once_and_is_closed(kernel: Kernel) -> None:
    ours, theirs = kernel
    server = Recorder()
    read_end, write_end = os.pipe()
    server.pending.append(codec.Watch(read_end))
    with serving(ours, server):
        # The watch comes with the answer to a request.
        assert ask(theirs, 1) == 1
        os.write(write_end, b"x")
        with server.listener_events:
            assert server.listener_events.wait_for(lambda: server.closed, timeout=10)
        assert server.cancelled == [read_end]
        assert server.closed == [read_end]
        # Still serving, and the closed watch never fires again.
        assert ask(theirs, 2) == 2
        assert server.cancelled == [read_end]
    os.close(write_end)


def pipe_notifications(listener: int) -> seccomp.Notification | None:
    """Reads a pipe standing in for a seccomp listener: each byte is a notification."""
    byte = os.read(listener, 1)
    return seccomp.Notification(byte[0], 0, 0, 0, ()) if byte else None


def test_a_listener_is_served_each_time_it_is_readable_and_closed_when_it_hangs_up(kernel: Kernel) -> None:
    ours, theirs = kernel
    server = Recorder()
    # A pipe stands in for a seccomp listener: readable = a notification, hang-up = no task left.
    read_end, write_end = os.pipe()
    server.pending.append(codec.Listen(read_end))
    with serving(ours, server, receive=pipe_notifications):
        assert ask(theirs, 1) == 1
        for n in (1, 2):
            os.write(write_end, bytes([n]))
            # What listener_ready returns is written (888), then its answer runs.
            assert unique_of(theirs.recv(4096)) == 888
            with server.listener_events:
                server.listener_events.wait_for(lambda n=n: len(server.answered) >= n, timeout=5)
            assert server.answered == [read_end] * n
        os.close(write_end)
        with server.listener_events:
            server.listener_events.wait_for(lambda: bool(server.closed), timeout=5)
        assert server.closed == [read_end]
        assert ask(theirs, 2) == 2
    assert server.listened == [1, 2]


def test_a_listener_whose_read_blocks_does_not_stop_the_mount(kernel: Kernel) -> None:
    ours, theirs = kernel
    server = Recorder()
    read_end, write_end = os.pipe()
    server.pending.append(codec.Listen(read_end))
    released = threading.Event()

    def taken_by_someone_else(listener: int) -> seccomp.Notification | None:
        # As NOTIF_RECV when another holder of the listener took the notification first.
        released.wait(10)
        return None

    with serving(ours, server, receive=taken_by_someone_else):
        assert ask(theirs, 1) == 1
        os.write(write_end, b"x")
        # The listener's reader is stuck; requests are still served.
        for unique in range(2, 12):
            assert ask(theirs, unique) == unique
        released.set()
    os.close(write_end)


def test_a_watch_ended_before_it_started_is_closed_not_leaked(kernel: Kernel) -> None:
    ours, theirs = kernel
    server = Recorder()
    read_end, write_end = os.pipe()
    # The call ended within the same request that started it.
    server.pending += [codec.Watch(read_end), codec.Unwatch(read_end)]
    with serving(ours, server):
        assert ask(theirs, 1) == 1
        # Taken in order, before the reply is written.
        assert server.closed == [read_end]
        assert server.cancelled == []
    os.close(write_end)


def test_a_cancel_fd_that_cannot_be_polled_stays_open_until_its_call_ends(kernel: Kernel) -> None:
    ours, theirs = kernel
    server = Recorder()
    # epoll refuses regular files.
    unpollable = os.open("/proc/self/cmdline", os.O_RDONLY)
    server.pending.append(codec.Watch(unpollable))
    with serving(ours, server):
        assert ask(theirs, 1) == 1
        assert ask(theirs, 2) == 2
        assert server.closed == []
        server.pending.append(codec.Unwatch(unpollable))
        assert ask(theirs, 3) == 3
        assert server.closed == [unpollable]


def test_a_steady_stream_of_requests_does_not_hold_back_a_due_deadline(kernel: Kernel) -> None:
    ours, theirs = kernel
    server = Recorder()
    server.deadline = time.monotonic_ns() - 1  # already due
    count = DEADLINE_CHECK_EVERY * 2
    # Queued before the loop starts: it never runs out of requests until all are served. (A
    # socket with a timeout refuses to queue this many: send them blocking.)
    theirs.settimeout(None)
    for unique in range(1, count + 1):
        theirs.send(request(unique))
    theirs.settimeout(5)
    with serving(ours, server):
        answers = [unique_of(theirs.recv(4096)) for _ in range(count + 1)]
        assert 999 in answers[: DEADLINE_CHECK_EVERY + 1]
        assert server.ticks == 1


def test_a_store_is_written_from_its_view_then_what_follows_it_in_order(kernel: Kernel) -> None:
    ours, theirs = kernel
    server = Recorder()
    pool = bytearray(b"x" * 8192)
    server.pending = [codec.notify_store(7, 4096, memoryview(pool)[4096:]), codec.notify_poll(3)]
    with serving(ours, server):
        theirs.send(request(1))
        store = theirs.recv(16384)
        assert len(store) == 16 + 24 + 4096 and store[40:] == pool[4096:]
        assert struct.unpack_from("<iQQ", store, 4) == (p.Notify.STORE, 0, 7)
        assert struct.unpack_from("<iQ", theirs.recv(4096), 4) == (p.Notify.POLL, 0)
        assert unique_of(theirs.recv(4096)) == 1
        # Once the stores are out, answers go straight out again, still in order.
        assert [ask(theirs, u) for u in (2, 3)] == [2, 3]


def test_an_idle_session_spins_only_when_it_may_run_on_more_than_one_cpu() -> None:
    assert spin_budget_ns(30, 2) == 30_000
    # On one CPU the spin would hold off the very client whose request it waits for.
    assert spin_budget_ns(30, 1) == 0
    assert spin_budget_ns(0, 8) == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a session on one CPU never spins")
def test_requests_arriving_while_the_session_spins_are_served_without_it_sleeping(
        kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = kernel
    server = Recorder()
    # A minute of spinning: between these requests the session never gets to sleep.
    session = Session(ours.fileno(), server, spin_us=60_000_000)
    sleeps: list[None] = []
    monkeypatch.setattr(session, "_wait", lambda: sleeps.append(None))
    thread = threading.Thread(target=session.run, daemon=True)
    thread.start()
    try:
        assert [ask(theirs, unique) for unique in (1, 2, 3)] == [1, 2, 3]
    finally:
        session.stop()
        thread.join(5)
        session.close()
    assert not thread.is_alive() and sleeps == []


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a session on one CPU never spins")
def test_the_session_spins_again_only_once_requests_come_within_a_spins_reach(
        kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = kernel
    spin_s = 0.5
    session = Session(ours.fileno(), Recorder(), spin_us=int(spin_s * 1e6))
    # What the loop did, in order: "read" for every look at the device, "sleep" for every wait.
    steps: list[str] = []
    slept = threading.Condition()
    serve_next, wait = session._serve_next, session._wait

    def reading() -> object:
        steps.append("read")
        return serve_next()

    def sleeping() -> None:
        with slept:
            steps.append("sleep")
            slept.notify_all()
        wait()

    def reads_before_sleep(number: int) -> int:
        """The reads between sleep `number - 1` and sleep `number`, once that one has begun."""
        with slept:
            assert slept.wait_for(lambda: steps.count("sleep") == number, 10)
            ends = [i for i, step in enumerate(steps) if step == "sleep"]
            return ends[-1] - ends[-2] - 1

    monkeypatch.setattr(session, "_serve_next", reading)
    monkeypatch.setattr(session, "_wait", sleeping)
    thread = threading.Thread(target=session.run, daemon=True)
    thread.start()
    try:
        with slept:
            assert slept.wait_for(lambda: steps.count("sleep") == 1, 10)  # spun, found nothing, slept
        # A request further away than a spin (slowness only makes it further): served, then the
        # loop sleeps at once, without spinning.
        time.sleep(spin_s * 1.2)
        assert ask(theirs, 1) == 1
        assert reads_before_sleep(2) == 2
        # A request right after that sleep began: a spin would have caught it, so the loop spins
        # again after serving it (many reads before it sleeps).
        assert ask(theirs, 2) == 2
        assert reads_before_sleep(3) > 2
    finally:
        session.stop()
        thread.join(5)
        session.close()
