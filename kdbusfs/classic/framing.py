"""Cutting a classic D-Bus byte stream into messages, and the descriptors that came with them; no I/O.

A dbus1 message says its own size in its first 16 bytes: endianness ('l' or 'B'), type, flags,
version 1, the body's length, the serial, and the length of the header-field array; the fields are
padded to 8 and the body follows. Descriptors arrive as SCM_RIGHTS beside the bytes; a message's
UNIX_FDS header field says how many of those received so far are its own, in order. Anything that
breaks these rules (or the specification's limits) ends the connection, as dbus-daemon ends it:
without a reply.

    splitter = MessageSplitter()
    splitter.feed(data, fds)
    for message, fds in splitter.messages():
        ...
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator

from .. import limits
from ..dbus import DBusMessage, HeaderField, dbus1, parse_type
from ..dbus.errors import DecodeError, TooManyElements
from ..dbus.wire import DBUS1_VERSION, FIXED_HEADER_SIZE
from .fastwire import decode

_LITTLE = struct.Struct("<III")
_BIG = struct.Struct(">III")
# The dbus1 fixed header plus the length of the field array that follows it.
_PREAMBLE = FIXED_HEADER_SIZE
_HEADER_FIELDS = parse_type("a(yv)")
# The message types the specification defines; a message of another type is ignored, as it says
# (and dbus-daemon drops it, keeping its sender).
_KNOWN_TYPES = range(1, 5)


class ProtocolViolation(Exception):
    """The stream cannot be read as D-Bus messages: the connection ends."""


def message_size(head: bytes | bytearray | memoryview) -> int:
    """The whole size of the message whose first 16 bytes are `head`."""
    endian = head[0]
    if endian == ord("l"):
        layout = _LITTLE
    elif endian == ord("B"):
        layout = _BIG
    else:
        raise ProtocolViolation(f"endianness byte {endian:#x}")
    if head[3] != DBUS1_VERSION:
        raise ProtocolViolation(f"protocol version {head[3]}")
    if head[1] == 0:
        raise ProtocolViolation("message type 0")
    body_length, _serial, fields_length = (int(v) for v in layout.unpack_from(head, 4))
    size = _PREAMBLE + fields_length + (-fields_length % 8) + body_length
    if size > limits.CLASSIC_MESSAGE_MAX:
        raise ProtocolViolation(f"message of {size} bytes; D-Bus allows {limits.CLASSIC_MESSAGE_MAX}")
    return size


class MessageSplitter:
    """Bytes and descriptors in, whole messages with their descriptors out."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fds: deque[int] = deque()
        self._needed = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def needed(self) -> int:
        """Bytes still missing for the message being read (0: unknown yet)."""
        return max(0, self._needed - len(self._buffer)) if self._needed else 0

    def feed(self, data: bytes | bytearray | memoryview, fds: list[int] | None = None) -> None:
        self._buffer += data
        if fds:
            self._fds.extend(fds)
        if len(self._fds) > limits.CLASSIC_FDS_PER_MESSAGE * 4:
            raise ProtocolViolation(f"{len(self._fds)} descriptors received ahead of their messages")

    def messages(self) -> Iterator[tuple[DBusMessage | None, list[int]]]:
        """Each complete message, decoded, and the descriptors it declares, in order; None for a
        message of a type the specification does not define (its header is read all the same, for
        the descriptors it declares: the caller closes them)."""
        while True:
            if len(self._buffer) < _PREAMBLE:
                return
            if not self._needed:
                self._needed = message_size(self._buffer)
            if len(self._buffer) < self._needed:
                return
            raw = bytes(memoryview(self._buffer)[: self._needed])
            del self._buffer[: self._needed]
            self._needed = 0
            try:
                message = decode(raw, limits.CLASSIC_ARRAY_ELEMENTS_MAX) if raw[1] in _KNOWN_TYPES else None
            except TooManyElements as exc:
                # Valid D-Bus, but more than the endpoint decodes on its serving thread at once:
                # closed as dbus-daemon closes a client whose message exceeds its limits.
                raise ProtocolViolation(f"message with {exc}; kdbusfs takes at most {exc.limit}") from None
            except DecodeError as exc:
                raise ProtocolViolation(f"undecodable message: {exc}") from None
            count = (message.unix_fds or 0) if message is not None else _declared_fds(raw)
            if count > limits.CLASSIC_FDS_PER_MESSAGE:
                raise ProtocolViolation(f"{count} descriptors in one message")
            if count > len(self._fds):
                raise ProtocolViolation(f"message declares {count} descriptors, {len(self._fds)} came")
            yield message, [self._fds.popleft() for _ in range(count)]

    def take_fds(self) -> list[int]:
        """Every descriptor still held (to close them when the connection ends)."""
        fds = list(self._fds)
        self._fds.clear()
        return fds


def _declared_fds(raw: bytes) -> int:
    """The UNIX_FDS a message of an unknown type declares (its header fields must be well formed:
    anything else is a violation, as for any message)."""
    reader = dbus1.Reader(raw, raw[0] == ord("B"), position=12,
                          max_elements=limits.CLASSIC_ARRAY_ELEMENTS_MAX)
    try:
        fields = reader.read(_HEADER_FIELDS)
    except DecodeError as exc:
        raise ProtocolViolation(f"undecodable header: {exc}") from None
    declared = [held.value for code, held in fields if code == HeaderField.UNIX_FDS and held.signature == "u"]
    return int(declared[0]) if declared else 0
