"""forward.py: notifications handed from one mount's daemon to another's, over a real socket,
with a real seccomp listener from a child process."""

from __future__ import annotations

import array
import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from kdbusfs import forward, seccomp
from kdbusfs.limits import FORWARDERS_PER_USER

# A device number no mount here has: the inbox's abstract name must not clash with a daemon's.
DEVICE = os.makedev(4095, 1_000_000 + os.getpid())
WAIT_S = 30

# Puts itself under the launcher's filter, sends the listener to the test, then asks a RECV on a
# pipe: the ioctl waits in seccomp until answered; carrying on gives the pipe's ENOTTY.
CHILD = """
import array, fcntl, os, socket, sys
from kdbusfs import seccomp
from kdbusfs.abi.constants import Cmd
channel = socket.socket(fileno=int(sys.argv[1]))
listener = seccomp.install_filter()
channel.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [listener]).tobytes())])
os.close(listener)
r, w = os.pipe()
try:
    fcntl.ioctl(r, Cmd.RECV, 0)
    print("returned 0")
except OSError as exc:
    print("errno", exc.errno)
"""


@pytest.fixture
def inbox() -> Iterator[queue.SimpleQueue[forward.Forwarded]]:
    delivered: queue.SimpleQueue[forward.Forwarded] = queue.SimpleQueue()
    over = threading.Event()
    box = forward.Inbox(DEVICE)
    thread = threading.Thread(target=box.serve, args=(delivered.put, over.is_set), daemon=True)
    thread.start()
    yield delivered
    over.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def _connect() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(WAIT_S)
    sock.connect(forward.address(DEVICE))
    assert sock.recv(8) == forward.ACCEPTED  # taken: now it may send
    return sock


@contextlib.contextmanager
def child_in_seccomp() -> Iterator[tuple[subprocess.Popen[str], int, seccomp.Notification]]:
    """A child (CHILD) waiting in its notified ioctl: (the child, our listener of it, the
    notification). The child is killed at the end if it is still there."""
    ours, theirs = socket.socketpair()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                             stdout=subprocess.PIPE, text=True)
    theirs.close()
    try:
        ours.settimeout(WAIT_S)
        _, ancillary, _, _ = ours.recvmsg(1, socket.CMSG_SPACE(4))
        listener = array.array("i", ancillary[0][2])[0]
        notification = seccomp.receive(listener)
        assert notification is not None and notification.is_kdbus_ioctl()
        assert notification.tid == child.pid
        yield child, listener, notification
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        ours.close()


def test_a_forwarded_notification_reaches_the_inbox_with_a_listener_that_answers_it(
    inbox: queue.SimpleQueue[forward.Forwarded],
) -> None:
    with child_in_seccomp() as (child, listener, notification):

        outbox = forward.Outbox()
        assert outbox.forward(DEVICE, listener, notification, os.getuid())
        os.close(listener)
        forwarded = inbox.get(timeout=WAIT_S)
        outbox.close()

        assert forwarded.notification == notification
        assert forwarded.forwarder_uid == os.getuid()
        assert seccomp.is_listener(forwarded.listener)
        # The inbox's copy is the same listener: the notification is pending on it.
        assert seccomp.still_waiting(forwarded.listener, notification.id)
        assert forwarded.may_serve()  # the task is the forwarder's user's (root may anyway)
        seccomp.resume(forwarded.listener, notification.id)
        os.close(forwarded.listener)
        out, _ = child.communicate(timeout=WAIT_S)
        assert out.strip() == "errno 25"  # the pipe's ENOTTY: the ioctl ran as if unnotified


def test_a_message_without_a_listener_makes_the_inbox_hang_up(
    inbox: queue.SimpleQueue[forward.Forwarded],
) -> None:
    sock = _connect()
    sock.send(bytes(seccomp.Notification.SIZE))
    assert sock.recv(1) == b""  # hung up
    assert inbox.empty()


def test_a_descriptor_that_is_no_listener_is_closed_and_the_forwarder_hung_up_on(
    inbox: queue.SimpleQueue[forward.Forwarded],
) -> None:
    r, w = os.pipe()
    sock = _connect()
    sock.sendmsg([bytes(seccomp.Notification.SIZE)],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]).tobytes())])
    os.close(r)
    assert sock.recv(1) == b""
    # The inbox closed its copy of the read end: none is left.
    with pytest.raises(BrokenPipeError):
        os.write(w, b"x")
    os.close(w)
    assert inbox.empty()


def test_the_inbox_keeps_serving_after_a_bad_forwarder(inbox: queue.SimpleQueue[forward.Forwarded]) -> None:
    bad = _connect()
    bad.send(b"short")
    assert bad.recv(1) == b""
    good = _connect()
    good.send(bytes(seccomp.Notification.SIZE))  # still garbage, but answered: the thread lives
    assert good.recv(1) == b""


def test_nobody_to_forward_to_is_no_error() -> None:
    outbox = forward.Outbox()
    notification = seccomp.Notification(1, os.getpid(), 16, 0, (0,) * 6)
    r, w = os.pipe()
    try:
        assert not outbox.forward(os.makedev(4095, 2_000_000 + os.getpid()), r, notification, os.getuid())
    finally:
        os.close(r)
        os.close(w)


def test_a_user_holds_at_most_a_few_places_and_a_refused_forwarder_is_told_at_once(
    inbox: queue.SimpleQueue[forward.Forwarded],
) -> None:
    held = [_connect() for _ in range(FORWARDERS_PER_USER)]
    refused = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    refused.settimeout(WAIT_S)
    refused.connect(forward.address(DEVICE))
    # Closed without the go-ahead: a forwarder sends nothing that could be lost.
    assert refused.recv(8) == b""
    # The Outbox sees the same and forwards nothing (its caller lets the ioctl carry on).
    r, w = os.pipe()
    try:
        notification = seccomp.Notification(1, os.getpid(), 16, 0, (0,) * 6)
        assert not forward.Outbox().forward(DEVICE, r, notification, os.getuid())
    finally:
        os.close(r)
        os.close(w)
    for sock in held:
        sock.close()
