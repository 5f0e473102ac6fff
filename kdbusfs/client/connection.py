"""A kdbus connection: HELLO on an endpoint file, the pool, and the connection commands.

    conn = Connection.hello("/sys/fs/kdbus/0-system/bus")
    conn.acquire_name("org.example.Clock")
    message = conn.recv()
    conn.reply(message, b"pong")

Commands block the calling thread (libc's ioctl releases the GIL); `recv` waits on the file with
poll(2). `kdbusfs.client.aio` waits the trio way.
"""

from __future__ import annotations

import enum
import itertools
import math
import os
import select
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..abi import structs
from ..abi.constants import (
    ATTACH_ALL,
    DST_ID_BROADCAST,
    HELLO_ACCEPT_FD,
    HELLO_ACTIVATOR,
    HELLO_MONITOR,
    HELLO_POLICY_HOLDER,
    LIST_ACTIVATORS,
    LIST_NAMES,
    LIST_QUEUED,
    LIST_UNIQUE,
    MATCH_REPLACE,
    MSG_EXPECT_REPLY,
    MSG_NO_AUTO_START,
    MSG_SIGNAL,
    NAME_ACQUIRED,
    NAME_ALLOW_REPLACEMENT,
    NAME_IN_QUEUE,
    NAME_PRIMARY,
    NAME_QUEUE,
    NAME_REPLACE_EXISTING,
    PAYLOAD_DBUS,
    RECV_DROP,
    RECV_PEEK,
    RECV_USE_PRIORITY,
    SEND_SYNC_REPLY,
    Cmd,
    Item,
)
from ..abi.items import item, read_items, string_item, u64_item
from .bloom import BloomFilter, BloomParameters
from .errors import CommandWouldBlock
from .info import (
    BusCreatorInfo,
    ConnectionInfo,
    ListEntry,
    parse_bus_creator_info,
    parse_connection_info,
    parse_list,
)
from .ioctl import Pinned, command, issue
from .match import Rule
from .message import Message, parse_message
from .outgoing import Destination, Outgoing, Payload, build, deadline_ns
from .policy import PolicyAccess, policy_items
from .pool import Pool

# The pool size sd-bus and the kdbus tests asked for.
DEFAULT_POOL_SIZE = 16 * 1024 * 1024
# sd-bus's default method call timeout.
DEFAULT_CALL_TIMEOUT = 25.0


class Kind(enum.Enum):
    """What HELLO makes of a connection (monitors, activators and policy holders need bus owner
    rights)."""

    ORDINARY = 0
    MONITOR = HELLO_MONITOR
    ACTIVATOR = HELLO_ACTIVATOR
    POLICY_HOLDER = HELLO_POLICY_HOLDER


@dataclass(frozen=True, slots=True)
class NameOwnership:
    """The outcome of NAME_ACQUIRE: the owner record's flags (KDBUS_NAME_*)."""

    name: str
    flags: int

    @property
    def primary(self) -> bool:
        return bool(self.flags & NAME_PRIMARY)

    @property
    def in_queue(self) -> bool:
        return bool(self.flags & NAME_IN_QUEUE)

    @property
    def newly_acquired(self) -> bool:
        """The call made this connection owner or put it in the queue (it was neither)."""
        return bool(self.flags & NAME_ACQUIRED)


