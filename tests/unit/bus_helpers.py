"""Driving the bus model in-process through its ioctls, and reading what lands in pools.

Builds on helpers.py (the fake caller, HELLO and BUS_MAKE shortcuts). Every command goes through
kdbusfs.handle.ioctl() as the FUSE edge would run it, so the frame (copy-in, flag and item checks,
write-back) is exercised together with the model; results are read the way a client reads them:
from the command struct written back into the caller's memory, and from the connection's pool.

Memory of a fake caller: command structs at 0, the kdbus_msg of a SEND at MSG_AT, payload bytes at
PAYLOAD_AT.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from typing import Any

from helpers import BASE, CREATOR, Conn, FakeCaller, cmd_bytes, hello_cmd, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    DST_ID_BROADCAST,
    HELLO_ACTIVATOR,
    HELLO_MONITOR,
    HELLO_POLICY_HOLDER,
    LIST_NAMES,
    MATCH_ID_ANY,
    MSG_EXPECT_REPLY,
    MSG_SIGNAL,
    PAYLOAD_DBUS,
    SEND_SYNC_REPLY,
    Cmd,
    Item,
)
from kdbusfs.abi.items import item, read_items, string_item
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.connection import Connection
from kdbusfs.bus.endpoint import Endpoint
from kdbusfs.bus.message import NULL_VEC_OFFSET
from kdbusfs.bus.metadata import Creds
from kdbusfs.bus.pool import Pool
from kdbusfs.handle import Handle, HandleType, Pending, ioctl

MSG_AT = 0x4000
PAYLOAD_AT = 0x8000
# An absolute CLOCK_MONOTONIC deadline no test run reaches (sync calls compare it with the clock).
FAR_FUTURE = 1 << 62
# The bus bloom size helpers.make_bus() chooses.
BLOOM_SIZE = 64
SERVICE = "org.example.service"

_U64 = struct.Struct("<Q")
_NAME_CHANGE = struct.Struct("<QQQQ")


def conn_of(conn: Conn) -> Connection:
    """The model's connection behind a connected handle."""
    assert conn.handle.conn is not None
    return conn.handle.conn


# -- connecting ---------------------------------------------------------------------------------

def connect_on(endpoint: Endpoint, creds: Creds = CREATOR, caller: FakeCaller | None = None,
               **hello: Any) -> Conn:
    """HELLO on a fresh handle opened on `endpoint` (default or custom) by `creds`."""
    handle = Handle(endpoint, creds)
    caller = caller if caller is not None else FakeCaller(creds)
    out = run(handle, caller, Cmd.HELLO, hello_cmd(**hello))
    return Conn(handle, caller, structs.CMD_HELLO.unpack(out))


def access_item(kind: int, level: int, ident: int = 0) -> bytes:
    """A POLICY_ACCESS item: {USER uid | GROUP gid | WORLD} gets SEE, TALK or OWN."""
    return item(Item.POLICY_ACCESS, structs.POLICY_ACCESS.pack(kind, level, ident))


def policy_items(name: str, *accesses: bytes) -> bytes:
    return string_item(Item.NAME, name) + b"".join(accesses)


def activator(bus: Bus, name: str = SERVICE, *accesses: bytes, **hello: Any) -> Conn:
    """An activator for `name` (bus owner rights: the bus creator opens it)."""
    flags = HELLO_ACTIVATOR | hello.pop("flags", 0)
    return connect_on(bus.default_endpoint, flags=flags, items=policy_items(name, *accesses), **hello)


def policy_holder(bus: Bus, name: str, *accesses: bytes) -> Conn:
    return connect_on(bus.default_endpoint, flags=HELLO_POLICY_HOLDER, items=policy_items(name, *accesses))


def monitor(bus: Bus, **hello: Any) -> Conn:
    return connect_on(bus.default_endpoint, flags=HELLO_MONITOR, **hello)


