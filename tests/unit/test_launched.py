"""launched.py: notifications other mounts' daemons forward, with a real seccomp listener of a
child process that waits in a notified ioctl (a RECV on a pipe, which no mount serves)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from test_forward import WAIT_S, child_in_seccomp

from kdbusfs import seccomp
from kdbusfs.bus.domain import Domain
from kdbusfs.forward import Forwarded
from kdbusfs.fs import Filesystem
from kdbusfs.fuse.codec import Output
from kdbusfs.host import Host


class ClosingHost(Host):
    """The real host, closing descriptors at once (not on the closer's thread) so tests see it."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[int] = []

    def close_fd(self, fd: int) -> None:
        self.closed.append(fd)
        os.close(fd)


@dataclass
class Waiting:
    """A child waiting in a notified ioctl, and our listener of it."""

    child: subprocess.Popen[str]
    listener: int
    notification: seccomp.Notification

    def lend(self, forwarder_uid: int = 0) -> Forwarded:
        """What another daemon's forward brings: our own duplicate of the listener."""
        return Forwarded(os.dup(self.listener), self.notification, forwarder_uid)

    def errno(self) -> str:
        out, _ = self.child.communicate(timeout=WAIT_S)
        return out.strip()


@pytest.fixture
def waiting() -> Iterator[Waiting]:
    with child_in_seccomp() as (child, listener, notification):
        yield Waiting(child, listener, notification)


def run_all(outputs: list[Output]) -> None:
    for output in outputs:
        assert callable(output)
        answer: Callable[[], None] = output
        answer()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_forwarded_ioctl_on_no_file_of_ours_carries_on_and_the_listener_is_given_back(
    waiting: Waiting,
) -> None:
    fs = Filesystem(Domain(), ClosingHost())
    lent = waiting.lend()
    out = fs.forwarded_ready(lent)
    assert len(out) == 1 and _is_open(lent.listener)
    run_all(out)
    assert not _is_open(lent.listener)  # closed once it has answered
    assert waiting.errno() == "errno 25"  # the pipe's own ENOTTY: the ioctl ran unnotified


def test_a_forwarder_of_another_user_is_not_obeyed(waiting: Waiting) -> None:
    fs = Filesystem(Domain(), ClosingHost())
    # The child runs as this test's user; a forwarder of another uid may not name it.
    out = fs.forwarded_ready(waiting.lend(forwarder_uid=os.getuid() + 4242))
    run_all(out)
    assert waiting.errno() == "errno 25"


def test_a_notification_forwarded_twice_is_served_once(waiting: Waiting) -> None:
    host = ClosingHost()
    fs = Filesystem(Domain(), host)
    first, second = waiting.lend(), waiting.lend()
    out = fs.forwarded_ready(first)
    assert fs.forwarded_ready(second) == [] and host.closed == [second.listener]
    run_all(out)
    assert waiting.errno() == "errno 25"
    # Answered: a late forward of it finds it gone and only gives the listener back.
    late = waiting.lend()
    assert fs.forwarded_ready(late) == [] and host.closed[-1] == late.listener
