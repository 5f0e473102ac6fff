"""Large classic messages: bodies in sealed memfds both ways, the bounds on what the endpoint
holds and decodes for one client, and a call's deadline (none, as dbus-daemon gives none)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_classic_endpoint import Loop, Peer, setup

from kdbusfs import limits
from kdbusfs.classic import fastwire
from kdbusfs.classic.caller import ClassicCaller
from kdbusfs.classic.client import ClassicClient
from kdbusfs.classic.commands import ClassicConnection
from kdbusfs.classic.endpoint import ClassicEndpoint
from kdbusfs.classic.translate import to_kdbus, unique_name
from kdbusfs.dbus import DBusMessage, MessageType, Variant

__all__ = ["setup"]

Setup = tuple[ClassicEndpoint, Loop, Path]
SINK = "org.example.Sink"


def _pair(loop: Loop, path: Path) -> tuple[Peer, Peer]:
    server, client = Peer(path, loop), Peer(path, loop)
    for peer in (server, client):
        peer.authenticate()
        list(peer.messages())
    return server, client


def _next(peer: Peer, loop: Loop, wanted: MessageType) -> DBusMessage:
    found: list[DBusMessage] = []

    def arrived() -> bool:
        found.extend(m for m in peer.messages() if m.type == wanted)
        return bool(found)

    loop.wait_until(arrived)
    return found[0]


def test_a_16_mib_body_goes_both_ways_between_classic_clients(setup: Setup) -> None:
    _, loop, path = setup
    server, client = _pair(loop, path)
    body = os.urandom(16 << 20)
    serial = client.next_serial()
    client.send(DBusMessage.method_call(server.name, "/sink", SINK, "Take", "ay", (body,), serial=serial))
    call = _next(server, loop, MessageType.METHOD_CALL)
    assert call.body == (body,) and call.sender == client.name
    server.send(DBusMessage.method_return(call, "ayu", (body[::-1], 7), serial=server.next_serial()))
    reply = _next(client, loop, MessageType.METHOD_RETURN)
    assert reply.reply_serial == serial and reply.body == (body[::-1], 7)


def test_large_arrays_of_numbers_strings_and_structs_survive_the_round_trip(setup: Setup) -> None:
    _, loop, path = setup
    server, client = _pair(loop, path)
    values = ([-(2**31), 0, 2**31 - 1] * 300_000, [2**64 - 1, 1] * 100_000, [0.5, -1e300] * 100_000,
              "ü" * (1 << 20), [(1, "x")] * 1000)
    client.send(DBusMessage.method_call(server.name, "/sink", SINK, "Take", "aiatads" + "a(ys)", values,
                                        serial=client.next_serial()))
    assert _next(server, loop, MessageType.METHOD_CALL).body == values


def test_a_body_in_a_memfd_alone_from_a_kdbus_sender_reaches_a_classic_client(setup: Setup) -> None:
    """A native sender may lay its payload out otherwise than the endpoint does: here the whole
    GVariant message is one memfd, with no vector around it."""
    endpoint, loop, path = setup
    receiver = Peer(path, loop)
    receiver.authenticate()
    list(receiver.messages())
    bus_endpoint = endpoint.bus_endpoint()
    assert bus_endpoint is not None
    caller = ClassicCaller(os.getpid(), os.getuid(), os.getgid(), endpoint.device, endpoint.served.close_fd)
    native = ClassicConnection(bus_endpoint, caller, caller.process().userns())
    native.hello(1 << 20, True, "native")
    body = os.urandom(3 << 20)
    signal = DBusMessage.signal("/x", SINK, "Data", "ay", (body,), serial=5,
                                destination=receiver.name).replace(sender=f":1.{native.id}")
    payload = fastwire.encode_gvariant(signal)
    # Outside a request, as the serving loop runs the endpoint: the receiver's wake reaches it.
    endpoint.served.outside_requests("a native send", lambda: native.send(
        int(receiver.name[3:]), [payload], flags=0, cookie=5, timeout_or_reply=0))
    got = _next(receiver, loop, MessageType.SIGNAL)
    assert got.body == (body,) and got.sender == f":1.{native.id}"
    # Its memfds are closed once read: the daemon holds nothing of the message any more.
    assert caller.files().memfd_bytes == 0
    native.close()


def test_a_small_message_is_one_vector_and_a_large_body_a_memfd_between_two(setup: Setup) -> None:
    """Native readers of a D-Bus payload may read the first vector alone (small messages); a large
    body is laid out as sd-bus laid it: header vector, body memfd, footer vector."""
    endpoint, loop, path = setup
    sender = Peer(path, loop)
    sender.authenticate()
    bus_endpoint = endpoint.bus_endpoint()
    assert bus_endpoint is not None
    caller = ClassicCaller(os.getpid(), os.getuid(), os.getgid(), endpoint.device, endpoint.served.close_fd)
    native = ClassicConnection(bus_endpoint, caller, caller.process().userns())
    native.hello(1 << 20, True, "native")
    large = bytes(limits.CLASSIC_MEMFD_MIN_SIZE)
    for body in (b"small", large):
        sender.send(DBusMessage.method_call(unique_name(native.id), "/x", SINK, "Take", "ay", (body,),
                                            serial=sender.next_serial(), flags=1))
    received = [native.recv(), native.recv()]
    assert received[0] is not None and received[1] is not None
    assert len(received[0].parts) == 1
    assert [len(part) for part in received[1].parts][1] == len(large) and len(received[1].parts) == 3
    assert fastwire.decode_gvariant(received[1].payload).body == (large,)
    native.close()


def _client_of(endpoint: ClassicEndpoint, peer: Peer) -> ClassicClient:
    return next(c for c in endpoint.clients.values()
                if c.conn is not None and unique_name(c.conn.id) == peer.name)


def test_a_kdbus_message_larger_than_a_classic_client_takes_is_not_delivered(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, loop, path = setup
    server, client = _pair(loop, path)
    sender = _client_of(endpoint, client)
    assert sender.conn is not None
    big = DBusMessage.method_call(server.name, "/sink", SINK, "Big", "ay", (bytes(2 << 20),), serial=1,
                                  flags=1)
    outbound = to_kdbus(big, sender.conn.id)
    monkeypatch.setattr(limits, "CLASSIC_MESSAGE_MAX", 1 << 20)
    # Sent past the client's own bound (as a native sender would), refused on the way out.
    endpoint.served.outside_requests("a send past the bound", lambda: sender.conn.send(
        outbound.destination, outbound.payload, flags=outbound.flags, cookie=1,
        timeout_or_reply=outbound.timeout_or_reply) if sender.conn is not None else None)
    client.send(DBusMessage.method_call(server.name, "/sink", SINK, "Small", serial=client.next_serial(),
                                        flags=1))
    assert _next(server, loop, MessageType.METHOD_CALL).member == "Small"
    assert sender.caller.files().memfd_bytes == 0  # its memfd was closed unread


def test_memfds_a_client_s_messages_hold_are_bounded_and_refused_with_limits_exceeded(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, loop, path = setup
    sleeper, sender = _pair(loop, path)
    chunk = bytes(limits.CLASSIC_MEMFD_MIN_SIZE)
    monkeypatch.setattr(limits, "CLASSIC_MEMFD_BYTES_MAX", 2 * len(chunk) + 4096)
    # The sleeper's client takes nothing off its connection: the memfds wait in its queue.
    _client_of(endpoint, sleeper).outgoing_size = limits.CLASSIC_OUTGOING_MAX
    serials = [sender.next_serial() for _ in range(3)]
    for serial in serials:
        sender.send(DBusMessage.method_call(sleeper.name, "/sink", SINK, "Take", "ay", (chunk,),
                                            serial=serial))
    refused = _next(sender, loop, MessageType.ERROR)
    assert refused.error_name == "org.freedesktop.DBus.Error.LimitsExceeded"
    assert refused.reply_serial == serials[2]
    files = _client_of(endpoint, sender).caller.files()
    assert files.memfd_bytes == 2 * len(chunk)
    # Once received, they are released and count no more.
    sleeper_client = _client_of(endpoint, sleeper)
    sleeper_client.outgoing_size = 0
    endpoint.served.outside_requests("the sleeper reads", sleeper_client.receive_queued)
    assert files.memfd_bytes == 0


def test_a_message_with_too_many_array_elements_closes_its_sender_but_numbers_do_not_count(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    _, loop, path = setup
    monkeypatch.setattr(limits, "CLASSIC_ARRAY_ELEMENTS_MAX", 1000)
    server, client = _pair(loop, path)
    client.send(DBusMessage.method_call(server.name, "/sink", SINK, "Take", "at", (list(range(100_000)),),
                                        serial=client.next_serial()))
    assert _next(server, loop, MessageType.METHOD_CALL).body == (list(range(100_000)),)
    client.send(DBusMessage.method_call(server.name, "/sink", SINK, "Take", "av", ([Variant("y", 1)] * 1001,),
                                        serial=client.next_serial()))
    assert client.closed()


def test_a_classic_call_has_no_deadline_on_the_bus(setup: Setup) -> None:
    """dbus-daemon times no call out: a call waiting on a slow service (polkit asking a user) gets
    its reply however late, and never a NoReply from the bus; the deadline kdbus needs is never
    reached, whatever the clock says."""
    endpoint, loop, path = setup
    server, client = _pair(loop, path)
    call = DBusMessage.method_call(server.name, "/slow", SINK, "Ask", serial=client.next_serial())
    assert to_kdbus(call, 1).timeout_or_reply == limits.CLASSIC_CALL_DEADLINE_NS
    client.send(call)
    received = _next(server, loop, MessageType.METHOD_CALL)
    a_century_ns = 100 * 365 * 24 * 3600 * 10**9
    for later in (121 * 10**9, 3600 * 10**9, a_century_ns):
        endpoint.served.tick(time.monotonic_ns() + later)
        loop.turn()
        assert not [m for m in client.messages() if m.type == MessageType.ERROR]
    server.send(DBusMessage.method_return(received, "b", (True,), serial=server.next_serial()))
    reply = _next(client, loop, MessageType.METHOD_RETURN)
    assert reply.reply_serial == call.serial and reply.body == (True,)
