"""A classic client's kdbus connection, driven in-process through the one command dispatch.

Every command goes through `handle.ioctl`, the same frame and bodies a FUSE ioctl or a launched
client's notification reaches, with a `ClassicCaller` whose memory is the daemon's own: policy,
quotas, names, matches, monitors and notifications stay in one place. Answers published in the pool
are read from the pool's memory and freed at once (the client never maps it).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
from collections.abc import Sequence
from typing import Any

from .. import limits
from ..abi import structs
from ..abi.constants import ATTACH_ALL, HELLO_ACCEPT_FD, MATCH_REPLACE, Cmd, Item
from ..abi.items import read_items, string_item
from ..abi.structs import Layout
from ..bus.connection import Connection
from ..bus.endpoint import Endpoint
from ..bus.metadata import UserNamespace
from ..client.info import ConnectionInfo, ListEntry, parse_connection_info, parse_list
from ..client.ioctl import command_bytes
from ..client.message import ZEROS_OFFSET, Message, parse_message
from ..client.outgoing import memfd_item, message_bytes, vec_item
from ..errors import KdbusError
from ..handle import Connected, Handle, ioctl
from ..host.files import REQUIRED_SEALS
from .caller import ClassicCaller


def sealed_memfd(data: bytes) -> int:
    """A memfd holding `data`, sealed against any change, as kdbus wants a PAYLOAD_MEMFD."""
    fd = os.memfd_create("kdbusfs-classic-payload", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, REQUIRED_SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_range(fd: int, start: int, size: int) -> bytes:
    """`size` bytes of the memfd `fd` from `start` (its range was checked when it was sent)."""
    parts = []
    while size:
        chunk = os.pread(fd, size, start)
        if not chunk:
            raise KdbusError(errno.EFAULT, f"memfd ended {size} bytes before its range")
        parts.append(chunk)
        start += len(chunk)
        size -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


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
            # The struct is handed over as FUSE hands an ioctl's copied input (copy_in takes it
            # instead of reading it back from the arena); the bodies still write their answers there.
            out = ioctl(self.handle, cmd, address, bytes(struct), self.caller)
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

    @staticmethod
    def _struct(layout: Layout[Any], *fields: int | bytes, items: bytes = b"") -> bytearray:
        """A command struct to run, writable (the bodies write their answers back into it)."""
        return bytearray(command_bytes(layout, *fields, items=items))

    def _slice(self, offset: int, size: int) -> bytes:
        """A published pool slice's bytes, freed at once."""
        assert self.conn is not None
        pool = self.conn.pool
        data = bytes(pool.buffer[offset : offset + size])
        self.free(offset)
        return data

    def free(self, offset: int) -> None:
        self._run(Cmd.FREE, self._struct(structs.CMD_FREE, 0, 0, offset))

    # -- setting up and tearing down ------------------------------------------------------------
    def hello(self, pool_size: int, accept_fds: bool, description: str, flags: int = 0) -> int:
        items = string_item(Item.CONN_DESCRIPTION, description)
        flags |= HELLO_ACCEPT_FD if accept_fds else 0
        struct = self._struct(structs.CMD_HELLO, flags, 0, ATTACH_ALL, 0, 0, 0, pool_size, 0, 0, bytes(16),
                              items=items)
        out = structs.CMD_HELLO.unpack(self._run(Cmd.HELLO, struct))
        # The bloom parameters HELLO published: nobody reads them here.
        self.free(out.offset)
        return self.id

    def close(self) -> None:
        """The client is gone: as the last close of a connection's file."""
        self.handle.release()

    # -- messages ------------------------------------------------------------------------------
    def send(self, destination: int | str, payload: bytes | Sequence[bytes], *, flags: int, cookie: int,
             timeout_or_reply: int, bloom: bytes | None = None, fds: list[int] | None = None) -> None:
        """SEND a message whose payload is `payload`'s parts back to back: each part of at least
        CLASSIC_MEMFD_MIN_SIZE bytes in a sealed memfd of its own, the parts between them joined in
        one vector each (a small message is one vector, as readers of the first one expect)."""
        parts = (payload,) if isinstance(payload, bytes) else payload
        arena = self.caller.arena
        payload_items: list[bytes] = []
        memfds: list[int] = []
        small: list[bytes] = []

        def vector() -> None:
            if small:
                data = b"".join(small)
                payload_items.append(vec_item(len(data), arena.place(data)))
                small.clear()

        try:
            for part in parts:
                if len(part) < limits.CLASSIC_MEMFD_MIN_SIZE:
                    small.append(part)
                    continue
                vector()
                self.caller.files().reserve_memfd(len(part))
                memfds.append(sealed_memfd(part))
                payload_items.append(memfd_item(memfds[-1], 0, len(part)))
            vector()
            msg = message_bytes(destination, payload_items, flags=flags, cookie=cookie,
                                timeout_or_reply=timeout_or_reply, bloom=bloom, fds=fds or ())
            self._run(Cmd.SEND, self._struct(structs.CMD_SEND, 0, 0, arena.place(msg), 0, 0, 0))
        finally:
            # The message holds its own duplicates (ClassicFiles.check_memfd) until received.
            for fd in memfds:
                os.close(fd)

    def recv(self) -> Message | None:
        """The next queued message (its descriptors in caller.received_fds), or None. Memfd parts
        of its payload are read into the payload in their place (descriptors then are only the
        message's FDS), unless the whole would exceed CLASSIC_MESSAGE_MAX: such a message keeps
        its `memfds`, unread."""
        self.caller.received_fds = []
        struct = self._struct(structs.CMD_RECV, 0, 0, 0, 0, 0, 0, 0)
        try:
            out = structs.CMD_RECV.unpack(self._run(Cmd.RECV, struct))
        except KdbusError as exc:
            if exc.errno == errno.EAGAIN:
                return None
            raise
        data = self._slice(out.msg_offset, out.msg_msg_size)
        message = parse_message(data, out.msg_return_flags, out.dropped_msgs)
        if message.memfds:
            message = self._read_memfds(data, message)
        return message

    def _read_memfds(self, data: bytes, message: Message) -> Message:
        """`message` with its memfd parts read into its payload, in item order (as sd-bus sent a
        large body: header vector, body memfd, footer vector); the memfds closed, and only the FDS
        item's descriptors left in caller.received_fds."""
        installed = self.caller.received_fds
        memfd_indexes = {memfd.fd for memfd in message.memfds}
        self.caller.received_fds = [installed[index] for index in message.fds]
        try:
            size = len(message.payload) + sum(memfd.size for memfd in message.memfds)
            if size > limits.CLASSIC_MESSAGE_MAX:
                return message
            parts: list[bytes] = []
            for kind, item_payload in read_items(data, structs.MSG.size, structs.MSG.unpack(data).size):
                if kind == Item.PAYLOAD_OFF:
                    part_size, offset = structs.VEC.unpack(item_payload)
                    parts.append(bytes(part_size) if offset == ZEROS_OFFSET
                                 else data[offset : offset + part_size])
                elif kind == Item.PAYLOAD_MEMFD:
                    start, part_size, index, _ = structs.MEMFD.unpack(item_payload)
                    parts.append(read_range(installed[index], start, part_size))
            return dataclasses.replace(message, payload=b"".join(parts), parts=tuple(parts), memfds=())
        finally:
            for index in memfd_indexes:
                self.caller.close_fd(installed[index])

    # -- names, matches, queries --------------------------------------------------------------
    def name_acquire(self, name: str, flags: int) -> int:
        """NAME_ACQUIRE; the return flags (kdbus's NAME_* bits)."""
        items = string_item(Item.NAME, name)
        struct = self._struct(structs.CMD, flags, 0, items=items)
        return structs.CMD.unpack(self._run(Cmd.NAME_ACQUIRE, struct)).return_flags

    def name_release(self, name: str) -> None:
        items = string_item(Item.NAME, name)
        self._run(Cmd.NAME_RELEASE, self._struct(structs.CMD, 0, 0, items=items))

    def match_add(self, cookie: int, rules: list[bytes], replace: bool = False) -> None:
        items = b"".join(rules)
        struct = self._struct(structs.CMD_MATCH, MATCH_REPLACE if replace else 0, 0, cookie, items=items)
        self._run(Cmd.MATCH_ADD, struct)

    def match_remove(self, cookie: int) -> None:
        self._run(Cmd.MATCH_REMOVE, self._struct(structs.CMD_MATCH, 0, 0, cookie))

    def list(self, flags: int) -> list[ListEntry]:
        struct = self._struct(structs.CMD_LIST, flags, 0, 0, 0)
        out = structs.CMD_LIST.unpack(self._run(Cmd.LIST, struct))
        if not out.list_size:
            return []
        return parse_list(self._slice(out.offset, out.list_size))

    def conn_info(self, target: int | str, attach_flags: int) -> ConnectionInfo:
        items = string_item(Item.NAME, target) if isinstance(target, str) else b""
        struct = self._struct(structs.CMD_INFO, 0, 0, target if isinstance(target, int) else 0, attach_flags,
                              0, 0, items=items)
        out = structs.CMD_INFO.unpack(self._run(Cmd.CONN_INFO, struct))
        return parse_connection_info(self._slice(out.offset, out.info_size))
