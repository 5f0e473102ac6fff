"""A pcapng writer for D-Bus captures, as `busctl capture` writes them: one interface of link type
DLT_DBUS (231), each packet one whole dbus1 message.

pcapng (draft-ietf-opsawg-pcapng): a Section Header Block, an Interface Description Block, then
one Enhanced Packet Block per packet. Every block is its type, its total length, its body padded to
4 bytes, options (code, length, value padded to 4; ending with code 0) and its total length again.
Timestamps are in nanoseconds (the interface's if_tsresol option says so).
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

LINKTYPE_DBUS = 231
# The largest D-Bus message: no packet is cut.
SNAPLEN = 128 * 1024 * 1024

_SECTION_HEADER = 0x0A0D0D0A
_INTERFACE_DESCRIPTION = 1
_ENHANCED_PACKET = 6
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END = 0
_OPT_COMMENT = 1
_SHB_OS = 3
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_TSRESOL = 9


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _options(options: list[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    encoded = b"".join(struct.pack("<HH", code, len(value)) + _padded(value) for code, value in options)
    return encoded + struct.pack("<HH", _OPT_END, 0)


def block(block_type: int, body: bytes, options: list[tuple[int, bytes]] | None = None) -> bytes:
    content = _padded(body) + _options(options or [])
    total = 12 + len(content)
    return struct.pack("<II", block_type, total) + content + struct.pack("<I", total)


class PcapngWriter:
    """Writes the file header at once, then one packet per `packet` call, flushed, so a reader
    of a pipe sees each message as it comes."""

    def __init__(self, stream: BinaryIO, interface: str, application: str) -> None:
        self.stream = stream
        system = os.uname()
        section = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
        self.stream.write(block(_SECTION_HEADER, section, [
            (_SHB_OS, f"{system.sysname} {system.release}".encode()),
            (_SHB_USERAPPL, application.encode()),
        ]))
        description = struct.pack("<HHI", LINKTYPE_DBUS, 0, SNAPLEN)
        self.stream.write(block(_INTERFACE_DESCRIPTION, description, [
            (_IF_NAME, interface.encode()), (_IF_TSRESOL, bytes((9,))),
        ]))
        self.stream.flush()

    def packet(self, data: bytes, timestamp_ns: int, comment: str | None = None) -> None:
        high, low = timestamp_ns >> 32, timestamp_ns & 0xFFFF_FFFF
        header = struct.pack("<IIIII", 0, high, low, len(data), len(data))
        options = [] if comment is None else [(_OPT_COMMENT, comment.encode())]
        self.stream.write(block(_ENHANCED_PACKET, header + data, options))
        self.stream.flush()
