"""The kdbus item stream: walking, validating and building items.

Items follow a command's fixed part: {u64 size, u64 type, payload}, each starting 8-aligned. The walk
and the per-type checks are the generic rules every command shares (KDBUS-SPEC.md §2.2, rules 5-7).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..bus.errors import KdbusError
from ..bus.limits import SYSNAME_MAX_LEN
from .constants import Item
from .structs import ITEM_HEADER_SIZE, U64, align8

_HEADER = ITEM_HEADER_SIZE
_pack_header = __import__("struct").Struct("<QQ").pack
_unpack_header = __import__("struct").Struct("<QQ").unpack_from


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """An item type a command accepts."""

    type: int
    multiple: bool = False
    mandatory: bool = False


@dataclass(slots=True)
class ParsedItem:
    type: int
    offset: int  # of the item header, relative to the start of the command
    payload: bytes

    @property
    def u64(self) -> int:
        return int(U64.unpack_from(self.payload)[0])

    @property
    def string(self) -> str:
        """The payload of a validated string item, without its NUL."""
        return self.payload[:-1].decode("utf-8", "surrogateescape")


def str_valid(payload: bytes) -> bool:
    """kdbus string rule: non-empty and the first NUL is the last byte."""
    return len(payload) > 0 and payload.find(b"\0") == len(payload) - 1


def validate_sysname(payload: bytes) -> None:
    """Names that become file names or descriptions: 1..63 of [A-Za-z0-9_], inner '-' and '.'."""
    if len(payload) < 2:
        raise KdbusError(errno.EINVAL, "empty name")
    if len(payload) > SYSNAME_MAX_LEN + 1:
        raise KdbusError(errno.ENAMETOOLONG, f"name longer than {SYSNAME_MAX_LEN} characters")
    if not str_valid(payload):
        raise KdbusError(errno.EINVAL, "name is not a NUL-terminated string")
    name = payload[:-1]
    last = len(name) - 1
    for i, ch in enumerate(name):
        if (48 <= ch <= 57) or (65 <= ch <= 90) or (97 <= ch <= 122) or ch == 95:
            continue
        if 0 < i < last and ch in (45, 46):
            continue
        raise KdbusError(errno.EINVAL, f"invalid character {chr(ch)!r} in name")


_STRING_ITEMS = frozenset(
    {Item.NAME, Item.DST_NAME, Item.PID_COMM, Item.TID_COMM, Item.EXE, Item.CMDLINE, Item.CGROUP,
     Item.SECLABEL}
)
_EXACT_PAYLOAD: dict[int, int] = {
    Item.CANCEL_FD: 4, Item.BLOOM_PARAMETER: 16, Item.ATTACH_FLAGS_SEND: 8, Item.ATTACH_FLAGS_RECV: 8,
    Item.ID: 8, Item.DST_ID: 8, Item.TIMESTAMP: 24, Item.CREDS: 64, Item.AUDIT: 8,
    Item.POLICY_ACCESS: 24, Item.ID_ADD: 16, Item.ID_REMOVE: 16, Item.REPLY_TIMEOUT: 0,
    Item.REPLY_DEAD: 0,
}


def validate_item(item_type: int, payload: bytes) -> None:
    """Per-type payload checks shared by every command (raises KdbusError)."""
    size = len(payload)
    if item_type in _STRING_ITEMS:
        if not str_valid(payload):
            raise KdbusError(errno.EINVAL, f"item {item_type:#x}: malformed string")
        return
    exact = _EXACT_PAYLOAD.get(item_type)
    if exact is not None:
        if size != exact:
            raise KdbusError(errno.EINVAL, f"item {item_type:#x}: payload of {size} bytes, want {exact}")
        return
    if item_type == Item.NEGOTIATE:
        if size % 8:
            raise KdbusError(errno.EINVAL, "NEGOTIATE payload not a multiple of 8")
    elif item_type in (Item.PAYLOAD_VEC, Item.PAYLOAD_OFF):
        if size != 16 or U64.unpack_from(payload)[0] == 0:
            raise KdbusError(errno.EINVAL, "malformed or empty payload vector")
    elif item_type == Item.PAYLOAD_MEMFD:
        if size != 24 or U64.unpack_from(payload, 8)[0] == 0:
            raise KdbusError(errno.EINVAL, "malformed or empty memfd item")
        if int.from_bytes(payload[16:20], "little", signed=True) < 0:
            raise KdbusError(errno.EBADF, "negative memfd fd")
    elif item_type in (Item.FDS, Item.AUXGROUPS):
        if size % 4:
            raise KdbusError(errno.EINVAL, f"item {item_type:#x}: payload not a multiple of 4")
    elif item_type == Item.BLOOM_FILTER:
        if size < 8:
            raise KdbusError(errno.EINVAL, "bloom filter without generation")
    elif item_type in (Item.MAKE_NAME, Item.CONN_DESCRIPTION):
        validate_sysname(payload)
    elif item_type == Item.CAPS:
        if size < 4:
            raise KdbusError(errno.EINVAL, "caps item too short")
        last_cap = int.from_bytes(payload[:4], "little")
        if size < 4 + 4 * (last_cap >> 5) * 4:
            raise KdbusError(errno.EINVAL, "caps item shorter than last_cap needs")
    elif item_type in (Item.NAME_ADD, Item.NAME_REMOVE, Item.NAME_CHANGE):
        if size < 32 or (size > 32 and not str_valid(payload[32:])):
            raise KdbusError(errno.EINVAL, "malformed name-change item")


def walk_items(
    data: bytes, start: int, accepted: Mapping[int, ItemSpec]
) -> dict[int, list[ParsedItem]]:
    """Walk and validate the items in data[start:], keyed by type.

    Every item needs size >= 16 and must lie inside the area; the next item starts at the aligned end
    of the previous one, and the walk must end exactly at the aligned end of the area.
    """
    end = len(data)
    found: dict[int, list[ParsedItem]] = {}
    pos = start
    while pos < end:
        if pos + _HEADER > end:
            raise KdbusError(errno.EINVAL, f"truncated item header at offset {pos}")
        size, item_type = _unpack_header(data, pos)
        if size < _HEADER or pos + size > end:
            raise KdbusError(errno.EINVAL, f"item at offset {pos} has bad size {size}")
        spec = accepted.get(item_type)
        if spec is None:
            raise KdbusError(errno.EINVAL, f"item type {item_type:#x} not accepted here")
        payload = bytes(data[pos + _HEADER : pos + size])
        validate_item(item_type, payload)
        previous = found.get(item_type)
        if previous is not None and not spec.multiple:
            raise KdbusError(errno.EINVAL, f"item type {item_type:#x} given twice")
        found.setdefault(item_type, []).append(ParsedItem(item_type, pos, payload))
        pos += align8(size)
    if pos != align8(end):
        raise KdbusError(errno.EINVAL, "trailing bytes after the last item")
    return found


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
