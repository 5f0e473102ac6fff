"""Laying a message out in a receiver's pool (KDBUS-SPEC.md §5.10)."""

from __future__ import annotations

import struct

from helpers import FakeCaller, cmd_bytes, connect, make_bus, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import DST_ID_BROADCAST, HELLO_ACTIVATOR, MSG_SIGNAL, Cmd, Item
from kdbusfs.abi.items import item, string_item
from kdbusfs.bus import message as msgs
from kdbusfs.bus.connection import unicast
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.pool import Pool

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
    layout = msgs.layout_size(msg, b"", 0)
    piece = pool.alloc(layout[2])
    msgs.write(msg, pool, piece.offset, b"", layout)
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
    layout = msgs.layout_size(msg, b"", 0)
    for i in range(4):
        pool = Pool(4096)
        msgs.write(msg, pool, 0, b"", layout)
        assert _payload(pool, 0, layout, len(payload)) == payload, f"receiver {i}"
        # The receiver scribbles on its writable mapping of the pool at once.
        pool.buffer[:] = b"\xee" * 4096


def _scribbling_reader(caller: FakeCaller, victim: Pool) -> msgs.ReadInto:
    """Reads the sender's memory, then overwrites `victim` as its client could at any moment."""
    def read_into(address: int, size: int, buffer: object, offset: int) -> None:
        caller.read_into(address, size, buffer, offset)
        victim.buffer[:] = b"\xee" * victim.size
    return read_into


def test_a_broadcast_reaches_later_receivers_intact_while_the_first_scribbles_on_its_pool() -> None:
    domain = Domain()
    bus = make_bus(domain).bus
    assert bus is not None
    sender, *receivers = [connect(bus) for _ in range(4)]
    for conn in receivers:
        run(conn.handle, conn.caller, Cmd.MATCH_ADD, cmd_bytes(structs.CMD_MATCH, cookie=1))
    payload = bytes(range(256)) * 4
    msg = _signal(sender.caller, payload)
    first = receivers[0].handle.conn
    assert first is not None and sender.handle.conn is not None
    msg.read_into = _scribbling_reader(sender.caller, first.pool)
    bus.broadcast(sender.handle.conn, msg, None)
    for conn in receivers[1:]:
        assert conn.handle.conn is not None
        entry = conn.handle.conn.queue.peek()
        assert entry is not None
        layout = msgs.layout_size(msg, b"", 0)
        assert _payload(conn.handle.conn.pool, entry.slice.offset, layout, len(payload)) == payload


def test_a_message_handed_from_an_activator_to_the_implementer_is_what_the_sender_sent() -> None:
    domain = Domain()
    bus = make_bus(domain).bus
    assert bus is not None
    activator = connect(bus, flags=HELLO_ACTIVATOR, items=string_item(Item.NAME, SERVICE))
    sender = connect(bus)
    payload = bytes(range(256)) * 4
    address = sender.caller.place(payload, 0x800)
    items = vec(address, len(payload)) + string_item(Item.DST_NAME, SERVICE)
    data = structs.MSG.pack(structs.MSG.size + len(items), 0, 0, 0, 0, 0xBB, 7, 0) + items
    msg = msgs.stage_user(data, 0, 64)
    msg.read_into = sender.caller.read_into
    msg.src_id = sender.id
    assert sender.handle.conn is not None and activator.handle.conn is not None
    unicast(sender.handle.conn, msg, None, None)
    # The activator scribbles over everything it was given, then the service starts and takes the name.
    activator.handle.conn.pool.buffer[:] = b"\xee" * activator.handle.conn.pool.size
    implementer = connect(bus)
    run(implementer.handle, implementer.caller, Cmd.NAME_ACQUIRE,
        cmd_bytes(structs.CMD, string_item(Item.NAME, SERVICE)))
    assert implementer.handle.conn is not None
    entry = implementer.handle.conn.queue.peek()
    assert entry is not None and entry.cookie == 7
    layout = msgs.layout_size(msg, b"", 0)
    assert _payload(implementer.handle.conn.pool, entry.slice.offset, layout, len(payload)) == payload


def test_the_sender_is_read_once_for_the_first_receiver_and_once_for_all_others() -> None:
    caller = FakeCaller()
    reads: list[int] = []
    msg = _signal(caller, b"x" * 64)

    def counting(address: int, size: int, buffer: object, offset: int) -> None:
        reads.append(size)
        caller.read_into(address, size, buffer, offset)

    msg.read_into = counting
    layout = msgs.layout_size(msg, b"", 0)
    for _ in range(5):
        msgs.write(msg, Pool(4096), 0, b"", layout)
    assert reads == [64, 64]
