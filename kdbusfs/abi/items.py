"""The kdbus item stream: building items, and reading the ones the bus wrote.

Items follow a struct's fixed part: {u64 size, u64 type, payload}, each starting 8-aligned. Walking
and validating the items a caller hands in, by the rules every command shares, is compiled with
the command frame: abi/walk.pyx.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .structs import ITEM_HEADER_SIZE, U64, align8

_HEADER = ITEM_HEADER_SIZE
_pack_header = __import__("struct").Struct("<QQ").pack
_unpack_header = __import__("struct").Struct("<QQ").unpack_from


def read_items(data: bytes, start: int, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """The items of data[start:end] as (type, payload), for what the bus wrote (a pool slice).

    No per-type rules: a reader takes the types it knows and skips the others. An item that does
    not fit in the area raises ValueError, since the bus never writes one.
    """
    end = len(data) if end is None else end
    pos = start
    while pos + _HEADER <= end:
        size, item_type = _unpack_header(data, pos)
        if size < _HEADER or pos + size > end:
            raise ValueError(f"item at offset {pos} has bad size {size}")
        yield item_type, bytes(data[pos + _HEADER : pos + size])
        pos += align8(size)


def item(item_type: int, payload: bytes) -> bytes:
    """One item with its size field unpadded and its bytes padded to 8, as kdbus writes them."""
    size = _HEADER + len(payload)
    header: bytes = _pack_header(size, item_type)
    return header + payload + b"\0" * (align8(size) - size)


def string_item(item_type: int, text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return item(item_type, raw + b"\0")


def u64_item(item_type: int, value: int) -> bytes:
    return item(item_type, U64.pack(value))


def join_items(items: Iterable[bytes]) -> bytes:
    return b"".join(items)
