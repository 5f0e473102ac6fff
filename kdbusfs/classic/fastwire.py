"""Both framings of the messages the endpoint carries (classic dbus1 on the socket, sd-bus's
GVariant on kdbus), with the header written and read directly: every message is decoded and encoded
in each, and the generic codec (kdbusfs/dbus/wire.py) spends most of a small message's cost walking
the header's `a(yv)` or `a(tv)` through its type tree. Bodies still go through the generic codecs,
and any header these readers do not expect (unknown fields, odd types, duplicates, bad padding) is
handed to the generic decoder, which accepts or refuses it as it always does: the result is the
same either way (tests/unit/test_classic_fastwire.py), only faster for the headers libraries write.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping
from typing import Any

from ..dbus import DBusMessage, MessageType, dbus1, gvariant, wire
from ..dbus.errors import DecodeError, EncodeError
from ..dbus.names import ObjectPath, Signature
from ..dbus.signature import SignatureError, parse_signature

# Header fields in the order the generic encoder writes them: (code, attribute, type).
_FIELDS = ((1, "path", "o"), (2, "interface", "s"), (3, "member", "s"), (4, "error_name", "s"),
           (5, "reply_serial", "u"), (6, "destination", "s"), (7, "sender", "s"), (8, "signature", "g"),
           (9, "unix_fds", "u"))
_BY_CODE = {code: (attribute, kind) for code, attribute, kind in _FIELDS}
_U32_MAX = 0xFFFF_FFFF
# The type byte's MessageType by a lookup, not an enum call per message (the byte is checked first).
_MESSAGE_TYPES = {int(kind): kind for kind in MessageType}
_ZEROS = bytes(8)


class _Unusual(Exception):
    """A header this reader leaves to the generic decoder."""


def encode(message: DBusMessage, *, big_endian: bool = False) -> bytes:
    """wire.encode_dbus1(message), byte for byte."""
    problem = message.problem()
    if problem is not None:
        raise EncodeError(problem)
    for name in ("serial", "reply_serial", "unix_fds"):
        value = getattr(message, name)
        if value is not None and value > _U32_MAX:
            raise EncodeError(f"{name} {value} does not fit dbus1's 32 bits")
    try:
        body = dbus1.encode_values(message.body_types, message.body, big_endian=big_endian)
    except SignatureError as exc:
        raise EncodeError(str(exc)) from None
    order = ">" if big_endian else "<"
    u32 = struct.Struct(order + "I").pack
    buffer = bytearray(16)
    for code, attribute, kind in _FIELDS:
        value = getattr(message, attribute)
        if value is None or (code == 8 and not value):
            continue
        buffer += _ZEROS[: -len(buffer) % 8]
        buffer += bytes((code, 1, ord(kind), 0))
        if kind == "u":
            buffer += u32(value)
        else:
            raw = value.encode("utf-8")
            buffer += (bytes((len(raw),)) if kind == "g" else u32(len(raw))) + raw + b"\0"
    fields_length = len(buffer) - 16
    buffer += _ZEROS[: -len(buffer) % 8]
    struct.pack_into(order + "BBBBIII", buffer, 0, ord("B" if big_endian else "l"), message.type,
                     message.flags, wire.DBUS1_VERSION, len(body), message.serial, fields_length)
    data = b"".join((buffer, body))
    if len(data) > wire.MAX_MESSAGE_SIZE:
        raise EncodeError(f"message of {len(data)} bytes; D-Bus allows {wire.MAX_MESSAGE_SIZE}")
    return data


def decode(raw: bytes, max_elements: int | None = None) -> DBusMessage:
    """wire.decode_dbus1(raw, max_elements): the same message, or the same refusal."""
    try:
        return _decode(raw, max_elements)
    except _Unusual:
        return wire.decode_dbus1(raw, max_elements)


def _decode(raw: bytes, max_elements: int | None) -> DBusMessage:
    if len(raw) < 16 or raw[3] != wire.DBUS1_VERSION or raw[0] not in b"lB":
        raise _Unusual
    order = ">" if raw[0] == ord("B") else "<"
    kind, flags = raw[1], raw[2]
    body_length, serial, fields_length = struct.unpack_from(order + "III", raw, 4)
    end = 16 + fields_length
    body_start = end + (-end % 8)
    if body_start + body_length != len(raw) or not 1 <= kind <= 4:
        raise _Unusual
    fields = raw[16:end]
    read = _cached_dbus1_fields if fields_length <= HEADER_CACHE_BYTES else _dbus1_fields
    values, signature = read(fields, order)
    if raw[end:body_start] != _ZEROS[: body_start - end]:
        raise _Unusual
    try:
        types = parse_signature(signature)
    except SignatureError:
        raise _Unusual from None
    body = dbus1.decode_values(types, memoryview(raw)[body_start:], big_endian=order == ">",
                               max_elements=max_elements)
    message = DBusMessage(_MESSAGE_TYPES[kind], serial, flags, signature=signature, body=body, **values)
    problem = message.problem()
    if problem is not None:
        raise DecodeError(problem)
    return message


def _dbus1_fields(raw: bytes, order: str) -> tuple[dict[str, Any], str]:
    """The dbus1 header's field array `raw` (it starts 8-aligned): the known fields of their
    types, and the body's signature."""
    u32 = struct.Struct(order + "I").unpack_from
    values: dict[str, Any] = {}
    signature = ""
    pos = 0
    end = len(raw)
    while pos < end:
        aligned = pos + (-pos % 8)
        if raw[pos:aligned] != _ZEROS[: aligned - pos] or aligned + 4 > end:
            raise _Unusual
        pos = aligned
        code = raw[pos]
        field = _BY_CODE.get(code)
        if field is None or raw[pos + 1] != 1 or raw[pos + 3] != 0 or chr(raw[pos + 2]) != field[1]:
            raise _Unusual
        attribute, field_type = field
        if attribute in values or (code == 8 and signature):
            raise _Unusual
        pos += 4
        if field_type == "u":
            if pos + 4 > end:
                raise _Unusual
            values[attribute] = u32(raw, pos)[0]
            pos += 4
            continue
        # A length past the end would be read from beyond the array: refused as its value would be.
        if pos + (1 if field_type == "g" else 4) > end:
            raise _Unusual
        if field_type == "g":
            length = raw[pos]
            start = pos + 1
        else:
            (length,) = u32(raw, pos)
            start = pos + 4
        stop = start + length
        if stop >= end or raw[stop] != 0:
            raise _Unusual
        try:
            text = raw[start:stop].decode("utf-8")
        except UnicodeDecodeError:
            raise _Unusual from None
        if "\0" in text:
            raise _Unusual
        pos = stop + 1
        if field_type == "g":
            try:
                signature = str(Signature(text)) if text else ""
            except ValueError:
                raise _Unusual from None
        else:
            values[attribute] = _text(field_type, text)
    if pos != end:
        raise _Unusual
    return values, signature