@dataclass
class EndpointOwner:
    """The handle that made a custom endpoint (ENDPOINT_UPDATE runs on it)."""

    handle: Handle
    caller: FakeCaller

    @property
    def endpoint(self) -> Endpoint:
        assert self.handle.endpoint is not None
        return self.handle.endpoint

    def update(self, items: bytes) -> None:
        run(self.handle, self.caller, Cmd.ENDPOINT_UPDATE, cmd_bytes(structs.CMD, items))


def make_endpoint(bus: Bus, name: str = "1000-custom", creds: Creds = CREATOR) -> EndpointOwner:
    handle = Handle(bus.default_endpoint, creds)
    caller = FakeCaller(creds)
    run(handle, caller, Cmd.ENDPOINT_MAKE, cmd_bytes(structs.CMD, string_item(Item.MAKE_NAME, name)))
    assert handle.type is HandleType.EP_OWNER
    return EndpointOwner(handle, caller)


# -- sending ------------------------------------------------------------------------------------

def msg_bytes(dst_id: int, items: bytes = b"", *, flags: int = 0, priority: int = 0, src_id: int = 0,
              payload_type: int = PAYLOAD_DBUS, cookie: int = 0, timeout_or_reply: int = 0) -> bytes:
    """A kdbus_msg as a client builds it: header, then items."""
    return structs.MSG.pack(structs.MSG.size + len(items), flags, priority, dst_id, src_id, payload_type,
                            cookie, timeout_or_reply) + items


def vec_item(caller: FakeCaller, data: bytes, at: int = PAYLOAD_AT) -> bytes:
    """A PAYLOAD_VEC pointing at `data`, placed in the sender's memory at `at`."""
    return item(Item.PAYLOAD_VEC, structs.VEC.pack(len(data), caller.place(data, at)))


def null_vec_item(size: int) -> bytes:
    return item(Item.PAYLOAD_VEC, structs.VEC.pack(size, 0))


def dst_name_item(name: str) -> bytes:
    return string_item(Item.DST_NAME, name)


def bloom_filter_item(data: bytes = bytes(BLOOM_SIZE), generation: int = 0) -> bytes:
    return item(Item.BLOOM_FILTER, _U64.pack(generation) + data)


def send_raw(conn: Conn, msg: bytes, cmd_flags: int = 0, cmd_items: bytes = b"") -> Any:
    """SEND `msg`; returns the kdbus_cmd_send as written back, or the Pending of a synchronous call."""
    address = conn.caller.place(msg, MSG_AT)
    cmd = cmd_bytes(structs.CMD_SEND, cmd_items, flags=cmd_flags, msg_address=address)
    result = ioctl(conn.handle, Cmd.SEND, conn.caller.place(cmd), b"", conn.caller)
    if isinstance(result, Pending):
        return result
    return structs.CMD_SEND.unpack(conn.caller.read(BASE, structs.CMD_SEND.size))


def send(conn: Conn, dst_id: int, items: bytes = b"", **fields: int) -> Any:
    """A unicast (or, with dst_id = DST_ID_BROADCAST and SIGNAL, a broadcast)."""
    return send_raw(conn, msg_bytes(dst_id, items, **fields))


def send_to_name(conn: Conn, name: str, items: bytes = b"", dst_id: int = 0, **fields: int) -> Any:
    return send_raw(conn, msg_bytes(dst_id, items + dst_name_item(name), **fields))


def broadcast(conn: Conn, bloom: bytes = bytes(BLOOM_SIZE), generation: int = 0, items: bytes = b"",
              **fields: int) -> Any:
    return send(conn, DST_ID_BROADCAST, items + bloom_filter_item(bloom, generation),
                flags=MSG_SIGNAL | fields.pop("flags", 0), **fields)


def unicast_signal(conn: Conn, dst_id: int, bloom: bytes = bytes(BLOOM_SIZE), items: bytes = b"",
                   **fields: int) -> Any:
    return send(conn, dst_id, items + bloom_filter_item(bloom), flags=MSG_SIGNAL, **fields)


