"""Laying a message out in a receiver's pool (KDBUS-SPEC.md §5.10)."""

from __future__ import annotations

import struct

from helpers import FakeCaller

from kdbusfs.abi import structs
from kdbusfs.abi.constants import Item
from kdbusfs.abi.items import item
from kdbusfs.bus import message as msgs
from kdbusfs.bus.pool import Pool

NULL_OFFSET = (1 << 64) - 1


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
