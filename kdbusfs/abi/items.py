"""The kdbus item stream: walking, validating and building items.

Items follow a command's fixed part: {u64 size, u64 type, payload}, each starting 8-aligned. The walk
and the per-type checks are the generic rules every command shares (KDBUS-SPEC.md §2.2, rules 5-7).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from ..errors import KdbusError
from ..limits import SYSNAME_MAX_LEN
from .constants import Item
from .structs import (
    AUDIT,
    BLOOM_PARAMETER,
    CREDS,
    ITEM_HEADER_SIZE,
    MEMFD,
    NOTIFY_ID_CHANGE,
    NOTIFY_NAME_CHANGE,
    PIDS,
    POLICY_ACCESS,
    TIMESTAMP,
    U64,
    VEC,
    align8,
)

_HEADER = ITEM_HEADER_SIZE
_pack_header = __import__("struct").Struct("<QQ").pack
_unpack_header = __import__("struct").Struct("<QQ").unpack_from
# An fd (FDS, CANCEL_FD), a group id (AUXGROUPS), a capability word (CAPS).
_U32_SIZE = 4


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


def _string(payload: bytes) -> None:
    if not str_valid(payload):
        raise KdbusError(errno.EINVAL, "malformed string")


def _vec(payload: bytes) -> None:
    if U64.unpack_from(payload)[0] == 0:
        raise KdbusError(errno.EINVAL, "empty payload vector")


def _memfd(payload: bytes) -> None:
    memfd = MEMFD.unpack(payload)
    if memfd.size == 0:
        raise KdbusError(errno.EINVAL, "empty memfd item")
    if memfd.fd < 0:
        raise KdbusError(errno.EBADF, "negative memfd fd")


def _caps(payload: bytes) -> None:
    # Four capability sets (inheritable, permitted, effective, bounding) of as many u32 words as
    # last_cap needs. kdbus's bound (CAP_TO_INDEX(last_cap) words per set) is one word per set short
    # of that; kept so that the same items pass (no command takes CAPS from a client anyway).
    last_cap = int.from_bytes(payload[:4], "little")
    if len(payload) < 4 + 4 * (last_cap >> 5) * 4:
        raise KdbusError(errno.EINVAL, f"capability sets shorter than last_cap {last_cap} needs")


def _string_after(offset: int) -> Callable[[bytes], None]:
    """A fixed part of `offset` bytes, then an optional name that must be a proper string."""
    def check(payload: bytes) -> None:
        if len(payload) > offset and not str_valid(payload[offset:]):
            raise KdbusError(errno.EINVAL, "malformed name after the fixed part")
    return check


@dataclass(frozen=True, slots=True)
class PayloadRule:
    """The shape an item's payload must have before anything reads it.

    `exact` or `minimum` bound its size and `multiple` its granularity; `check` then looks at its
    content (strings, fields that must not be zero), and may rely on the size being right.
    """

    exact: int | None = None
    minimum: int = 0
    multiple: int = 1
    check: Callable[[bytes], None] | None = None


_STRING = PayloadRule(check=_string)
_U64 = PayloadRule(exact=U64.size)
_NAME_CHANGE = PayloadRule(minimum=NOTIFY_NAME_CHANGE.size, check=_string_after(NOTIFY_NAME_CHANGE.size))
_NOTIFY_ID = PayloadRule(exact=NOTIFY_ID_CHANGE.size)
_EMPTY = PayloadRule(exact=0)

# Every item type's payload rule: the one place that says how large each item is (KDBUS-SPEC.md
# §2.2 rule 7, kdbus_item_validate). Items whose payload is a struct need exactly that struct, so
# no parser downstream can read past a short payload. Two rules are stricter than kdbus, which reads
# them unchecked: PIDS (kdbus copies 24 bytes from whatever follows a short item) and OWNED_NAME.
PAYLOAD_RULES: Mapping[int, PayloadRule] = {
    Item.NEGOTIATE: PayloadRule(multiple=U64.size),
    Item.PAYLOAD_VEC: PayloadRule(exact=VEC.size, check=_vec),
    Item.PAYLOAD_OFF: PayloadRule(exact=VEC.size, check=_vec),
    Item.PAYLOAD_MEMFD: PayloadRule(exact=MEMFD.size, check=_memfd),
    Item.FDS: PayloadRule(multiple=_U32_SIZE),
    Item.CANCEL_FD: PayloadRule(exact=_U32_SIZE),
    Item.BLOOM_PARAMETER: PayloadRule(exact=BLOOM_PARAMETER.size),
    # A generation, then the bloom words (their number depends on the bus: checked where used).
    Item.BLOOM_FILTER: PayloadRule(minimum=U64.size),
    # Any size here; it must be whole bloom filters of the bus, checked where used.
    Item.BLOOM_MASK: PayloadRule(),
    Item.DST_NAME: _STRING,
    Item.MAKE_NAME: PayloadRule(check=validate_sysname),
    Item.ATTACH_FLAGS_SEND: _U64,
    Item.ATTACH_FLAGS_RECV: _U64,
    Item.ID: _U64,
    Item.NAME: _STRING,
    Item.DST_ID: _U64,
    Item.TIMESTAMP: PayloadRule(exact=TIMESTAMP.size),
    Item.CREDS: PayloadRule(exact=CREDS.size),
    Item.PIDS: PayloadRule(exact=PIDS.size),
    Item.AUXGROUPS: PayloadRule(multiple=_U32_SIZE),
    Item.OWNED_NAME: PayloadRule(minimum=U64.size, check=_string_after(U64.size)),
    Item.TID_COMM: _STRING,
    Item.PID_COMM: _STRING,
    Item.EXE: _STRING,
    Item.CMDLINE: _STRING,
    Item.CGROUP: _STRING,
    Item.CAPS: PayloadRule(minimum=_U32_SIZE, check=_caps),
    Item.SECLABEL: _STRING,
    Item.AUDIT: PayloadRule(exact=AUDIT.size),
    Item.CONN_DESCRIPTION: PayloadRule(check=validate_sysname),
    Item.POLICY_ACCESS: PayloadRule(exact=POLICY_ACCESS.size),
    Item.NAME_ADD: _NAME_CHANGE,
    Item.NAME_REMOVE: _NAME_CHANGE,
    Item.NAME_CHANGE: _NAME_CHANGE,
    Item.ID_ADD: _NOTIFY_ID,
    Item.ID_REMOVE: _NOTIFY_ID,
    Item.REPLY_TIMEOUT: _EMPTY,
    Item.REPLY_DEAD: _EMPTY,
}


def _type_name(item_type: int) -> str:
    try:
        return Item(item_type).name
    except ValueError:
        return f"{item_type:#x}"


def validate_item(item_type: int, payload: bytes) -> None:
    """Check a payload against its type's rule (raises KdbusError); unknown types have none.

    Failures are the caller's bad input: they say which item and why, for a debug log line.
    """
    rule = PAYLOAD_RULES.get(item_type)
    if rule is None:
        return
    size = len(payload)
    if rule.exact is not None:
        if size != rule.exact:
            raise KdbusError(errno.EINVAL, f"item {_type_name(item_type)}: payload of {size} bytes, "
                                           f"want {rule.exact}")
    elif size < rule.minimum or size % rule.multiple:
        raise KdbusError(errno.EINVAL, f"item {_type_name(item_type)}: payload of {size} bytes, want "
                                       f"at least {rule.minimum} in multiples of {rule.multiple}")
    if rule.check is not None:
        try:
            rule.check(payload)
        except KdbusError as exc:
            raise KdbusError(exc.errno, f"item {_type_name(item_type)}: {exc.why}") from None


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