def call(conn: Conn, dst_id: int, cookie: int, timeout_ns: int = FAR_FUTURE, items: bytes = b"",
         **fields: int) -> Any:
    """An asynchronous method call: EXPECT_REPLY with an absolute deadline."""
    return send(conn, dst_id, items, flags=MSG_EXPECT_REPLY | fields.pop("flags", 0), cookie=cookie,
                timeout_or_reply=timeout_ns, **fields)


def call_sync(conn: Conn, dst_id: int, cookie: int, timeout_ns: int = FAR_FUTURE,
              items: bytes = b"", cmd_items: bytes = b"") -> Pending:
    """A synchronous call: the ioctl blocks, so the model hands back what the edge waits on."""
    msg = msg_bytes(dst_id, items, flags=MSG_EXPECT_REPLY, cookie=cookie, timeout_or_reply=timeout_ns)
    pending = send_raw(conn, msg, SEND_SYNC_REPLY, cmd_items)
    assert isinstance(pending, Pending)
    return pending


def reply(conn: Conn, dst_id: int, cookie_reply: int, items: bytes = b"", cookie: int = 0) -> Any:
    return send(conn, dst_id, items, cookie=cookie, timeout_or_reply=cookie_reply)


# -- receiving ----------------------------------------------------------------------------------

def recv(conn: Conn, flags: int = 0, priority: int = 0) -> Any:
    """RECV; returns the kdbus_cmd_recv the ioctl answers with (raises KdbusError on EAGAIN)."""
    out = run(conn.handle, conn.caller, Cmd.RECV, cmd_bytes(structs.CMD_RECV, flags=flags,
                                                              priority=priority))
    return structs.CMD_RECV.unpack(out)


def recv_eagain(conn: Conn, flags: int = 0, priority: int = 0) -> Any:
    """A RECV that finds nothing: EAGAIN, with the struct written back as kdbus does then."""
    with raises_errno(errno.EAGAIN):
        run(conn.handle, conn.caller, Cmd.RECV, cmd_bytes(structs.CMD_RECV, flags=flags,
                                                          priority=priority))
    return structs.CMD_RECV.unpack(conn.caller.read(BASE, structs.CMD_RECV.size))


def free(conn: Conn, offset: int) -> None:
    run(conn.handle, conn.caller, Cmd.FREE, cmd_bytes(structs.CMD_FREE, offset=offset))


@dataclass(frozen=True)
class Message:
    """A message as its receiver finds it in its pool."""

    offset: int
    header: Any  # the kdbus_msg named tuple
    items: list[tuple[int, bytes]]
    payload: bytes
    pool_bytes: bytes = field(repr=False)

    def all(self, item_type: int) -> list[bytes]:
        return [payload for kind, payload in self.items if kind == item_type]

    def first(self, item_type: int) -> bytes:
        found = self.all(item_type)
        assert found, f"no item {Item(item_type).name} in {[Item(k).name for k, _ in self.items]}"
        return found[0]

    @property
    def types(self) -> list[int]:
        return [kind for kind, _ in self.items]

    @property
    def seqnum(self) -> int:
        return int(_U64.unpack_from(self.first(Item.TIMESTAMP))[0])

    @property
    def notification(self) -> tuple[int, bytes]:
        """A kernel message's notification item: (type, payload)."""
        assert self.header.src_id == 0 and self.header.payload_type == 0, self.header
        return self.items[0]


def read_message(pool: Pool, offset: int) -> Message:
    buffer = pool.buffer
    header = structs.MSG.unpack(bytes(buffer[offset : offset + structs.MSG.size]))
    raw = bytes(buffer[offset : offset + header.size])
    items = list(read_items(raw, structs.MSG.size))
    payload = b""
    for kind, data in items:
        if kind == Item.PAYLOAD_OFF:
            size, at = structs.VEC.struct.unpack(data)
            if at != NULL_VEC_OFFSET:
                payload += bytes(buffer[offset + at : offset + at + size])
    return Message(offset, header, items, payload, raw)


