"""Kernel notifications: messages the bus itself sends (src_id 0).

Broadcast ones tell of connections coming and going (ID_ADD/ID_REMOVE) and of names changing hands
(NAME_ADD/NAME_REMOVE/NAME_CHANGE); they reach the connections whose matches select them (and may
see the name), monitors first. Unicast ones tell a caller that its call will get no reply
(REPLY_TIMEOUT, REPLY_DEAD). A receiver that has no room loses a broadcast (counted, as kdbus
does) and a unicast one silently.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..abi import structs
from ..abi.constants import DST_ID_BROADCAST
from ..errors import KdbusError
from . import message as msgs
from .policy import may_see_name

if TYPE_CHECKING:
    from .bus import Bus
    from .connection import Connection
    from .reply import Reply

log = logging.getLogger("kdbusfs.notify")


def id_change(bus: Bus, kind: int, conn: Connection) -> None:
    """ID_ADD or ID_REMOVE of `conn`."""
    _broadcast(bus, kind, structs.NOTIFY_ID_CHANGE.pack(conn.id, conn.flags))


def name_change(bus: Bus, kind: int, name: str, old: tuple[int, int], new: tuple[int, int]) -> None:
    """NAME_ADD, NAME_REMOVE or NAME_CHANGE: (id, flags) of the old and the new owner."""
    payload = structs.NOTIFY_NAME_CHANGE.pack(*old, *new) + name.encode() + b"\0"
    _broadcast(bus, kind, payload, name)


def reply_lost(bus: Bus, reply: Reply, item_type: int) -> None:
    """REPLY_TIMEOUT or REPLY_DEAD to the caller of an asynchronous call."""
    caller = reply.caller
    if not caller.active:
        return
    msg = msgs.stage_kernel(caller.id, reply.cookie, item_type)
    bus.kernel_notifications += 1
    bus.stamp(msg)
    bus.to_monitors(msg, None, None)
    try:
        caller.enqueue(msg, None, None)
    except KdbusError as exc:
        log.info("notification %#x to %d lost: %s", item_type, caller.id, exc)


def _broadcast(bus: Bus, item_type: int, payload: bytes, name: str | None = None) -> None:
    msg = msgs.stage_kernel(DST_ID_BROADCAST, 0, item_type, payload)
    bus.kernel_notifications += 1
    bus.stamp(msg)
    bus.to_monitors(msg, None, None)
    connections = bus.connections
    # Only the connections with a match rule for this kind are visited, not the whole bus.
    for conn_id in bus.notification_subscribers.candidates(item_type):
        conn = connections.get(conn_id)
        if conn is None:
            continue
        matches = conn.matches
        if matches is None or not matches.match_kernel(item_type, payload):
            continue
        if name is not None and not may_see_name(conn, conn.opener, name):
            continue
        try:
            conn.enqueue(msg, None, None)
        except KdbusError:
            conn.lose_message()
