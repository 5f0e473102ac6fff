"""Laying a message out in a receiver's pool (KDBUS-SPEC.md §5.10)."""

from __future__ import annotations

import errno
import mmap
import struct
from typing import Any

import pytest
from helpers import Conn, FakeCaller, cmd_bytes, connect, hello_cmd, hello_handle, make_bus, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    DST_ID_BROADCAST,
    HELLO_ACTIVATOR,
    MSG_SIGNAL,
    NAME_ALLOW_REPLACEMENT,
    NAME_QUEUE,
    NAME_REPLACE_EXISTING,
    Cmd,
    Item,
)
from kdbusfs.abi.items import item, string_item
from kdbusfs.bus import layout as slices
from kdbusfs.bus import message as msgs
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.pool import Pool
from kdbusfs.bus.send import broadcast

NULL_OFFSET = (1 << 64) - 1
SERVICE = "org.example.service"


def vec(address: int, size: int) -> bytes:
    return item(Item.PAYLOAD_VEC, struct.pack("<QQ", size, address))


def test_payload_stream_has_data_and_zeroed_padding_even_over_old_bytes() -> None:
    caller = FakeCaller()
    first = caller.place(b"abc", 0x800)
    second = caller.place(b"wxyz", 0x900)
    # 3 data bytes, a NULL vec of 5 (only its padding to 8 shows: 5 zero bytes), then 4 data bytes.
    items = vec(first, 3) + vec(0, 5) + vec(second, 4)
    data = structs.MSG.pack(structs.MSG.size + len(items), 0, 0, 7, 0, 0xBB, 1, 0) + items
    msg = msgs.stage_user(data, 0, 64)
    msg.read_into = caller.read_into
    pool = Pool(4096)
    pool.buffer[:] = b"\xff" * 4096  # an earlier message's bytes
    layout = slices.layout_size(msg, b"", 0)
    piece = pool.alloc(layout[2])
    slices.write(msg, pool, piece.offset, b"", layout)
    _, payload_start, size = layout
    stream = bytes(pool.buffer[piece.offset + payload_start : piece.offset + size])
    assert stream == b"abc" + b"\0" * 5 + b"wxyz" + b"\0" * 4
    offsets = [struct.unpack_from("<QQ", pool.buffer, piece.offset + structs.MSG.size + 32 * i + 16)
               for i in range(3)]
    assert offsets == [(3, payload_start), (5, NULL_OFFSET), (4, payload_start + 8)]


# -- pools are output only: no receiver's bytes reach another receiver (issue: pool integrity) ----

def _signal(caller: FakeCaller, payload: bytes) -> msgs.Staged:
    address = caller.place(payload, 0x800)
    items = vec(address, len(payload)) + item(Item.BLOOM_FILTER, bytes(8 + 64))
    data = structs.MSG.pack(structs.MSG.size + len(items), MSG_SIGNAL, 0, DST_ID_BROADCAST, 0, 0xBB,
                            1, 0) + items
    msg = msgs.stage_user(data, 0, 64)
    msg.read_into = caller.read_into
    return msg


def _payload(pool: Pool, offset: int, layout: tuple[int, int, int], size: int) -> bytes:
    start = offset + layout[1]
    return bytes(pool.buffer[start : start + size])


def test_later_receivers_get_the_senders_bytes_whatever_earlier_receivers_write() -> None:
    caller = FakeCaller()
    payload = bytes(range(200))
    msg = _signal(caller, payload)
    layout = slices.layout_size(msg, b"", 0)
    for i in range(4):
        pool = Pool(4096)
        slices.write(msg, pool, 0, b"", layout)
        assert _payload(pool, 0, layout, len(payload)) == payload, f"receiver {i}"
        # The receiver scribbles on its writable mapping of the pool at once.
        pool.buffer[:] = b"\xee" * 4096


def _scribbling_reader(caller: FakeCaller, victim: Pool) -> msgs.ReadInto:
    """Reads the sender's memory, then overwrites `victim` as its client could at any moment."""
    def read_into(address: int, size: int, buffer: object, offset: int) -> None:
        caller.read_into(address, size, buffer, offset)
        victim.buffer[:] = b"\xee" * victim.size
    return read_into


