"""Messages to send: a `kdbus_msg` with its items, and the payload memory its vectors point to.

The bus copies the payload from this process's memory during the SEND (one copy, straight into the
receiver's pool), so the message and the payload stay pinned until the command returns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..abi import structs
from ..abi.constants import DST_ID_NAME, PAYLOAD_DBUS, Item
from ..abi.items import item, string_item
from ..limits import MSG_MAX_PAYLOAD_VEC_SIZE
from .bloom import BloomFilter
from .ioctl import Pinned

Payload = bytes | Sequence[bytes]
Destination = int | str


@dataclass(slots=True)
class Outgoing:
    """A message ready for KDBUS_CMD_SEND, and the memory it points to."""

    message: Pinned
    payload: Pinned | None


def deadline_ns(timeout: float) -> int:
    """The absolute CLOCK_MONOTONIC deadline kdbus wants for a call `timeout` seconds from now."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) + max(1, int(timeout * 1e9))


def bloom_payload(bloom: BloomFilter | bytes) -> bytes:
    """A BLOOM_FILTER item's payload: the generation, then the filter."""
    if isinstance(bloom, BloomFilter):
        return structs.BLOOM_FILTER.pack(bloom.generation) + bytes(bloom)
    return structs.BLOOM_FILTER.pack(0) + bloom


def build(destination: Destination, payload: Payload = b"", *, flags: int = 0, cookie: int = 0,
          timeout_or_reply: int = 0, priority: int = 0, payload_type: int = PAYLOAD_DBUS,
          bloom: BloomFilter | bytes | None = None, fds: Sequence[int] = ()) -> Outgoing:
    """The message to `destination` (a connection id, DST_ID_BROADCAST or a well-known name).

    `timeout_or_reply` is the deadline of a call or the cookie a reply answers (a union in
    kdbus_msg). Each non-empty payload part becomes one PAYLOAD_VEC.
    """
    parts = [payload] if isinstance(payload, bytes | bytearray | memoryview) else list(payload)
    parts = [bytes(part) for part in parts if len(part)]
    total = sum(len(part) for part in parts)
    if total > MSG_MAX_PAYLOAD_VEC_SIZE:
        raise ValueError(f"payload of {total} bytes; a message carries at most {MSG_MAX_PAYLOAD_VEC_SIZE}")
    data = Pinned(b"".join(parts)) if parts else None
    vectors = []
    offset = 0
    for part in parts:
        assert data is not None
        vectors.append(vec_item(len(part), data.address + offset))
        offset += len(part)
    return Outgoing(Pinned(message_bytes(destination, vectors, flags=flags, cookie=cookie,
                                         timeout_or_reply=timeout_or_reply, priority=priority,
                                         payload_type=payload_type, bloom=bloom, fds=fds)), data)


def vec_item(size: int, address: int) -> bytes:
    """A PAYLOAD_VEC item: `size` bytes at `address` of the sender's memory."""
    return item(Item.PAYLOAD_VEC, structs.VEC.pack(size, address))


def memfd_item(fd: int, start: int, size: int) -> bytes:
    """A PAYLOAD_MEMFD item: `size` bytes from `start` of the sealed memfd `fd`."""
    return item(Item.PAYLOAD_MEMFD, structs.MEMFD.pack(start, size, fd, 0))


def message_bytes(destination: Destination, payload_items: Sequence[bytes], *, flags: int = 0,
                  cookie: int = 0, timeout_or_reply: int = 0, priority: int = 0,
                  payload_type: int = PAYLOAD_DBUS, bloom: BloomFilter | bytes | None = None,
                  fds: Sequence[int] = ()) -> bytes:
    """A kdbus_msg and its items: DST_NAME for a well-known name, the payload's PAYLOAD_VEC and
    PAYLOAD_MEMFD items in order (vec_item, memfd_item: the caller places what they point to),
    BLOOM_FILTER, FDS. Shared with the classic endpoint (classic/commands.py)."""
    items = []
    if isinstance(destination, str):
        items.append(string_item(Item.DST_NAME, destination))
        dst_id = DST_ID_NAME
    else:
        dst_id = destination
    items.extend(payload_items)
    if bloom is not None:
        items.append(item(Item.BLOOM_FILTER, bloom_payload(bloom)))
    if fds:
        items.append(item(Item.FDS, b"".join(fd.to_bytes(4, "little", signed=True) for fd in fds)))
    body = b"".join(items)
    return structs.MSG.pack(structs.MSG.size + len(body), flags, priority, dst_id, 0, payload_type,
                            cookie, timeout_or_reply) + body
