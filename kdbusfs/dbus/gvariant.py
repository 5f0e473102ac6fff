"""GVariant serialisation of D-Bus values, as sd-bus marshalled messages on kdbus.

The rules (GVariant specification; GLib's gvariant-serialiser.c is its reference implementation):
every value is aligned, relative to its container's start, to its type's alignment; fixed-size
values take exactly their size, and fixed-size structs are padded to their alignment. Variable-size
values carry no length: containers end with a table of framing offsets instead. An array of
variable-size elements ends with the end offset of every element, in order; a struct ends with the
end offset of each variable-size member except the last, in reverse order. The offsets all have the
smallest size (1, 2, 4 or 8 bytes) that can address the whole container, table included. A string
ends with NUL; a variant is its value, a NUL, then the value's type string. Writing produces normal
form; reading accepts normal form only (anything else raises DecodeError). Framing offsets are
little-endian in either byte order (GLib byte-swaps values, never offsets).

    >>> from kdbusfs.dbus.signature import parse_type
    >>> encode(parse_type("as"), ["a", "bc"])
    b'a\\x00bc\\x00\\x02\\x05'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .basic import (
    BULK_CODES,
    array_items,
    array_value,
    boolean,
    byte_array,
    check_depth,
    pack_number,
    pack_numbers,
    struct_members,
    text_bytes,
    text_value,
    unpack_number,
    unpack_numbers,
    variant,
)
from .errors import DecodeError, EncodeError, TooManyElements
from .names import Variant
from .signature import DBusType, SignatureError, parse_type, struct_type


def _pad(buffer: bytearray, alignment: int) -> None:
    buffer.extend(bytes(-len(buffer) % alignment))


def offset_size(container_size: int) -> int:
    """The size of each framing offset in a container of `container_size` bytes (table
    included)."""
    if container_size == 0:
        return 0
    for size in (1, 2, 4):
        if container_size < 1 << (8 * size):
            return size
    return 8


def _table_offset_size(body_size: int, count: int) -> int:
    """The smallest offset size for `count` offsets after `body_size` bytes: the table counts in
    the size it must address."""
    for size in (1, 2, 4):
        if body_size + count * size < 1 << (8 * size):
            return size
    return 8


def _append_offsets(buffer: bytearray, offsets: Sequence[int]) -> None:
    if offsets:
        size = _table_offset_size(len(buffer), len(offsets))
        for offset in offsets:
            buffer.extend(offset.to_bytes(size, "little"))


class _Encoder:
    def __init__(self, order: str) -> None:
        self.order = order

    def value(self, kind: DBusType, value: Any, depth: int) -> bytes:
        code = kind.code
        if code == "b":
            return b"\1" if boolean(value) else b"\0"
        if kind.fixed_size is not None and kind.is_basic:
            return pack_number(self.order, code, value)
        if kind.is_string_like:
            return text_bytes(code, value) + b"\0"
        check_depth(depth + 1, EncodeError)
        if code == "v":
            held = variant(value)
            return self.value(parse_type(held.signature), held.value, depth + 1) + b"\0" + \
                held.signature.encode("ascii")
        if code == "a":
            return self.array(kind, array_items(kind, value), depth + 1)
        return self.struct(kind.children, struct_members(kind, value), depth + 1)

    def array(self, kind: DBusType, items: Sequence[Any], depth: int) -> bytes:
        element = kind.element
        raw = byte_array(items)
        if raw is None and element.code in BULK_CODES:
            raw = pack_numbers(self.order, element.code, items)
        if raw is not None:
            return raw
        if element.fixed_size is not None:
            return b"".join(self.value(element, item, depth) for item in items)
        buffer = bytearray()
        ends = []
        for item in items:
            _pad(buffer, element.alignment)
            buffer += self.value(element, item, depth)
            ends.append(len(buffer))
        _append_offsets(buffer, ends)
        return bytes(buffer)

    def struct(self, members: Sequence[DBusType], values: Sequence[Any], depth: int) -> bytes:
        if not members:
            return b"\0"  # the unit type
        buffer = bytearray()
        ends = []
        for index, (member, value) in enumerate(zip(members, values, strict=True)):
            _pad(buffer, member.alignment)
            buffer += self.value(member, value, depth)
            if member.fixed_size is None and index < len(members) - 1:
                ends.append(len(buffer))
        if all(member.fixed_size is not None for member in members):
            _pad(buffer, max(member.alignment for member in members))
        _append_offsets(buffer, ends[::-1])
        return bytes(buffer)


class _Decoder:
    """`max_elements` bounds the array elements decoded one at a time (see dbus1.Reader)."""

    def __init__(self, order: str, max_elements: int | None = None) -> None:
        self.order = order
        self.max_elements = max_elements
        self.elements_left = max_elements

    def _count(self, elements: int) -> None:
        if self.elements_left is not None:
            self.elements_left -= elements
            if self.elements_left < 0:
                raise TooManyElements(self.max_elements or 0)

    def value(self, kind: DBusType, data: memoryview, depth: int) -> Any:
        code = kind.code
        if kind.fixed_size is not None and len(data) != kind.fixed_size:
            raise DecodeError(f"'{kind.signature}' takes {kind.fixed_size} bytes, not {len(data)}")
        if code == "b":
            if data[0] > 1:
                raise DecodeError(f"boolean byte {data[0]}")
            return data[0] == 1
        if kind.is_basic and kind.fixed_size is not None:
            return unpack_number(self.order, code, data)
        if kind.is_string_like:
            if not data or data[-1] != 0:
                raise DecodeError(f"'{code}' value without its NUL")
            return text_value(code, bytes(data[:-1]))
        check_depth(depth + 1, DecodeError)
        if code == "v":
            return self.variant(data, depth + 1)
        if code == "a":
            if kind.element.code == "y":
                return bytes(data)
            return array_value(kind, self.array(kind.element, data, depth + 1))
        return tuple(self.struct(kind, data, depth + 1))

    def variant(self, data: memoryview, depth: int) -> Variant:
        raw = bytes(data)
        separator = raw.rfind(b"\0")
        if separator < 0:
            raise DecodeError("variant without a type string")
        try:
            signature = raw[separator + 1 :].decode("ascii")
            held = parse_type(signature)
        except (UnicodeDecodeError, SignatureError) as exc:
            raise DecodeError(f"variant type: {exc}") from None
        return Variant(signature, self.value(held, data[:separator], depth))

    def _offsets(self, data: memoryview, size: int, count: int, table_end: int) -> list[int]:
        start = table_end - count * size
        return [int.from_bytes(data[start + i * size : start + (i + 1) * size], "little")
                for i in range(count)]

    def array(self, element: DBusType, data: memoryview, depth: int) -> list[Any]:
        if element.fixed_size is not None:
            size = element.fixed_size
            if len(data) % size:
                raise DecodeError(f"array of '{element.signature}' of {len(data)} bytes")
            if element.code in BULK_CODES:
                return unpack_numbers(self.order, element.code, data)
            self._count(len(data) // size)
            return [self.value(element, data[i : i + size], depth) for i in range(0, len(data), size)]
        if not data:
            return []
        size = offset_size(len(data))
        table_start = int.from_bytes(data[len(data) - size :], "little")
        table_size = len(data) - table_start
        if table_start > len(data) or table_size % size or table_size == 0:
            raise DecodeError("array framing offsets out of bounds")
        self._count(table_size // size)
        ends = self._offsets(data, size, table_size // size, len(data))
        items = []
        position = 0
        for end in ends:
            start = position + -position % element.alignment
            if not start <= end <= table_start:
                raise DecodeError("array element out of bounds")
            items.append(self.value(element, data[start:end], depth))
            position = end
        return items

    def struct(self, kind: DBusType, data: memoryview, depth: int) -> list[Any]:
        members = kind.children
        if not members:
            if bytes(data) != b"\0":
                raise DecodeError("the unit type is one NUL byte")
            return []
        variable = sum(1 for member in members[:-1] if member.fixed_size is None)
        size = offset_size(len(data)) if variable else 0
        table_start = len(data) - variable * size
        if table_start < 0:
            raise DecodeError("struct framing offsets out of bounds")
        ends = self._offsets(data, size, variable, len(data))[::-1]
        values = []
        position = 0
        for index, member in enumerate(members):
            start = position + -position % member.alignment
            if member.fixed_size is not None:
                end = start + member.fixed_size
            elif index == len(members) - 1:
                end = table_start
            else:
                end = ends.pop(0)
            if not start <= end <= table_start:
                raise DecodeError(f"member {index} of '{kind.signature}' out of bounds")
            values.append(self.value(member, data[start:end], depth))
            position = end
        # Normal form: nothing after the last member but a fixed-size struct's padding.
        if kind.fixed_size is not None:
            position += -position % kind.alignment
        if position != table_start:
            raise DecodeError(f"'{kind.signature}' of {len(data)} bytes has trailing bytes")
        return values


def _order(big_endian: bool) -> str:
    return ">" if big_endian else "<"


def encode(kind: DBusType, value: Any, *, big_endian: bool = False) -> bytes:
    """The serialisation of `value` as a `kind` (sd-bus on kdbus wrote little-endian only)."""
    return _Encoder(_order(big_endian)).value(kind, value, 0)


def decode(kind: DBusType, data: bytes | memoryview, *, big_endian: bool = False) -> Any:
    """The `kind` value serialised in all of `data`."""
    return _Decoder(_order(big_endian)).value(kind, memoryview(data), 0)


def encode_body(members: Sequence[DBusType], values: Sequence[Any], *, big_endian: bool = False) -> bytes:
    """A message body: the struct of its values (the unit type when empty). The struct itself is
    framing, so it does not count against the nesting limit."""
    if len(values) != len(members):
        raise EncodeError(f"{len(members)} values wanted, {len(values)} given")
    return _Encoder(_order(big_endian)).struct(members, values, -1)


def decode_body(members: Sequence[DBusType], data: bytes | memoryview, *,
                big_endian: bool = False, max_elements: int | None = None) -> tuple[Any, ...]:
    """A message body's values (TooManyElements past `max_elements`, as dbus1.decode_values)."""
    kind = struct_type(tuple(members))
    return tuple(_Decoder(_order(big_endian), max_elements).struct(kind, memoryview(data), -1))