def receive(conn: Conn, flags: int = 0, priority: int = 0) -> Message:
    """RECV the next message and read it from the pool (without FREEing it)."""
    got = recv(conn, flags, priority)
    return read_message(conn_of(conn).pool, got.msg_offset)


def drain(conn: Conn) -> list[Message]:
    """RECV and FREE every queued message, oldest first."""
    found = []
    while conn_of(conn).queue:
        got = recv(conn)
        found.append(read_message(conn_of(conn).pool, got.msg_offset))
        free(conn, got.msg_offset)
    return found


def from_connections(conn: Conn) -> list[Message]:
    """RECV and FREE everything queued; the messages from connections, leaving out the bus's own
    notifications (monitors get all of them)."""
    return [m for m in drain(conn) if m.header.src_id != 0]


def queued(conn: Conn) -> list[Message]:
    """The queued messages, oldest first, read without receiving them."""
    c = conn_of(conn)
    return [read_message(c.pool, entry.slice.offset) for entry in c.queue.entries.values()]


def notifications(conn: Conn) -> list[tuple[int, bytes]]:
    """RECV every queued message; all must be kernel notifications: (type, payload), in order."""
    return [m.notification for m in drain(conn)]


def id_change(conn_id: int, flags: int = 0) -> bytes:
    return structs.NOTIFY_ID_CHANGE.pack(conn_id, flags)


def name_change(name: str, old: tuple[int, int], new: tuple[int, int]) -> bytes:
    """The payload of a NAME_ADD / NAME_CHANGE / NAME_REMOVE notification."""
    return _NAME_CHANGE.pack(*old, *new) + name.encode() + b"\0"


# -- names --------------------------------------------------------------------------------------

def acquire(conn: Conn, name: str = SERVICE, flags: int = 0) -> int:
    """NAME_ACQUIRE; returns the return_flags written back into the caller's struct."""
    run(conn.handle, conn.caller, Cmd.NAME_ACQUIRE, cmd_bytes(structs.CMD, string_item(Item.NAME, name),
                                                              flags=flags))
    return conn.caller.u64(BASE + 16)


def release(conn: Conn, name: str = SERVICE) -> None:
    run(conn.handle, conn.caller, Cmd.NAME_RELEASE, cmd_bytes(structs.CMD, string_item(Item.NAME, name)))


@dataclass(frozen=True)
class Listed:
    """One kdbus_info record of KDBUS_CMD_LIST: a name record, or a bare unique id (name None)."""

    id: int
    conn_flags: int
    name_flags: int | None = None
    name: str | None = None


def list_bus(conn: Conn, flags: int = LIST_NAMES) -> list[Listed]:
    out = structs.CMD_LIST.unpack(run(conn.handle, conn.caller, Cmd.LIST, cmd_bytes(structs.CMD_LIST,
                                                                                   flags=flags)))
    pool = conn_of(conn).pool
    if out.list_size == 0:
        assert out.offset == pool.size
        return []
    data = bytes(pool.buffer[out.offset : out.offset + out.list_size])
    free(conn, out.offset)
    records = []
    pos = 0
    while pos < len(data):
        size, conn_id, conn_flags = structs.INFO.unpack(data, pos)
        named = [payload for kind, payload in read_items(data, pos + structs.INFO.size, pos + size)
                 if kind == Item.OWNED_NAME]
        if named:
            records.append(Listed(conn_id, conn_flags, _U64.unpack_from(named[0])[0],
                                  named[0][8:-1].decode()))
        else:
            records.append(Listed(conn_id, conn_flags))
        pos += (size + 7) & ~7
    return records