def _text(kind: str, text: str) -> str:
    if kind != "o":
        return text
    try:
        return ObjectPath(text)
    except ValueError:
        raise _Unusual from None


# GVariant: REPLY_SERIAL is 64-bit; the body's signature travels with the body, not as a field.
_GVARIANT_FIELDS = tuple((code, attribute, "t" if code == 5 else kind) for code, attribute, kind in _FIELDS
                         if code != 8)
_GVARIANT_BY_CODE = {code: (attribute, kind) for code, attribute, kind in _GVARIANT_FIELDS}
_FIXED_LE = struct.Struct("<BBBBIQ")
# Per byte order ("<", ">"): the struct of a field's code, and of its value by type.
_CODE = {order: struct.Struct(order + "Q") for order in "<>"}
_NUMBERS = {order: {"u": struct.Struct(order + "I"), "t": struct.Struct(order + "Q")} for order in "<>"}
# What ends a field's element: its value's type, after a NUL.
_TYPE_BYTES = {kind: kind.encode() for _, _, kind in _GVARIANT_FIELDS}
# Header field arrays of at most HEADER_CACHE_BYTES are read once each, HEADERS_CACHED of them kept
# (at most 512 KiB): replies miss, as their REPLY_SERIAL changes, calls and signals mostly hit.
HEADER_CACHE_BYTES = 512
HEADERS_CACHED = 1024
_U32_LE = struct.Struct("<I").pack
_U64_LE = struct.Struct("<Q").pack


def encode_gvariant(message: DBusMessage) -> bytes:
    """wire.encode_gvariant(message), byte for byte."""
    return b"".join(gvariant_parts(message))


def gvariant_parts(message: DBusMessage) -> tuple[bytes, bytes, bytes]:
    """wire.encode_gvariant(message) in three parts, as sd-bus laid a message out on kdbus: the
    header (fixed part, fields, padding to 8), the body, and the footer (the body's type and the
    framing offset), so that a large body can travel on its own (a memfd) without being copied into
    one buffer with the rest."""
    problem = message.problem()
    if problem is not None:
        raise EncodeError(problem)
    try:
        body = gvariant.encode_body(message.body_types, message.body)
    except SignatureError as exc:
        raise EncodeError(str(exc)) from None
    fields = bytearray()
    ends = []
    for code, attribute, kind in _GVARIANT_FIELDS:
        value = getattr(message, attribute)
        if value is None:
            continue
        fields += _ZEROS[: -len(fields) % 8]
        fields += _U64_LE(code)
        if kind == "u":
            fields += _U32_LE(value)
        elif kind == "t":
            fields += _U64_LE(value)
        else:
            fields += value.encode("utf-8")
            fields += b"\0"
        fields += b"\0"
        fields += _TYPE_BYTES[kind]
        ends.append(len(fields))
    if ends:
        size = _table_offset_size(len(fields), len(ends))
        for end in ends:
            fields += end.to_bytes(size, "little")
    buffer = bytearray(_FIXED_LE.pack(ord("l"), message.type, message.flags, wire.GVARIANT_VERSION, 0,
                                      message.serial))
    buffer += fields
    fields_end = len(buffer)
    buffer += _ZEROS[: -len(buffer) % 8]
    footer = b"\0(" + message.signature.encode("ascii") + b")"
    length = len(buffer) + len(body) + len(footer)
    size = 1
    while length + size >= 1 << (8 * size):
        size *= 2
    length += size
    if length > wire.MAX_MESSAGE_SIZE:
        raise EncodeError(f"message of {length} bytes; D-Bus allows {wire.MAX_MESSAGE_SIZE}")
    return bytes(buffer), body, footer + fields_end.to_bytes(size, "little")


