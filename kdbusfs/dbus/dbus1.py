"""The classic D-Bus marshalling ("dbus1", D-Bus specification, Marshaling) of values.

Every value is aligned to its type's dbus1 alignment, counted from the start of the message (a body
starts 8-aligned, so counting from the body's start is the same). Booleans are 32-bit 0 or 1,
strings and object paths a 32-bit length, the bytes and a NUL, signatures an 8-bit length, the
bytes and a NUL. An array is its 32-bit length in bytes (at most 64 MiB), padding to the element
alignment (present even when the array is empty; not counted in the length), then the elements.
Structs and dict entries start 8-aligned; a variant is a signature then the value. Padding must be
zero bytes.

    >>> from kdbusfs.dbus.signature import parse_signature
    >>> encode_values(parse_signature("su"), ("hi", 7)).hex()
    '020000006869000007000000'
"""

from __future__ import annotations

import struct
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
from .signature import DBusType, SignatureError, parse_type

MAX_ARRAY_LENGTH = 64 * 1024 * 1024


class Writer:
    """Appends marshalled values to a buffer that starts at an 8-aligned position."""

    def __init__(self, big_endian: bool = False) -> None:
        self.order = ">" if big_endian else "<"
        self.buffer = bytearray()

    def pad(self, alignment: int) -> None:
        self.buffer.extend(bytes(-len(self.buffer) % alignment))

    def u32(self, value: int) -> None:
        self.pad(4)
        self.buffer += struct.pack(self.order + "I", value)

    def write(self, kind: DBusType, value: Any, depth: int = 0) -> None:
        code = kind.code
        self.pad(kind.dbus1_alignment)
        if code == "b":
            self.buffer += struct.pack(self.order + "I", boolean(value))
        elif kind.is_basic and kind.fixed_size is not None:
            self.buffer += pack_number(self.order, code, value)
        elif code == "g":
            raw = text_bytes(code, value)
            self.buffer += bytes((len(raw),)) + raw + b"\0"
        elif kind.is_string_like:
            raw = text_bytes(code, value)
            self.u32(len(raw))
            self.buffer += raw + b"\0"
        elif code == "v":
            check_depth(depth + 1, EncodeError)
            held = variant(value)
            # The type string is a valid signature (parse_type says so, from its cache), so ASCII:
            # written here rather than as a 'g' value, which would check it once more.
            held_type = parse_type(held.signature)
            raw = held.signature.encode("ascii")
            self.buffer += bytes((len(raw),)) + raw + b"\0"
            self.write(held_type, held.value, depth + 1)
        elif code == "a":
            check_depth(depth + 1, EncodeError)
            self.array(kind, array_items(kind, value), depth + 1)
        else:
            check_depth(depth + 1, EncodeError)
            for member, item in zip(kind.children, struct_members(kind, value), strict=True):
                self.write(member, item, depth + 1)

    def array(self, kind: DBusType, items: Sequence[Any], depth: int) -> None:
        element = kind.element
        if element.is_basic and element.fixed_size is not None:
            # Numbers take their dbus1 alignment in bytes: refuse an oversized array before marshalling it.
            if len(items) * element.dbus1_alignment > MAX_ARRAY_LENGTH:
                raise EncodeError(f"array of {len(items) * element.dbus1_alignment} bytes; "
                                  f"D-Bus allows {MAX_ARRAY_LENGTH}")
        self.u32(0)
        length_at = len(self.buffer) - 4
        self.pad(kind.element.dbus1_alignment)
        start = len(self.buffer)
        raw = byte_array(items)
        if raw is None and element.code in BULK_CODES:
            raw = pack_numbers(self.order, element.code, items)
        if raw is not None:
            self.buffer += raw
        for item in () if raw is not None else items:
            self.write(kind.element, item, depth)
        length = len(self.buffer) - start
        if length > MAX_ARRAY_LENGTH:
            raise EncodeError(f"array of {length} bytes; D-Bus allows {MAX_ARRAY_LENGTH}")
        self.buffer[length_at : length_at + 4] = struct.pack(self.order + "I", length)