def _sender_and_subscribers(count: int) -> list[Conn]:
    """A new bus's first connection, then `count` more whose match takes every broadcast."""
    bus = make_bus(Domain()).bus
    assert bus is not None
    sender, *subscribers = [connect(bus) for _ in range(count + 1)]
    for conn in subscribers:
        run(conn.handle, conn.caller, Cmd.MATCH_ADD, cmd_bytes(structs.CMD_MATCH, cookie=1))
    return [sender, *subscribers]


def test_a_broadcast_reaches_later_receivers_intact_while_the_first_scribbles_on_its_pool() -> None:
    sender, *receivers = _sender_and_subscribers(3)
    payload = bytes(range(256)) * 4
    msg = _signal(sender.caller, payload)
    first = receivers[0].handle.conn
    assert first is not None and sender.handle.conn is not None
    msg.read_into = _scribbling_reader(sender.caller, first.pool)
    broadcast(sender.handle.conn, msg, None)
    for conn in receivers[1:]:
        assert conn.handle.conn is not None
        entry = conn.handle.conn.queue.peek()
        assert entry is not None
        layout = slices.layout_size(msg, b"", 0)
        assert _payload(conn.handle.conn.pool, entry.slice.offset, layout, len(payload)) == payload


def test_a_broadcast_to_several_receivers_reads_the_senders_payload_once() -> None:
    sender, *receivers = _sender_and_subscribers(3)
    first = sender.caller.place(b"abc", 0x800)
    second = sender.caller.place(b"wxyz" * 3, 0x900)
    # Data, a NULL vec (its padding only), data: each vec lands at its own place in every pool.
    items = vec(first, 3) + vec(0, 5) + vec(second, 12) + item(Item.BLOOM_FILTER, bytes(8 + 64))
    data = structs.MSG.pack(structs.MSG.size + len(items), MSG_SIGNAL, 0, DST_ID_BROADCAST, 0, 0xBB,
                            1, 0) + items
    msg = msgs.stage_user(data, 0, 64)
    reads: list[int] = []

    def counting(address: int, size: int, buffer: object, offset: int) -> None:
        reads.append(address)
        sender.caller.read_into(address, size, buffer, offset)

    msg.read_into = counting
    assert sender.handle.conn is not None
    broadcast(sender.handle.conn, msg, None)
    assert reads == [first, second]
    layout = slices.layout_size(msg, b"", 0)
    for conn in receivers:
        assert conn.handle.conn is not None
        entry = conn.handle.conn.queue.peek()
        assert entry is not None
        assert _payload(conn.handle.conn.pool, entry.slice.offset, layout, 24) == \
            b"abc" + bytes(5) + b"wxyz" * 3 + bytes(4)


def _mapped(bus: Bus, **hello: Any) -> Conn:
    """A connection whose pool is memory its client maps writable, as on a root mount."""
    handle, caller = hello_handle(bus)
    handle.pool_memory = lambda size: mmap.mmap(-1, size)
    out = run(handle, caller, Cmd.HELLO, hello_cmd(**hello))
    return Conn(handle, caller, structs.CMD_HELLO.unpack(out))


def _name_cmd(conn: Conn, cmd: int, flags: int = 0) -> None:
    run(conn.handle, conn.caller, cmd, cmd_bytes(structs.CMD, string_item(Item.NAME, SERVICE), flags=flags))


PAYLOAD = b"genuine payload!" * 64


def _send_to_service(sender: Conn, cookie: int) -> None:
    address = sender.caller.place(PAYLOAD, 0x800)
    items = vec(address, len(PAYLOAD)) + string_item(Item.DST_NAME, SERVICE)
    data = structs.MSG.pack(structs.MSG.size + len(items), 0, 0, 0, 0, 0xBB, cookie, 0) + items
    send = structs.CMD_SEND.pack(structs.CMD_SEND.size, 0, 0, sender.caller.place(data, 0x100), 0, 0, 0)
    run(sender.handle, sender.caller, Cmd.SEND, send, 0x2000)