def _table_offset_size(body_size: int, count: int) -> int:
    for size in (1, 2, 4):
        if body_size + count * size < 1 << (8 * size):
            return size
    return 8


def decode_gvariant(data: bytes, max_elements: int | None = None) -> DBusMessage:
    """wire.decode(data, max_elements) for a GVariant-framed message: the same message, or the
    same refusal."""
    try:
        return _decode_gvariant(data, max_elements)
    except _Unusual:
        return wire.decode(data, max_elements)


def _decode_gvariant(data: bytes, max_elements: int | None) -> DBusMessage:
    if len(data) < 16 or data[3] != wire.GVARIANT_VERSION or data[0] not in b"lB":
        raise _Unusual
    big_endian = data[0] == ord("B")
    order = ">" if big_endian else "<"
    _, kind, flags, _, reserved, cookie = struct.unpack_from(order + "BBBBIQ", data)
    if reserved != 0 or cookie == 0 or not 1 <= kind <= 4:
        raise _Unusual
    size = gvariant.offset_size(len(data))
    fields_end = int.from_bytes(data[len(data) - size :], "little")
    body_start = fields_end + -fields_end % 8
    if not 16 <= fields_end <= body_start <= len(data) - size:
        raise _Unusual
    values = _gvariant_header(data[16:fields_end] if fields_end - 16 <= HEADER_CACHE_BYTES
                              else memoryview(data)[16:fields_end], order)
    # The body stays where it is (a large one is most of the message): no copy before decoding.
    separator = data.rfind(b"\0", body_start, len(data) - size)
    body_type = data[separator + 1 : len(data) - size]
    if separator < 0 or body_type[:1] != b"(" or body_type[-1:] != b")":
        raise _Unusual
    try:
        signature = body_type[1:-1].decode("ascii")
        types = parse_signature(signature)
    except (UnicodeDecodeError, SignatureError):
        raise _Unusual from None
    body = gvariant.decode_body(types, memoryview(data)[body_start:separator], big_endian=big_endian,
                                max_elements=max_elements)
    message = DBusMessage(_MESSAGE_TYPES[kind], cookie, flags, signature=signature, body=body, **values)
    problem = message.problem()
    if problem is not None:
        raise DecodeError(problem)
    return message


def _gvariant_header(array: bytes | memoryview, order: str) -> Mapping[str, Any]:
    """_gvariant_fields(array, order), kept for small header arrays (bytes): a peer's calls and
    signals repeat their fields (path, interface, member, names), only the cookie in the fixed part
    changing. Shared between messages, so read-only; a refusal is not kept."""
    if isinstance(array, bytes):
        return _cached_gvariant_fields(array, order)
    return _gvariant_fields(array, order)


def _gvariant_fields(array: bytes | memoryview, order: str) -> dict[str, Any]:
    """The header's a(tv), in normal form, holding only known fields of their types."""
    values: dict[str, Any] = {}
    if not array:
        return values
    size = gvariant.offset_size(len(array))
    table_start = int.from_bytes(array[len(array) - size :], "little")
    table_size = len(array) - table_start
    if table_start > len(array) or table_size % size or table_size == 0:
        raise _Unusual
    code_at = _CODE[order].unpack_from
    numbers = _NUMBERS[order]
    position = 0
    for i in range(table_start, len(array), size):
        end = int.from_bytes(array[i : i + size], "little")
        start = position + -position % 8
        if not start + 8 <= end <= table_start:
            raise _Unusual
        element = bytes(array[start:end])
        field = _GVARIANT_BY_CODE.get(code_at(element)[0])
        separator = element.rfind(b"\0")
        if field is None or field[0] in values or separator < 8:
            raise _Unusual
        attribute, kind = field
        if element[separator + 1 :] != _TYPE_BYTES[kind]:
            raise _Unusual
        raw = element[8:separator]
        number = numbers.get(kind)
        if number is not None:
            if len(raw) != number.size:
                raise _Unusual
            values[attribute] = number.unpack(raw)[0]
        else:
            if not raw or raw[-1] != 0 or b"\0" in raw[:-1]:
                raise _Unusual
            try:
                values[attribute] = _text(kind, raw[:-1].decode("utf-8"))
            except UnicodeDecodeError:
                raise _Unusual from None
        position = end
    return values


# Shared between messages, so read-only (DBusMessage copies them); a refusal is not kept.
_cached_dbus1_fields = functools.lru_cache(maxsize=HEADERS_CACHED)(_dbus1_fields)
_cached_gvariant_fields = functools.lru_cache(maxsize=HEADERS_CACHED)(_gvariant_fields)
