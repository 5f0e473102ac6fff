"""A typed Python client for kdbus over a kdbusfs mount.

Everything a kdbus client does: make a bus, connect (ordinary, monitor, activator, policy holder),
send by id or name, call and reply, emit signals with bloom filters, receive parsed messages with
their metadata and notifications, own names, add matches, and query the bus. Commands that fail
raise `CommandError` (an `OSError` with kdbus's errno; also `TimeoutError`, `PermissionError`, ...
where Python has one), e.g. ``KDBUS_CMD_SEND: ENXIO (no such peer)``.

Make a bus and talk over it::

    from kdbusfs.client import BloomFilter, make_bus, match

    with make_bus("/sys/fs/kdbus", "example") as bus:        # the bus "<euid>-example"
        server, client = bus.connect(), bus.connect()
        server.acquire_name("org.example.Clock")
        client.send("org.example.Clock", b"ping", expect_reply=True, timeout=5)
        call = server.recv(timeout=5)
        server.reply(call, b"pong")
        assert client.recv(timeout=5).payload == b"pong"

A synchronous call (use another thread or process for the peer)::

    reply = client.call(server.id, b"ping", timeout=1)       # TimeoutError if none comes

Signals, selected by matches and sd-bus-style bloom filters::

    mask = BloomFilter.for_match(interface="org.example.Clock")
    client.add_match([match.bloom_mask(mask)], cookie=1)
    server.emit(b"tick", BloomFilter.for_signal(interface="org.example.Clock", member="Tick"))
    signal = client.recv(timeout=5)

Notifications, metadata and queries::

    client.add_match([match.name_added("org.example.Clock")], cookie=2)
    note = client.recv(timeout=5).notification                # NameChange(kind=NAME_ADD, ...)
    info = client.conn_info("org.example.Clock")              # ConnectionInfo with .metadata
    names = [entry.name for entry in client.list_peers() if entry.name]

Under trio, `kdbusfs.client.aio.receive(conn)` and `aio.call(conn, ...)` wait without blocking
other tasks.
"""

from ..abi.constants import ATTACH_ALL, DST_ID_BROADCAST, Attach
from . import aio, match
from .bloom import BloomFilter, BloomParameters
from .bus import Bus, make_bus
from .connection import DEFAULT_POOL_SIZE, Connection, Kind, NameOwnership
from .errors import CommandError
from .info import BusCreatorInfo, ConnectionInfo, ListEntry
from .message import Bloom, IdChange, Memfd, Message, NameChange, Notification, ReplyLost
from .metadata import Audit, Caps, Creds, Metadata, OwnedName, Pids, Timestamp
from .policy import PolicyAccess

__all__ = [
    "ATTACH_ALL", "DEFAULT_POOL_SIZE", "DST_ID_BROADCAST", "Attach", "Audit", "Bloom", "BloomFilter",
    "BloomParameters", "Bus", "BusCreatorInfo", "Caps", "CommandError", "Connection",
    "ConnectionInfo", "Creds", "IdChange", "Kind", "ListEntry", "Memfd", "Message", "Metadata",
    "NameChange", "NameOwnership", "Notification", "OwnedName", "Pids", "PolicyAccess", "ReplyLost",
    "Timestamp", "aio", "make_bus", "match",
]