class Connection:
    """A connection to a bus. Make one with `Connection.hello`; close it (or use `with`)."""

    def __init__(self, fd: int, answer: Any, kind: Kind) -> None:
        self.fd = fd
        self.kind = kind
        self.id: int = answer.id
        self.bus_flags: int = answer.bus_flags
        self.bus_uuid = uuid.UUID(bytes=answer.id128)
        # kdbus lets policy holders query but not FREE: their answers stay in the pool.
        self.pool = Pool(fd, answer.pool_size, frees=kind is not Kind.POLICY_HOLDER)
        # HELLO's slice holds the bus's bloom parameters.
        self.bloom = BloomParameters()
        try:
            for kind_of_item, payload in read_items(self.pool.take(answer.offset, answer.items_size), 0):
                if kind_of_item == Item.BLOOM_PARAMETER:
                    self.bloom = BloomParameters(*structs.BLOOM_PARAMETER.unpack(payload))
        except BaseException:
            # The mapping would keep the connection alive after `hello` closes the file.
            self.pool.close()
            raise
        self._cookies = itertools.count(1)
        # Messages lost while RECV found nothing, reported with the next message.
        self._dropped = 0

    @classmethod
    def hello(cls, endpoint: str | os.PathLike[str], *, kind: Kind = Kind.ORDINARY,
              name: str | None = None, policy: Iterable[PolicyAccess] = (),
              description: str | None = None, accept_fds: bool = False,
              attach_flags_send: int = ATTACH_ALL, attach_flags_recv: int = 0,
              pool_size: int = DEFAULT_POOL_SIZE) -> Connection:
        """Connect to the bus of `endpoint` (a `bus` file).

        `name` and `policy` are for activators (the name they hold) and policy holders (the name
        their policy is about). `attach_flags_send` is the metadata this connection lets others
        see, `attach_flags_recv` what it wants attached to messages it receives (KDBUS_ATTACH_*).
        """
        fd = os.open(os.fspath(endpoint), os.O_RDWR | os.O_CLOEXEC)
        try:
            items = b"" if name is None else policy_items(name, policy)
            if description is not None:
                items += string_item(Item.CONN_DESCRIPTION, description)
            flags = kind.value | (HELLO_ACCEPT_FD if accept_fds else 0)
            struct = command(structs.CMD_HELLO, flags, 0, attach_flags_send, attach_flags_recv, 0, 0,
                             pool_size, 0, 0, bytes(16), items=items)
            issue(fd, Cmd.HELLO, struct)
            return cls(fd, struct.fields(structs.CMD_HELLO), kind)
        except BaseException:
            os.close(fd)
            raise

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        """Disconnect: names are released, peers get ID_REMOVE, waiting callers EPIPE."""
        if self.fd >= 0:
            # The mapping holds the file open too: the connection ends when both are gone.
            self.pool.close()
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.kind.name.lower()}{' closed' if self.fd < 0 else ''}>"

    def _run(self, cmd: Cmd, struct: Pinned) -> Pinned:
        issue(self.fd, cmd, struct)
        return struct

    def _simple(self, cmd: Cmd, flags: int = 0, items: bytes = b"") -> int:
        """A command of the plain kdbus_cmd shape; its return_flags."""
        struct = self._run(cmd, command(structs.CMD, flags, 0, items=items))
        return int(struct.fields(structs.CMD).return_flags)

    def byebye(self) -> None:
        """Disconnect but keep the file (EBUSY while messages are queued)."""
        self._simple(Cmd.BYEBYE)

    def update(self, *, attach_flags_send: int | None = None, attach_flags_recv: int | None = None,
               name: str | None = None, policy: Iterable[PolicyAccess] = ()) -> None:
        """Change the attach flags, or (policy holders) replace the policy with one for `name`."""
        items = b""
        if attach_flags_send is not None:
            items += u64_item(Item.ATTACH_FLAGS_SEND, attach_flags_send)
        if attach_flags_recv is not None:
            items += u64_item(Item.ATTACH_FLAGS_RECV, attach_flags_recv)
        if name is not None:
            items += policy_items(name, policy)
        self._simple(Cmd.UPDATE, items=items)

    # Sending.

    def _send(self, outgoing: Outgoing, flags: int = 0, cancel_fd: int | None = None) -> Pinned:
        items = b"" if cancel_fd is None else item(Item.CANCEL_FD, cancel_fd.to_bytes(4, "little"))
        # `outgoing` (the message and its payload) stays referenced, so pinned, until SEND returns.
        return self._run(Cmd.SEND, command(structs.CMD_SEND, flags, 0, outgoing.message.address, 0, 0, 0,
                                           items=items))

    def next_cookie(self) -> int:
        return next(self._cookies)

    def send(self, destination: Destination, payload: Payload = b"", *, cookie: int | None = None,
             expect_reply: bool = False, timeout: float = DEFAULT_CALL_TIMEOUT,
             no_auto_start: bool = False, priority: int = 0, payload_type: int = PAYLOAD_DBUS,
             fds: Sequence[int] = ()) -> int:
        """Queue a message for a connection id or a well-known name; returns its cookie.

        With `expect_reply` it is a call: the reply, or a REPLY_TIMEOUT / REPLY_DEAD notification,
        arrives later through `recv` with `cookie_reply` set to this cookie.
        """
        cookie = self.next_cookie() if cookie is None else cookie
        flags = (MSG_EXPECT_REPLY if expect_reply else 0) | (MSG_NO_AUTO_START if no_auto_start else 0)
        self._send(build(destination, payload, flags=flags, cookie=cookie, priority=priority,
                         timeout_or_reply=deadline_ns(timeout) if expect_reply else 0,
                         payload_type=payload_type, fds=fds))
        return cookie

    def call(self, destination: Destination, payload: Payload = b"", *,
             timeout: float = DEFAULT_CALL_TIMEOUT, cookie: int | None = None,
             no_auto_start: bool = False, priority: int = 0, payload_type: int = PAYLOAD_DBUS,
             fds: Sequence[int] = (), cancel_fd: int | None = None) -> Message:
        """Call and wait for the reply (KDBUS_SEND_SYNC_REPLY); raises TimeoutError after `timeout`
        seconds, and ECANCELED once `cancel_fd` (e.g. an eventfd) becomes readable."""
        cookie = self.next_cookie() if cookie is None else cookie
        flags = MSG_EXPECT_REPLY | (MSG_NO_AUTO_START if no_auto_start else 0)
        outgoing = build(destination, payload, flags=flags, cookie=cookie, priority=priority,
                         timeout_or_reply=deadline_ns(timeout), payload_type=payload_type, fds=fds)
        answer = self._send(outgoing, SEND_SYNC_REPLY, cancel_fd).fields(structs.CMD_SEND)
        return self._take_message(answer.reply_offset, answer.reply_msg_size, answer.reply_return_flags)

    def reply(self, call: Message, payload: Payload = b"", *, payload_type: int = PAYLOAD_DBUS,
              fds: Sequence[int] = ()) -> None:
        """Answer `call` (EBADSLT if it expects no reply from this connection, or no longer)."""
        self._send(build(call.src_id, payload, cookie=self.next_cookie(), timeout_or_reply=call.cookie,
                         payload_type=payload_type, fds=fds))

    def emit(self, payload: Payload = b"", bloom: BloomFilter | bytes | None = None, *,
             destination: Destination = DST_ID_BROADCAST, cookie: int | None = None,
             priority: int = 0, payload_type: int = PAYLOAD_DBUS) -> int:
        """Send a signal, to every connection whose matches select it or to one `destination`;
        `bloom` is its filter (all zeros if None). Returns its cookie."""
        cookie = self.next_cookie() if cookie is None else cookie
        self._send(build(destination, payload, flags=MSG_SIGNAL, cookie=cookie, priority=priority,
                         payload_type=payload_type,
                         bloom=self.bloom.filter() if bloom is None else bloom))
        return cookie

    # Receiving.

    def _take_message(self, offset: int, size: int, return_flags: int, dropped: int = 0) -> Message:
        return parse_message(self.pool.take(offset, size), return_flags, dropped)

    def try_recv(self, *, priority: int | None = None, peek: bool = False) -> Message | None:
        """The next message, or None if none is queued. With `priority`, the most urgent message
        whose priority is at most that; with `peek`, a copy that stays queued."""
        flags = (RECV_PEEK if peek else 0) | (0 if priority is None else RECV_USE_PRIORITY)
        struct = command(structs.CMD_RECV, flags, 0, priority or 0, 0, 0, 0, 0)
        try:
            self._run(Cmd.RECV, struct)
        except CommandWouldBlock:
            # RECV reports (and clears) the lost count even when the queue is empty.
            self._dropped += struct.fields(structs.CMD_RECV).dropped_msgs
            return None
        answer = struct.fields(structs.CMD_RECV)
        dropped, self._dropped = self._dropped + answer.dropped_msgs, 0
        return self._take_message(answer.msg_offset, answer.msg_msg_size, answer.msg_return_flags,
                                  dropped)

    def recv(self, timeout: float | None = None, *, priority: int | None = None,
             peek: bool = False) -> Message:
        """The next message, waiting up to `timeout` seconds (forever if None) for one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self.try_recv(priority=priority, peek=peek)
            if message is not None:
                return message
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no message for connection {self.id} within {timeout} s")
            self.wait_readable(remaining)

    def drop(self) -> None:
        """Discard the next message unread (its caller, if it waits for a reply, gets EPIPE)."""
        self._run(Cmd.RECV, command(structs.CMD_RECV, RECV_DROP, 0, 0, 0, 0, 0, 0))

    def wait_readable(self, timeout: float | None = None) -> bool:
        """Wait until a message (or a lost-message count) is there; False on timeout."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else math.ceil(timeout * 1000)))

    # Names and matches.

    def acquire_name(self, name: str, *, replace_existing: bool = False,
                     allow_replacement: bool = False, queue: bool = False) -> NameOwnership:
        flags = ((NAME_REPLACE_EXISTING if replace_existing else 0)
                 | (NAME_ALLOW_REPLACEMENT if allow_replacement else 0) | (NAME_QUEUE if queue else 0))
        return NameOwnership(name, self._simple(Cmd.NAME_ACQUIRE, flags, string_item(Item.NAME, name)))

    def release_name(self, name: str) -> None:
        self._simple(Cmd.NAME_RELEASE, items=string_item(Item.NAME, name))

    def add_match(self, rules: Iterable[Rule] = (), *, cookie: int = 0, replace: bool = False) -> None:
        """Receive the signals and notifications all `rules` select (no rules: everything)."""
        items = b"".join(rule.item for rule in rules)
        self._run(Cmd.MATCH_ADD, command(structs.CMD_MATCH, MATCH_REPLACE if replace else 0, 0, cookie,
                                         items=items))

    def remove_match(self, cookie: int) -> None:
        """Remove every match added with `cookie`."""
        self._run(Cmd.MATCH_REMOVE, command(structs.CMD_MATCH, 0, 0, cookie))

    # Queries.

    def list_peers(self, *, unique: bool = True, names: bool = True, activators: bool = False,
                   queued: bool = False) -> list[ListEntry]:
        """The bus's connections (not monitors): with `names`, one entry per primary owner record;
        with `activators` and `queued` their records too; with `unique`, one bare entry for each
        connection listed no other way."""
        flags = ((LIST_UNIQUE if unique else 0) | (LIST_NAMES if names else 0)
                 | (LIST_ACTIVATORS if activators else 0) | (LIST_QUEUED if queued else 0))
        answer = self._run(Cmd.LIST, command(structs.CMD_LIST, flags, 0, 0, 0)).fields(structs.CMD_LIST)
        return parse_list(self.pool.take(answer.offset, answer.list_size))

    def conn_info(self, target: int | str, attach_flags: int = ATTACH_ALL) -> ConnectionInfo:
        """A peer by id or by well-known name, with the metadata (of `attach_flags`) it lets others
        see: taken at its HELLO, its names as they are now."""
        if isinstance(target, str):
            target_id, items = 0, string_item(Item.NAME, target)
        else:
            target_id, items = target, b""
        struct = command(structs.CMD_INFO, 0, 0, target_id, attach_flags, 0, 0, items=items)
        answer = self._run(Cmd.CONN_INFO, struct).fields(structs.CMD_INFO)
        return parse_connection_info(self.pool.take(answer.offset, answer.info_size))

    def bus_creator_info(self, attach_flags: int = ATTACH_ALL) -> BusCreatorInfo:
        """The bus and what its creator (at BUS_MAKE) lets connections see of it."""
        struct = command(structs.CMD_INFO, 0, 0, 0, attach_flags, 0, 0)
        answer = self._run(Cmd.BUS_CREATOR_INFO, struct).fields(structs.CMD_INFO)
        return parse_bus_creator_info(self.pool.take(answer.offset, answer.info_size))
