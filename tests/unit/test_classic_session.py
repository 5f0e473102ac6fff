"""The serving loop's hook for other descriptors (the classic endpoint's sockets): a watched fd's
handler runs on the serving thread when it is ready, what it returns is written as a request's
answers are, and an unwatched fd is no longer served."""

from __future__ import annotations

import logging
import select
import socket
import threading

import pytest
from test_session import Kernel, Recorder, ask, kernel, serving, unique_of

from kdbusfs.fuse import codec

__all__ = ["kernel"]


def test_a_watched_descriptor_is_served_on_the_loop_and_its_outputs_written(kernel: Kernel) -> None:
    ours, theirs = kernel
    recorder = Recorder()
    peer, watched = socket.socketpair()
    watched.setblocking(False)
    served = threading.Event()
    threads: list[str] = []

    def handler(mask: int) -> list[codec.Output]:
        assert mask & select.EPOLLIN
        watched.recv(64)
        threads.append(threading.current_thread().name)
        served.set()
        return [codec.reply(777)]

    with serving(ours, recorder) as session:
        session.watch_fd(watched.fileno(), handler)
        peer.send(b"x")
        assert served.wait(5)
        assert unique_of(theirs.recv(4096)) == 777
        assert ask(theirs, 1) == 1
        session.unwatch_fd(watched.fileno())
        served.clear()
        peer.send(b"y")
        assert ask(theirs, 2) == 2
        assert not served.is_set()
    assert threads and threads[0] != threading.current_thread().name
    peer.close()
    watched.close()


def test_a_handler_that_raises_costs_its_descriptor_not_the_loop(kernel: Kernel,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    ours, theirs = kernel
    peer, watched = socket.socketpair()
    raised = threading.Event()

    def broken(mask: int) -> list[codec.Output]:
        raised.set()
        raise RuntimeError("a bug behind a watched descriptor")

    with caplog.at_level(logging.ERROR, "kdbusfs.session"), serving(ours, Recorder()) as session:
        session.watch_fd(watched.fileno(), broken)
        peer.send(b"x")
        assert raised.wait(5)
        # The loop still serves requests, and no longer serves the broken descriptor (still
        # readable: serving it again would fail again, spinning).
        assert ask(theirs, 1) == 1
        assert watched.fileno() not in session._extra
        assert ask(theirs, 2) == 2
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    peer.close()
    watched.close()
