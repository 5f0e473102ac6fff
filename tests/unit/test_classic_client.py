"""One classic client: a client flooding the driver with calls whose answers are large gets no
more buffered for it than its outgoing limit (and one answer), whatever one wake reads, and each of
its calls is still answered, in order, once it reads; its end is logged by its reason."""

from __future__ import annotations

import logging
import select
import socket
import time
from pathlib import Path

import pytest
from test_classic_endpoint import DRIVER, Loop, Peer, _client_of, setup

from kdbusfs import limits
from kdbusfs.classic import client as classic_client
from kdbusfs.classic.closures import ClosureLog, Ending
from kdbusfs.classic.endpoint import ClassicEndpoint
from kdbusfs.dbus import DBusMessage, MessageType, wire

__all__ = ["setup"]

INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"


def test_a_flood_of_calls_is_dispatched_only_while_its_answers_have_room(
        setup: tuple[ClassicEndpoint, Loop, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, loop, path = setup
    # Smaller marks, so that the socket's own buffer holds a flood that reaches them.
    monkeypatch.setattr(limits, "CLASSIC_OUTGOING_MAX", 128 * 1024)
    monkeypatch.setattr(limits, "CLASSIC_OUTGOING_RESUME", 64 * 1024)
    peer = Peer(path, loop)
    peer.authenticate()
    list(peer.messages())
    client = _client_of(endpoint, peer)
    answer_size = len(wire.encode_dbus1(peer.call(DRIVER, "Introspect", interface=INTROSPECTABLE)))
    count = 400  # ~2 MiB of answers to ~50 KiB of calls
    calls = b"".join(wire.encode_dbus1(DBusMessage.method_call(
        DRIVER, "/org/freedesktop/DBus", INTROSPECTABLE, "Introspect", serial=serial))
        for serial in range(1000, 1000 + count))
    sent = peer.sock.send(calls)
    assert sent == len(calls), "the socket buffer takes the whole flood at once"
    loop.handlers[client.fd][0](select.EPOLLIN)  # one wake: READS_PER_WAKE x READ_SIZE could take it all
    assert client.outgoing_size <= limits.CLASSIC_OUTGOING_MAX + answer_size
    assert client.undispatched
    # Reading, it gets every answer, in order, though its socket has nothing more to say.
    answered: list[int] = []
    deadline = time.monotonic() + 30
    while len(answered) < count:
        assert time.monotonic() < deadline, f"{len(answered)} of {count} answered"
        answered += [m.reply_serial or 0 for m in peer.messages() if m.type == MessageType.METHOD_RETURN]
        assert client.outgoing_size <= limits.CLASSIC_OUTGOING_MAX + answer_size
    assert answered == list(range(1000, 1000 + count))
    assert not client.undispatched


def test_reading_stops_once_its_answers_fill_its_outgoing_buffer(
        setup: tuple[ClassicEndpoint, Loop, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, loop, path = setup
    monkeypatch.setattr(limits, "CLASSIC_OUTGOING_MAX", 64 * 1024)
    monkeypatch.setattr(classic_client, "READ_SIZE", 4096)
    peer = Peer(path, loop)
    peer.authenticate()
    list(peer.messages())
    client = _client_of(endpoint, peer)
    calls = b"".join(wire.encode_dbus1(DBusMessage.method_call(
        DRIVER, "/org/freedesktop/DBus", INTROSPECTABLE, "Introspect", serial=serial))
        for serial in range(1, 400))
    assert peer.sock.send(calls) == len(calls)
    loop.handlers[client.fd][0](select.EPOLLIN)
    # What it sent past the read that filled its buffer is still in its socket, not the daemon's.
    assert client.splitter.buffered < classic_client.READ_SIZE
    left = client.sock.recv(len(calls), socket.MSG_PEEK | socket.MSG_DONTWAIT)
    assert len(left) == len(calls) - classic_client.READ_SIZE  # one read: its answers filled the buffer


# -- how a client's end is logged ----------------------------------------------------------------

@pytest.mark.parametrize(("ending", "level"), [
    (Ending.HUNG_UP, logging.DEBUG),
    (Ending.SOCKET_FAILED, logging.DEBUG),
    (Ending.CONNECTION_GONE, logging.DEBUG),
    (Ending.TOO_MANY_FDS, logging.WARNING),
    (Ending.AUTH_FAILED, logging.INFO),
    (Ending.PROTOCOL_VIOLATION, logging.INFO),
    (Ending.HELLO_REFUSED, logging.INFO),
])
def test_an_end_is_logged_by_its_reason_not_its_wording(ending: Ending, level: int,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "kdbusfs.classic")
    # The same words for every reason: only the reason may decide.
    ClosureLog().ended("classic client :1.5 (pid 1, uid 1000)", 1000, ending, "read failed: reset")
    assert max(record.levelno for record in caplog.records) == level
    assert ending in _every_ending_used_by_client_py()


def _every_ending_used_by_client_py() -> set[Ending]:
    source = Path(classic_client.__file__).read_text()
    return {ending for ending in Ending if f"Ending.{ending.name}" in source}


def test_a_client_s_end_reaches_the_log_with_its_reason(setup: tuple[ClassicEndpoint, Loop, Path],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    _, loop, path = setup
    caplog.set_level(logging.DEBUG, "kdbusfs.classic")
    polite, rude = Peer(path, loop), Peer(path, loop)
    polite.authenticate()
    rude.authenticate()
    polite.sock.close()
    loop.turn()
    rude.raw(b"l\x01\x00\x01" + b"\xff" * 12)
    assert rude.closed()
    ends = {(record.levelno, record.getMessage().partition(": ")[2]) for record in caplog.records
            if "clos" in record.getMessage()}
    assert (logging.DEBUG, "closing: the client closed its connection") in ends
    assert any(level == logging.INFO and text.startswith("closed: protocol violation")
               for level, text in ends)
