"""Laying a staged message out in one receiver's slice.

What a receiver finds in its slice (KDBUS-SPEC.md §5.10):

    kdbus_msg header (64)       size = header + items (+ metadata), src_id = sender
    the sender's items          PAYLOAD_VEC rewritten to PAYLOAD_OFF {size, offset from slice start}
    zero padding to 8
    metadata items              chosen per receiver, so payload offsets differ per receiver
    zero padding to 8
    payload stream              data vecs back to back; size % 8 zeros per NULL vec and per memfd
    zero padding to 8

The first receiver's payload is read from the sender's memory straight into its pool; later ones
get theirs from a private copy (message.py says why never from a pool).
"""

from __future__ import annotations

import struct

from ..abi import structs
from ..abi.structs import U64, align8
from .message import NULL_VEC_OFFSET, Buffer, Staged
from .pool import Pool

_HEADER = structs.MSG.struct
_MSG_SIZE = structs.MSG.size
_NO_FD = struct.Struct("<i")
_ZEROS = bytes(8)


def layout_size(msg: Staged, meta: bytes, meta_pad: int) -> tuple[int, int, int]:
    """(kdbus_msg.size, payload start, slice size) for a receiver getting `meta`."""
    msg_size = msg.msg_size
    if meta:
        msg_size = align8(msg_size) + len(meta) - meta_pad
    payload_start = align8(msg_size)
    size = payload_start
    if msg.n_payload:
        size = align8(size + msg.n_payload)
    return msg_size, payload_start, size


def last_item_padding(items: bytes) -> int:
    """Padding bytes after the last of a run of padded items (kdbus sizes end unpadded)."""
    if not items:
        return 0
    pos = 0
    while True:
        size = int.from_bytes(items[pos : pos + 8], "little")
        nxt = pos + align8(size)
        if nxt >= len(items):
            return nxt - (pos + size)
        pos = nxt


def layout_for(msg: Staged, meta: bytes) -> tuple[int, int, int]:
    """layout_size() for a receiver getting the metadata items `meta` (each padded to 8)."""
    return layout_size(msg, meta, last_item_padding(meta) if meta else 0)


def write(msg: Staged, pool: Pool, offset: int, meta: bytes,
          layout: tuple[int, int, int]) -> None:
    """Lay the message out in `pool` at `offset` (the slice is allocated and large enough);
    `layout` is what layout_size() says for this receiver."""
    render(msg, pool.buffer, offset, meta, layout)
    pool.touched(offset, offset + layout[2])


def render(msg: Staged, buf: Buffer, offset: int, meta: bytes, layout: tuple[int, int, int]) -> None:
    """write() into any buffer: a pool, or daemon-private bytes a message is kept in."""
    msg_size, payload_start, size = layout
    items = msg.items
    _HEADER.pack_into(buf, offset, msg_size, msg.flags, msg.priority, msg.dst_id, msg.src_id,
                      msg.payload_type, msg.cookie, msg.timeout_or_reply)
    items_at = offset + _MSG_SIZE
    end_items = items_at + len(items)
    buf[items_at:end_items] = items
    # Receiver-specific values go straight into the pool: payload offsets, fds it cannot get.
    for pos, stream in msg.offsets:
        U64.pack_into(buf, items_at + pos, NULL_VEC_OFFSET if stream is None else payload_start + stream)
    for pos in msg.fd_slots:
        _NO_FD.pack_into(buf, items_at + pos, -1)
    meta_at = (end_items + 7) & ~7
    if meta_at != end_items:
        buf[end_items:meta_at] = _ZEROS[: meta_at - end_items]
    if meta:
        buf[meta_at : meta_at + len(meta)] = meta
    payload_at = offset + payload_start
    if msg.n_payload:
        # Only what no data vec covers is zeroed (NULL vecs' and memfds' padding, the tail): a
        # slice may hold an earlier message's bytes, and big payloads should be written once.
        zero_from = payload_at
        for stream, _address, length in msg.vecs:
            start = payload_at + stream
            if start > zero_from:
                buf[zero_from:start] = bytes(start - zero_from)
            zero_from = start + length
        if offset + size > zero_from:
            buf[zero_from : offset + size] = bytes(offset + size - zero_from)
        if msg.vecs:
            _copy_payload(msg, buf, payload_at)


def _copy_payload(msg: Staged, buf: Buffer, payload_at: int) -> None:
    """The data vecs into `buf`: the first receiver's straight from the sender, later ones from a
    private copy (never from an earlier receiver's pool, which that receiver can write to)."""
    copy = msg.payload_copy
    if copy is None:
        read_into = msg.read_into
        if read_into is None:
            raise AssertionError("a message with data vecs and no sender memory")
        if not msg.payload_read:
            msg.payload_read = True
            for stream, address, length in msg.vecs:
                read_into(address, length, buf, payload_at + stream)
            return
        private = bytearray(msg.n_payload)
        for stream, address, length in msg.vecs:
            read_into(address, length, private, stream)
        copy = msg.payload_copy = memoryview(private)
    for stream, _address, length in msg.vecs:
        buf[payload_at + stream : payload_at + stream + length] = copy[stream : stream + length]
