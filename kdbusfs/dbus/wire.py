"""Framing messages: the classic dbus1 layout, and the GVariant layout sd-bus sent on kdbus.

dbus1 (protocol version 1): the fixed header "yyyyuu" (endianness, type, flags, version, body
length, serial), the header fields "a(yv)" (the body's signature among them), padding to 8, the
body. GVariant (version 2, systemd's GVARIANT-SERIALIZATION document): the whole message is one
GVariant value of type "(yyyyuta(tv)v)": endianness, type, flags, version, a reserved 0, the 64-bit
cookie, the header fields keyed by 64-bit codes (REPLY_SERIAL is 64-bit too, SIGNATURE is absent),
then the body as a variant holding a struct, so the message ends with a NUL, the body's signature in
parentheses and one framing offset: where the fields end. A GVariant message carries no size; the
transport (here: the kdbus payload) delimits it.

    data = encode_gvariant(message)
    assert decode(data) == message
"""

from __future__ import annotations

import struct
from typing import Any

from . import dbus1, gvariant
from .errors import DecodeError, EncodeError
from .message import DBusMessage, HeaderField, MessageType
from .names import Variant
from .signature import SignatureError, parse_signature, parse_type

MAX_MESSAGE_SIZE = 128 * 1024 * 1024
FIXED_HEADER_SIZE = 16
DBUS1_VERSION = 1
GVARIANT_VERSION = 2

# Header fields: the message attribute each holds, and its type in dbus1 (GVariant: REPLY_SERIAL
# is 't').
_FIELDS: dict[HeaderField, tuple[str, str]] = {
    HeaderField.PATH: ("path", "o"),
    HeaderField.INTERFACE: ("interface", "s"),
    HeaderField.MEMBER: ("member", "s"),
    HeaderField.ERROR_NAME: ("error_name", "s"),
    HeaderField.REPLY_SERIAL: ("reply_serial", "u"),
    HeaderField.DESTINATION: ("destination", "s"),
    HeaderField.SENDER: ("sender", "s"),
    HeaderField.SIGNATURE: ("signature", "g"),
    HeaderField.UNIX_FDS: ("unix_fds", "u"),
}
_GVARIANT_FIELDS = parse_type("a(tv)")
_DBUS1_FIELDS = parse_type("a(yv)")


def _field_type(field: HeaderField, gvariant_framing: bool) -> str:
    if gvariant_framing and field == HeaderField.REPLY_SERIAL:
        return "t"
    return _FIELDS[field][1]


def _checked(message: DBusMessage) -> None:
    problem = message.problem()
    if problem is not None:
        raise EncodeError(problem)


def _header_fields(message: DBusMessage, gvariant_framing: bool) -> list[tuple[int, Variant]]:
    fields = []
    for field, (attribute, _) in _FIELDS.items():
        value = getattr(message, attribute)
        # An empty signature is no field; GVariant keeps the signature in the body variant.
        if value is None or (field == HeaderField.SIGNATURE and (gvariant_framing or not value)):
            continue
        fields.append((int(field), Variant(_field_type(field, gvariant_framing), value)))
    return fields


def _message(kind: int, flags: int, serial: int, fields: list[tuple[int, Variant]], signature: str,
             body: tuple[Any, ...], gvariant_framing: bool) -> DBusMessage:
    """The message a decoder read: fields checked against their types, unknown ones ignored (as
    the specification says)."""
    try:
        message_type = MessageType(kind)
    except ValueError:
        raise DecodeError(f"unknown message type {kind}") from None
    values: dict[str, Any] = {}
    seen: set[int] = set()
    for code, held in fields:
        if code not in _FIELDS.keys():
            continue
        field = HeaderField(code)
        # A known field given twice makes the message invalid (dbus-daemon closes its sender):
        # which of the two a receiver would believe is not to be left to chance.
        if code in seen:
            raise DecodeError(f"header field {field.name} appears twice")
        seen.add(code)
        if code == HeaderField.SIGNATURE:
            continue
        if held.signature != _field_type(field, gvariant_framing):
            raise DecodeError(f"header field {field.name} of type '{held.signature}'")
        values[_FIELDS[field][0]] = held.value
    message = DBusMessage(message_type, serial, flags, signature=signature, body=body, **values)
    problem = message.problem()
    if problem is not None:
        raise DecodeError(problem)
    return message


def encode_gvariant(message: DBusMessage) -> bytes:
    """`message` as sd-bus framed it for kdbus (little-endian)."""
    _checked(message)
    try:
        body = gvariant.encode_body(message.body_types, message.body)
    except SignatureError as exc:
        raise EncodeError(str(exc)) from None
    buffer = bytearray(struct.pack("<BBBBIQ", ord("l"), message.type, message.flags, GVARIANT_VERSION, 0,
                                   message.serial))
    buffer += gvariant.encode(_GVARIANT_FIELDS, _header_fields(message, True))
    fields_end = len(buffer)
    buffer += bytes(-len(buffer) % 8)
    buffer += body + b"\0(" + message.signature.encode("ascii") + b")"
    # The struct's one framing offset, sized for the whole message.
    size = 1
    while len(buffer) + size >= 1 << (8 * size):
        size *= 2
    buffer += fields_end.to_bytes(size, "little")
    if len(buffer) > MAX_MESSAGE_SIZE:
        raise EncodeError(f"message of {len(buffer)} bytes; D-Bus allows {MAX_MESSAGE_SIZE}")
    return bytes(buffer)