class Reader:
    """Reads marshalled values from `data`, whose first byte is 8-aligned.

    `max_elements` bounds the array elements read one at a time (a value each: the costly part of
    decoding); arrays of bytes and of numbers are read at once and do not count."""

    def __init__(self, data: bytes | memoryview, big_endian: bool = False, position: int = 0,
                 max_elements: int | None = None) -> None:
        self.data = memoryview(data)
        self.order = ">" if big_endian else "<"
        self.position = position
        self.max_elements = max_elements
        self.elements_left = max_elements

    def align(self, alignment: int) -> None:
        end = self.position + -self.position % alignment
        if end > len(self.data):
            raise DecodeError("data ends inside padding")
        if any(self.data[self.position : end]):
            raise DecodeError(f"non-zero padding at {self.position}")
        self.position = end

    def take(self, size: int) -> memoryview:
        if self.position + size > len(self.data):
            raise DecodeError(f"data ends at {len(self.data)}, wanted {size} bytes at {self.position}")
        piece = self.data[self.position : self.position + size]
        self.position += size
        return piece

    def u32(self) -> int:
        self.align(4)
        return int(struct.unpack(self.order + "I", self.take(4))[0])

    def read(self, kind: DBusType, depth: int = 0) -> Any:
        code = kind.code
        if kind.dbus1_alignment != 1:
            self.align(kind.dbus1_alignment)
        if code == "b":
            value = self.u32()
            if value > 1:
                raise DecodeError(f"boolean {value}")
            return value == 1
        if kind.is_basic and kind.fixed_size is not None:
            return unpack_number(self.order, code, self.take(kind.fixed_size))
        if kind.is_string_like:
            size = self.take(1)[0] if code == "g" else self.u32()
            raw = bytes(self.take(size + 1))
            if raw[-1] != 0:
                raise DecodeError(f"'{code}' value without its NUL")
            return text_value(code, raw[:-1])
        check_depth(depth + 1, DecodeError)
        if code == "v":
            # The type string read directly (not as a 'g' value): parse_type checks it, cached.
            raw = bytes(self.take(self.take(1)[0] + 1))
            if raw[-1] != 0:
                raise DecodeError("'g' value without its NUL")
            try:
                signature = raw[:-1].decode("ascii")
                held = parse_type(signature)
            except (UnicodeDecodeError, SignatureError) as exc:
                raise DecodeError(f"variant type: {exc}") from None
            return Variant(signature, self.read(held, depth + 1))
        if code == "a":
            items = self.array(kind.element, depth + 1)
            return items if isinstance(items, bytes) else array_value(kind, items)
        return tuple(self.read(member, depth + 1) for member in kind.children)

    def array(self, element: DBusType, depth: int) -> list[Any] | bytes:
        length = self.u32()
        if length > MAX_ARRAY_LENGTH:
            raise DecodeError(f"array of {length} bytes; D-Bus allows {MAX_ARRAY_LENGTH}")
        self.align(element.dbus1_alignment)
        end = self.position + length
        if end > len(self.data):
            raise DecodeError("array runs past the data")
        if element.code == "y":
            return bytes(self.take(length))
        if element.code in BULK_CODES:
            if length % element.dbus1_alignment:
                raise DecodeError("array element runs past the array's length")
            return unpack_numbers(self.order, element.code, self.take(length))
        items = []
        while self.position < end:
            if self.elements_left is not None:
                self.elements_left -= 1
                if self.elements_left < 0:
                    raise TooManyElements(self.max_elements or 0)
            items.append(self.read(element, depth))
        if self.position != end:
            raise DecodeError("array element runs past the array's length")
        return items


def encode_values(types: Sequence[DBusType], values: Sequence[Any], *, big_endian: bool = False) -> bytes:
    """A message body: `values` marshalled one after another."""
    if len(values) != len(types):
        raise EncodeError(f"{len(types)} values wanted, {len(values)} given")
    writer = Writer(big_endian)
    for kind, value in zip(types, values, strict=True):
        writer.write(kind, value)
    return bytes(writer.buffer)


def decode_values(types: Sequence[DBusType], data: bytes | memoryview, *,
                  big_endian: bool = False, max_elements: int | None = None) -> tuple[Any, ...]:
    """The values of a body that is exactly `data` (TooManyElements past `max_elements`)."""
    reader = Reader(data, big_endian, max_elements=max_elements)
    values = tuple(reader.read(kind) for kind in types)
    if reader.position != len(reader.data):
        raise DecodeError(f"{len(reader.data) - reader.position} bytes after the last value")
    return values
