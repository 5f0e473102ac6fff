"""Received messages: a pool slice parsed into Python objects, payload copied out.

A slice holds `kdbus_msg`, the sender's items (PAYLOAD_VEC rewritten to PAYLOAD_OFF, relative to the
message), the metadata items the receiver gets, then the payload bytes (KDBUS-SPEC.md §5.10). Kernel
notifications carry one notification item and a TIMESTAMP (§5.8).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..abi import structs
from ..abi.constants import (
    DST_ID_BROADCAST,
    MSG_EXPECT_REPLY,
    MSG_SIGNAL,
    SRC_ID_KERNEL,
    Item,
)
from ..abi.items import read_items
from .metadata import Metadata, MetadataReader, text

# A PAYLOAD_OFF offset that stands for zeros not stored in the slice (a vec without an address).
ZEROS_OFFSET = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class IdChange:
    """ID_ADD or ID_REMOVE: a connection came or went; `flags` are its HELLO flags."""

    kind: Item
    id: int
    flags: int


@dataclass(frozen=True, slots=True)
class NameChange:
    """NAME_ADD, NAME_REMOVE or NAME_CHANGE: the previous and the new primary owner (0 for none)."""

    kind: Item
    name: str
    old_id: int
    old_flags: int
    new_id: int
    new_flags: int


@dataclass(frozen=True, slots=True)
class ReplyLost:
    """REPLY_TIMEOUT or REPLY_DEAD: the call with `cookie` will get no reply."""

    kind: Item
    cookie: int


Notification = IdChange | NameChange | ReplyLost


@dataclass(frozen=True, slots=True)
class Memfd:
    """A PAYLOAD_MEMFD part: `fd` is installed in receivers started with `kdbusfs run`, else -1."""

    fd: int
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class Bloom:
    """A message's bloom filter: its generation and the filter bytes (the bus's bloom size)."""

    generation: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Message:
    """A message as this connection received it."""

    src_id: int
    dst_id: int
    cookie: int
    flags: int
    priority: int
    payload_type: int
    # The deadline of a call (EXPECT_REPLY), else 0.
    timeout_ns: int
    # The cookie of the call a reply answers, else 0.
    cookie_reply: int
    # The data of all payload vectors, back to back; each vector also on its own in `parts`.
    payload: bytes
    parts: tuple[bytes, ...] = ()
    memfds: tuple[Memfd, ...] = ()
    fds: tuple[int, ...] = ()
    bloom: Bloom | None = None
    dst_name: str | None = None
    metadata: Metadata = Metadata()
    notification: Notification | None = None
    # RECV's msg.return_flags (KDBUS_RECV_RETURN_INCOMPLETE_FDS).
    return_flags: int = 0
    # Messages this connection lost (quota, full pool) since the previous RECV.
    dropped: int = 0

    @property
    def is_kernel(self) -> bool:
        return self.src_id == SRC_ID_KERNEL

    @property
    def is_broadcast(self) -> bool:
        return self.dst_id == DST_ID_BROADCAST

    @property
    def is_signal(self) -> bool:
        return bool(self.flags & MSG_SIGNAL)

    @property
    def expects_reply(self) -> bool:
        return bool(self.flags & MSG_EXPECT_REPLY)

    @property
    def is_reply(self) -> bool:
        return not self.expects_reply and self.cookie_reply != 0


def _name_change(kind: Item, payload: bytes) -> NameChange:
    old_id, old_flags, new_id, new_flags = structs.NOTIFY_NAME_CHANGE.unpack(payload)
    return NameChange(kind, text(payload[structs.NOTIFY_NAME_CHANGE.size :]), old_id, old_flags, new_id,
                      new_flags)


_NAME_CHANGES = (Item.NAME_ADD, Item.NAME_REMOVE, Item.NAME_CHANGE)
_ID_CHANGES = (Item.ID_ADD, Item.ID_REMOVE)
_REPLIES_LOST = (Item.REPLY_TIMEOUT, Item.REPLY_DEAD)


def parse_message(data: bytes, return_flags: int = 0, dropped: int = 0) -> Message:
    """The message in `data`, a whole pool slice (header, items, payload)."""
    header = structs.MSG.unpack(data)
    expects_reply = bool(header.flags & MSG_EXPECT_REPLY)
    parts: list[bytes] = []
    memfds: list[Memfd] = []
    fds: tuple[int, ...] = ()
    bloom: Bloom | None = None
    dst_name: str | None = None
    notification: Notification | None = None
    metadata = MetadataReader()
    for kind, payload in read_items(data, structs.MSG.size, header.size):
        if metadata.take(kind, payload):
            continue
        if kind == Item.PAYLOAD_OFF:
            size, offset = structs.VEC.unpack(payload)
            parts.append(bytes(size) if offset == ZEROS_OFFSET else data[offset : offset + size])
        elif kind == Item.PAYLOAD_MEMFD:
            start, size, fd, _ = structs.MEMFD.unpack(payload)
            memfds.append(Memfd(fd, start, size))
        elif kind == Item.FDS:
            fds = tuple(int.from_bytes(payload[i : i + 4], "little", signed=True)
                        for i in range(0, len(payload), 4))
        elif kind == Item.BLOOM_FILTER:
            generation = structs.BLOOM_FILTER.unpack(payload).generation
            bloom = Bloom(generation, payload[structs.BLOOM_FILTER.size :])
        elif kind == Item.DST_NAME:
            dst_name = text(payload)
        elif kind in _NAME_CHANGES:
            notification = _name_change(Item(kind), payload)
        elif kind in _ID_CHANGES:
            changed, flags = structs.NOTIFY_ID_CHANGE.unpack(payload)
            notification = IdChange(Item(kind), changed, flags)
        elif kind in _REPLIES_LOST:
            notification = ReplyLost(Item(kind), header.timeout_ns)
    return Message(
        src_id=header.src_id, dst_id=header.dst_id, cookie=header.cookie, flags=header.flags,
        priority=header.priority, payload_type=header.payload_type,
        timeout_ns=header.timeout_ns if expects_reply else 0,
        cookie_reply=0 if expects_reply else header.timeout_ns,
        payload=b"".join(parts), parts=tuple(parts), memfds=tuple(memfds), fds=fds, bloom=bloom,
        dst_name=dst_name, metadata=metadata.metadata(), notification=notification,
        return_flags=return_flags, dropped=dropped)
