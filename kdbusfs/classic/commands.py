"""A classic client's kdbus connection, driven in-process through the one command dispatch.

Every command goes through `handle.ioctl`, the same frame and bodies a FUSE ioctl or a launched
client's notification reaches, with a `ClassicCaller` whose memory is the daemon's own: policy,
quotas, names, matches, monitors and notifications stay in one place. Answers published in the pool
are read from the pool's memory and freed at once (the client never maps it).
"""

from __future__ import annotations

import errno

from ..abi import structs
from ..abi.constants import (
    ATTACH_ALL,
    DST_ID_NAME,
    HELLO_ACCEPT_FD,
    MATCH_REPLACE,
    PAYLOAD_DBUS,
    Cmd,
    Item,
)
from ..abi.items import item, string_item
from ..bus.connection import Connection
from ..bus.endpoint import Endpoint
from ..bus.metadata import UserNamespace
from ..client.info import ConnectionInfo, ListEntry, parse_connection_info, parse_list
from ..client.message import Message, parse_message
from ..client.outgoing import bloom_payload
from ..errors import KdbusError
from ..handle import Connected, Handle, ioctl
from .caller import ClassicCaller


class ClassicConnection:
    """The kdbus connection behind one classic client."""

    def __init__(self, endpoint: Endpoint, caller: ClassicCaller, userns: UserNamespace) -> None:
        self.caller = caller
        self.handle = Handle(endpoint, caller.creds(), opener_userns=userns)
        self.conn: Connection | None = None

    @property
    def id(self) -> int:
        assert self.conn is not None
        return self.conn.id

    def _run(self, cmd: Cmd, struct: bytearray) -> bytearray:
        """Run `cmd` on `struct` (placed in the arena first); returns the struct as written back."""
        arena = self.caller.arena
        address = arena.place(struct)
        try:
            out = ioctl(self.handle, cmd, address, b"", self.caller)
        finally:
            arena.reset()
        if isinstance(out, Connected):
            self.conn = out.conn
            out = out.out
        if isinstance(out, bytes) and out:
            struct[: len(out)] = out
        elif not isinstance(out, bytes):
            raise AssertionError(f"{cmd.name} of a classic client blocked")
        return struct

    def _slice(self, offset: int, size: int) -> bytes:
        """A published pool slice's bytes, freed at once."""
        assert self.conn is not None
        pool = self.conn.pool
        data = bytes(pool.buffer[offset : offset + size])
        self.free(offset)
        return data

    def free(self, offset: int) -> None:
        self._run(Cmd.FREE, bytearray(structs.CMD_FREE.pack(structs.CMD_FREE.size, 0, 0, offset)))

    # -- setting up and tearing down ------------------------------------------------------------
    def hello(self, pool_size: int, accept_fds: bool, description: str, flags: int = 0) -> int:
        items = string_item(Item.CONN_DESCRIPTION, description)
        flags |= HELLO_ACCEPT_FD if accept_fds else 0
        struct = bytearray(structs.CMD_HELLO.pack(
            structs.CMD_HELLO.size + len(items), flags, 0, ATTACH_ALL, 0, 0,
            0, pool_size, 0, 0, bytes(16)) + items)
        out = structs.CMD_HELLO.unpack(self._run(Cmd.HELLO, struct))
        # The bloom parameters HELLO published: nobody reads them here.
        self.free(out.offset)
        return self.id

    def close(self) -> None:
        """The client is gone: as the last close of a connection's file."""
        self.handle.release()

    # -- messages ------------------------------------------------------------------------------
    def send(self, destination: int | str, payload: bytes, *, flags: int, cookie: int,
             timeout_or_reply: int, bloom: bytes | None = None, fds: list[int] | None = None) -> None:
        arena = self.caller.arena
        payload_address = arena.place(payload)
        items = []
        dst_id = destination if isinstance(destination, int) else DST_ID_NAME
        if isinstance(destination, str):
            items.append(string_item(Item.DST_NAME, destination))
        items.append(item(Item.PAYLOAD_VEC, structs.VEC.pack(len(payload), payload_address)))
        if bloom is not None:
            items.append(item(Item.BLOOM_FILTER, bloom_payload(bloom)))
        if fds:
            items.append(item(Item.FDS, b"".join(fd.to_bytes(4, "little", signed=True) for fd in fds)))
        body = b"".join(items)
        msg = structs.MSG.pack(structs.MSG.size + len(body), flags, 0, dst_id, 0, PAYLOAD_DBUS, cookie,
                               timeout_or_reply) + body
        msg_address = arena.place(msg)
        struct = bytearray(structs.CMD_SEND.pack(structs.CMD_SEND.size, 0, 0, msg_address, 0, 0, 0))
        self._run(Cmd.SEND, struct)

    def recv(self) -> Message | None:
        """The next queued message (its descriptors in caller.received_fds), or None."""
        self.caller.received_fds = []
        struct = bytearray(structs.CMD_RECV.pack(structs.CMD_RECV.size, 0, 0, 0, 0, 0, 0, 0))
        try:
            out = structs.CMD_RECV.unpack(self._run(Cmd.RECV, struct))
        except KdbusError as exc:
            if exc.errno == errno.EAGAIN:
                return None
            raise
        data = self._slice(out.msg_offset, out.msg_msg_size)
        return parse_message(data, out.msg_return_flags, out.dropped_msgs)

    # -- names, matches, queries --------------------------------------------------------------
    def name_acquire(self, name: str, flags: int) -> int:
        """NAME_ACQUIRE; the return flags (kdbus's NAME_* bits)."""
        items = string_item(Item.NAME, name)
        struct = bytearray(structs.CMD.pack(structs.CMD.size + len(items), flags, 0) + items)
        return structs.CMD.unpack(self._run(Cmd.NAME_ACQUIRE, struct)).return_flags

    def name_release(self, name: str) -> None:
        items = string_item(Item.NAME, name)
        self._run(Cmd.NAME_RELEASE, bytearray(structs.CMD.pack(structs.CMD.size + len(items), 0, 0) + items))

    def match_add(self, cookie: int, rules: list[bytes], replace: bool = False) -> None:
        items = b"".join(rules)
        struct = bytearray(structs.CMD_MATCH.pack(structs.CMD_MATCH.size + len(items),
                                                  MATCH_REPLACE if replace else 0, 0, cookie) + items)
        self._run(Cmd.MATCH_ADD, struct)

    def match_remove(self, cookie: int) -> None:
        self._run(Cmd.MATCH_REMOVE, bytearray(structs.CMD_MATCH.pack(structs.CMD_MATCH.size, 0, 0, cookie)))

    def list(self, flags: int) -> list[ListEntry]:
        struct = bytearray(structs.CMD_LIST.pack(structs.CMD_LIST.size, flags, 0, 0, 0))
        out = structs.CMD_LIST.unpack(self._run(Cmd.LIST, struct))
        if not out.list_size:
            return []
        return parse_list(self._slice(out.offset, out.list_size))

    def conn_info(self, target: int | str, attach_flags: int) -> ConnectionInfo:
        items = string_item(Item.NAME, target) if isinstance(target, str) else b""
        struct = bytearray(structs.CMD_INFO.pack(structs.CMD_INFO.size + len(items), 0, 0,
                                                 target if isinstance(target, int) else 0, attach_flags, 0, 0)
                           + items)
        out = structs.CMD_INFO.unpack(self._run(Cmd.CONN_INFO, struct))
        return parse_connection_info(self._slice(out.offset, out.info_size))