def _scribble(conn: Conn) -> None:
    assert conn.handle.conn is not None
    pool = conn.handle.conn.pool
    pool.buffer[:] = b"\xee" * pool.size


def _received_intact(conn: Conn, cookie: int) -> bool:
    c = conn.handle.conn
    assert c is not None
    entry = c.queue.peek()
    assert entry is not None and entry.cookie == cookie, entry
    return PAYLOAD in bytes(c.pool.buffer[entry.slice.offset : entry.slice.offset + entry.slice.size])


def _activator(bus: Bus) -> Conn:
    return _mapped(bus, flags=HELLO_ACTIVATOR, items=string_item(Item.NAME, SERVICE))


def test_calls_handed_from_a_scribbling_activator_to_the_service_are_what_was_sent() -> None:
    bus = make_bus(Domain()).bus
    assert bus is not None
    activator, sender, service = _activator(bus), _mapped(bus), _mapped(bus)
    _send_to_service(sender, 7)
    _scribble(activator)
    _name_cmd(service, Cmd.NAME_ACQUIRE)
    assert _received_intact(service, 7)


def test_an_owner_cannot_forge_what_moves_to_an_activator_registered_later() -> None:
    bus = make_bus(Domain()).bus
    assert bus is not None
    owner, sender = _mapped(bus), _mapped(bus)
    _name_cmd(owner, Cmd.NAME_ACQUIRE)
    _send_to_service(sender, 7)
    _scribble(owner)  # before any activator exists
    _activator(bus)
    _name_cmd(owner, Cmd.NAME_RELEASE)  # the queued call moves to the activator
    service = _mapped(bus)
    _name_cmd(service, Cmd.NAME_ACQUIRE)  # and on to the service
    assert _received_intact(service, 7)


@pytest.mark.parametrize("first_flags", [NAME_QUEUE | NAME_ALLOW_REPLACEMENT, NAME_ALLOW_REPLACEMENT],
                         ids=["queued-after-replacement", "dropped-then-reacquired"])
def test_calls_queued_on_a_former_owner_move_intact_when_it_gives_the_name_back(first_flags: int) -> None:
    bus = make_bus(Domain()).bus
    assert bus is not None
    first, second, sender = _mapped(bus), _mapped(bus), _mapped(bus)
    _name_cmd(first, Cmd.NAME_ACQUIRE, first_flags)
    _send_to_service(sender, 7)
    _name_cmd(second, Cmd.NAME_ACQUIRE, NAME_REPLACE_EXISTING)
    activator = _activator(bus)
    _name_cmd(second, Cmd.NAME_RELEASE)
    if not first_flags & NAME_QUEUE:
        _name_cmd(first, Cmd.NAME_ACQUIRE)  # from the activator, which now holds the name
    _scribble(first)
    _name_cmd(first, Cmd.NAME_RELEASE)  # kdbus moves every call it queued through the name
    assert _received_intact(activator, 7)
    assert bus.names.lookup(SERVICE) is not None
    assert first.handle.conn is not None and bus.names.owned_names(first.handle.conn) == []


def test_the_sender_is_read_once_for_the_first_receiver_and_once_for_all_others() -> None:
    caller = FakeCaller()
    reads: list[int] = []
    msg = _signal(caller, b"x" * 64)

    def counting(address: int, size: int, buffer: object, offset: int) -> None:
        reads.append(size)
        caller.read_into(address, size, buffer, offset)

    msg.read_into = counting
    layout = slices.layout_size(msg, b"", 0)
    for _ in range(5):
        slices.write(msg, Pool(4096), 0, b"", layout)
    assert reads == [64, 64]


def test_payload_vectors_past_the_limit_are_emsgsize_even_where_their_sum_wraps_64_bits() -> None:
    items = vec(0x1000, 8) + vec(0x2000, (1 << 64) - 8)
    data = structs.MSG.pack(structs.MSG.size + len(items), 0, 0, 7, 0, 0xBB, 1, 0) + items
    with raises_errno(errno.EMSGSIZE):
        msgs.stage_user(data, 0, 64)
