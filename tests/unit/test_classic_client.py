"""One classic client's reading: a client flooding the driver with calls whose answers are large
gets no more buffered for it than its outgoing limit (and one answer), whatever one wake reads,
and each of its calls is still answered, in order, once it reads."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest
from test_classic_endpoint import DRIVER, Loop, Peer, _client_of, setup

from kdbusfs import limits
from kdbusfs.classic import client as classic_client
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