def decode_gvariant(data: bytes, max_elements: int | None = None) -> DBusMessage:
    """A message in sd-bus's GVariant framing that is exactly `data` (`max_elements`: as
    gvariant.decode_body's)."""
    if len(data) < FIXED_HEADER_SIZE or data[3] != GVARIANT_VERSION:
        raise DecodeError("not a GVariant D-Bus message")
    big_endian = _big_endian(data)
    _, kind, flags, _, reserved, cookie = struct.unpack((">" if big_endian else "<") + "BBBBIQ", data[:16])
    if reserved != 0 or cookie == 0:
        raise DecodeError("reserved header word not 0, or cookie 0")
    offset_size = gvariant.offset_size(len(data))
    fields_end = int.from_bytes(data[len(data) - offset_size :], "little")
    body_start = fields_end + -fields_end % 8
    if not FIXED_HEADER_SIZE <= fields_end <= body_start <= len(data) - offset_size:
        raise DecodeError("header fields out of bounds")
    fields = gvariant.decode(_GVARIANT_FIELDS, data[FIXED_HEADER_SIZE:fields_end], big_endian=big_endian)
    footer = data[body_start : len(data) - offset_size]
    separator = footer.rfind(b"\0")
    body_type = footer[separator + 1 :]
    if separator < 0 or body_type[:1] != b"(" or body_type[-1:] != b")":
        raise DecodeError("the body variant does not hold a struct")
    try:
        signature = body_type[1:-1].decode("ascii")
        types = parse_signature(signature)
    except (UnicodeDecodeError, SignatureError) as exc:
        raise DecodeError(f"body signature: {exc}") from None
    body = gvariant.decode_body(types, footer[:separator], big_endian=big_endian, max_elements=max_elements)
    return _message(kind, flags, cookie, fields, signature, body, True)


def encode_dbus1(message: DBusMessage, *, big_endian: bool = False) -> bytes:
    """`message` in the classic framing (serials must fit 32 bits)."""
    _checked(message)
    for name in ("serial", "reply_serial"):
        value = getattr(message, name)
        if value is not None and value > 0xFFFF_FFFF:
            raise EncodeError(f"{name} {value} does not fit dbus1's 32 bits")
    try:
        body = dbus1.encode_values(message.body_types, message.body, big_endian=big_endian)
    except SignatureError as exc:
        raise EncodeError(str(exc)) from None
    writer = dbus1.Writer(big_endian)
    for code in (ord("B" if big_endian else "l"), message.type, message.flags, DBUS1_VERSION):
        writer.write(parse_type("y"), code)
    writer.u32(len(body))
    writer.u32(message.serial)
    writer.write(_DBUS1_FIELDS, _header_fields(message, False))
    writer.pad(8)
    data = bytes(writer.buffer) + body
    if len(data) > MAX_MESSAGE_SIZE:
        raise EncodeError(f"message of {len(data)} bytes; D-Bus allows {MAX_MESSAGE_SIZE}")
    return data


def decode_dbus1(data: bytes, max_elements: int | None = None) -> DBusMessage:
    """A classic D-Bus message that is exactly `data` (`max_elements`: as dbus1.decode_values's)."""
    if len(data) < FIXED_HEADER_SIZE or data[3] != DBUS1_VERSION:
        raise DecodeError("not a dbus1 message")
    big_endian = _big_endian(data)
    order = ">" if big_endian else "<"
    _, kind, flags, _, body_length, serial, fields_length = struct.unpack(order + "BBBBIII", data[:16])
    size = FIXED_HEADER_SIZE + fields_length + -fields_length % 8 + body_length
    if size != len(data):
        raise DecodeError(f"header says {size} bytes, the message has {len(data)}")
    reader = dbus1.Reader(data, big_endian, position=12)
    fields = reader.read(_DBUS1_FIELDS)
    reader.align(8)
    signature = next((held.value for code, held in fields
                      if code == HeaderField.SIGNATURE and held.signature == "g"), "")
    body = dbus1.decode_values(parse_signature(signature), data[reader.position :], big_endian=big_endian,
                               max_elements=max_elements)
    return _message(kind, flags, serial, fields, signature, body, False)


def _big_endian(data: bytes) -> bool:
    if data[0] not in b"lB":
        raise DecodeError(f"endianness byte {data[0]:#x}")
    return data[0] == ord("B")


def looks_like_message(data: bytes) -> bool:
    """Whether `data` starts like a D-Bus message of either framing (decoding decides)."""
    return (len(data) >= FIXED_HEADER_SIZE and data[0] in b"lB" and 1 <= data[1] <= 4
            and data[3] in (DBUS1_VERSION, GVARIANT_VERSION))


def decode(data: bytes, max_elements: int | None = None) -> DBusMessage:
    """The message `data` is, in whichever framing its version byte names."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise DecodeError(f"message of {len(data)} bytes; D-Bus allows {MAX_MESSAGE_SIZE}")
    if len(data) < FIXED_HEADER_SIZE:
        raise DecodeError(f"a D-Bus message has at least {FIXED_HEADER_SIZE} bytes, not {len(data)}")
    if data[3] == GVARIANT_VERSION:
        return decode_gvariant(data, max_elements)
    return decode_dbus1(data, max_elements)