def conn_info(conn: Conn, conn_id: int = 0, name: str | None = None, attach: int = 0) -> Any:
    """CONN_INFO; returns the kdbus_info record it published (id, flags) and frees it."""
    items = string_item(Item.NAME, name) if name is not None else b""
    out = structs.CMD_INFO.unpack(run(conn.handle, conn.caller, Cmd.CONN_INFO,
                                      cmd_bytes(structs.CMD_INFO, items, id=conn_id, attach_flags=attach)))
    info = structs.INFO.unpack(bytes(conn_of(conn).pool.buffer[out.offset : out.offset + structs.INFO.size]))
    free(conn, out.offset)
    return info


# -- matches ------------------------------------------------------------------------------------

def add_match(conn: Conn, rules: bytes = b"", cookie: int = 1, flags: int = 0) -> None:
    run(conn.handle, conn.caller, Cmd.MATCH_ADD, cmd_bytes(structs.CMD_MATCH, rules, cookie=cookie,
                                                           flags=flags))


def remove_match(conn: Conn, cookie: int = 1) -> None:
    run(conn.handle, conn.caller, Cmd.MATCH_REMOVE, cmd_bytes(structs.CMD_MATCH, cookie=cookie))


def id_rule(kind: int, conn_id: int = MATCH_ID_ANY) -> bytes:
    """ID_ADD / ID_REMOVE rule for one connection id, or any."""
    return item(kind, id_change(conn_id))


def name_rule(kind: int, name: str | None = None, old_id: int = MATCH_ID_ANY,
              new_id: int = MATCH_ID_ANY) -> bytes:
    """NAME_ADD / NAME_REMOVE / NAME_CHANGE rule; the name is optional."""
    tail = name.encode() + b"\0" if name is not None else b""
    return item(kind, _NAME_CHANGE.pack(old_id, 0, new_id, 0) + tail)


def bloom_mask_rule(*generations: bytes) -> bytes:
    return item(Item.BLOOM_MASK, b"".join(generations))


# An all-zero mask matches every bloom filter, and a rule for messages never matches a kernel
# notification: an entry with it takes every signal and nothing else.
ANY_SIGNAL = bloom_mask_rule(bytes(BLOOM_SIZE))


def bits(size: int = BLOOM_SIZE, **byte_values: int) -> bytes:
    """A bloom filter or mask of `size` bytes with the given bytes set: bits(b0=0x55, b63=0x80)."""
    data = bytearray(size)
    for key, value in byte_values.items():
        data[int(key.removeprefix("b"))] = value
    return bytes(data)


# -- descriptors --------------------------------------------------------------------------------

class FakeFiles:
    """A sender whose fds all check out: the daemon's duplicates are numbered from 1000."""

    def __init__(self) -> None:
        self.last = 1000
        self.released: list[int] = []

    def _dup(self) -> int:
        self.last += 1
        return self.last

    def check_fds(self, fds: list[int]) -> list[int]:
        return [self._dup() for _ in fds]

    def check_memfd(self, fd: int, start: int, size: int) -> int:
        return self._dup()

    def pollable(self, fd: int) -> int:
        return self._dup()

    def release(self, held: list[int]) -> None:
        self.released += held


class FilesCaller(FakeCaller):
    """A fake task with descriptors to pass; like any fake task it cannot be given any (a RECV
    closes what a message passes, and the numbers stay -1)."""

    def __init__(self, creds: Creds = CREATOR) -> None:
        super().__init__(creds)
        self.sender_files = FakeFiles()
        self.closed: list[int] = []

    def files(self) -> FakeFiles:
        return self.sender_files

    def close_fd(self, fd: int) -> None:
        self.closed.append(fd)


def cancel_fd_item(fd: int) -> bytes:
    """A SEND's CANCEL_FD item (a 4-byte payload, padded)."""
    return item(Item.CANCEL_FD, struct.pack("<i", fd))


def fds_item(*fds: int) -> bytes:
    return item(Item.FDS, struct.pack(f"<{len(fds)}i", *fds))

