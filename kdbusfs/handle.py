"""Open kdbus files and the one dispatch table from KDBUS_CMD_* to the model.

Every command follows the same frame (KDBUS-SPEC.md §2.2): check the handle may run it, copy the
command struct from the caller (8-aligned, bounded size), check flags and items, answer negotiation,
run, then write the caller-visible fields back. For commands whose ioctl number says _IOC_READ the
kernel copies our reply over the caller's fixed struct, so the reply carries the whole fixed part.
The bodies live with their concepts (bus/bus.py, endpoint.py, connection.py, names.py, match.py,
send.py); what a setup command makes (a bus, an endpoint, a connection) becomes the handle's here.
"""

from __future__ import annotations

import enum
import errno
import logging
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .abi import structs
from .abi.constants import (
    _IOC_READ,
    FLAG_NEGOTIATE,
    LIST_ACTIVATORS,
    LIST_NAMES,
    LIST_QUEUED,
    LIST_UNIQUE,
    MAKE_ACCESS_GROUP,
    MAKE_ACCESS_WORLD,
    MATCH_REPLACE,
    RECV_DROP,
    RECV_PEEK,
    RECV_USE_PRIORITY,
    SEND_SYNC_REPLY,
    Cmd,
    Item,
    ioc_dir,
    ioc_size,
)
from .abi.items import ItemSpec, ParsedItem, walk_items
from .abi.structs import U64
from .bus.bus import Bus, cmd_bus_creator_info, cmd_bus_make
from .bus.command import Args, Caller, Pending, copy_in
from .bus.connection import (
    HELLO_FLAGS,
    Connection,
    Kind,
    cmd_byebye,
    cmd_conn_info,
    cmd_free,
    cmd_recv,
    cmd_update,
)
from .bus.domain import Domain
from .bus.endpoint import Endpoint, cmd_endpoint_make, cmd_endpoint_update
from .bus.hello import cmd_hello
from .bus.match import cmd_match_add, cmd_match_remove
from .bus.metadata import DAEMON_USERNS, Creds, UserNamespace
from .bus.names import ACQUIRE_FLAGS, cmd_list, cmd_name_acquire, cmd_name_release
from .bus.send import MSG_NEGOTIABLE, cmd_send, negotiate_send
from .errors import KdbusError

log = logging.getLogger("kdbusfs.handle")

__all__ = ["COMMANDS", "MSG_NEGOTIABLE", "Caller", "Connected", "Control", "Handle", "HandleType", "Pending",
           "copy_in", "ioctl"]


@dataclass(frozen=True, slots=True)
class Connected:
    """HELLO made `conn` on the handle: the edge sets up what the connection needs of its file."""

    conn: Connection
    out: bytes


class HandleType(enum.Enum):
    NONE = "none"
    BUS_OWNER = "bus owner"
    EP_OWNER = "endpoint owner"
    CONNECTED = "connection"


@dataclass(slots=True, eq=False)
class Control:
    """The `control` node of a domain."""

    domain: Domain


@dataclass(slots=True, eq=False)
class Handle:
    """One open file description of a kdbus node."""

    node: Control | Endpoint
    opener: Creds
    type: HandleType = HandleType.NONE
    bus: Bus | None = None
    conn: Connection | None = None
    # The custom endpoint an endpoint-owner handle made.
    endpoint: Endpoint | None = None
    # Where a connection made on this handle keeps its pool (the edge may map a shared file).
    pool_memory: Callable[[int], mmap.mmap] | None = None
    # The user namespace of the opener's credentials: its connection sees ids through it.
    opener_userns: UserNamespace = DAEMON_USERNS

    @property
    def domain(self) -> Domain:
        return self.node.domain if isinstance(self.node, Control) else self.node.bus.domain

    def release(self) -> None:
        """The last reference to the file is gone."""
        if self.type is HandleType.BUS_OWNER and self.bus is not None:
            self.bus.shutdown()
        elif self.type is HandleType.EP_OWNER and self.endpoint is not None:
            self.endpoint.shutdown()
        elif self.type is HandleType.CONNECTED and self.conn is not None:
            self.conn.disconnect()
            # No mapping of the pool is left either (a mapping holds the file open).
            self.conn.pool.close()


# -- the setup commands: what they make becomes the handle's --------------------------------

def _bus_make(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
    assert isinstance(handle.node, Control)
    handle.bus = cmd_bus_make(handle.node.domain, args, caller)
    handle.type = HandleType.BUS_OWNER


def _endpoint_make(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
    assert isinstance(handle.node, Endpoint)
    handle.endpoint = cmd_endpoint_make(handle.node, handle.opener, args, caller)
    handle.type = HandleType.EP_OWNER


def _endpoint_update(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
    assert handle.endpoint is not None
    cmd_endpoint_update(handle.endpoint, args)


def _hello(handle: Handle, args: Args[structs.CmdHello], caller: Caller) -> Connection:
    assert isinstance(handle.node, Endpoint)
    conn = cmd_hello(handle.node, handle.opener, handle.opener_userns, handle.pool_memory, args, caller)
    handle.conn = conn
    handle.type = HandleType.CONNECTED
    return conn


# What a command body returns: a blocked call, the connection HELLO made, or nothing to report.
SetupRunner = Callable[[Handle, Args[Any], Caller], "Connection | None"]
ConnRunner = Callable[[Connection, Args[Any], Caller], "Pending | None"]


@dataclass(frozen=True, slots=True)
class Command:
    cmd: Cmd
    layout: structs.Layout[Any]
    flags: int
    items: dict[int, ItemSpec]
    # A setup command runs on a fresh handle of this node type; any other on a connection of
    # one of `kinds` (ENDPOINT_UPDATE: on the handle that made a custom endpoint).
    setup: SetupRunner | None = None
    setup_on: type | None = None
    run: ConnRunner | None = None
    kinds: tuple[Kind, ...] = ()
    owner_of_endpoint: bool = False
    # Extra work when negotiating (SEND negotiates its message too).
    negotiate: Callable[[Connection, Args[Any], Caller], None] | None = None
    # Commands that report through their struct even when failing (RECV on EAGAIN).
    writeback_on_error: bool = False
    # Computed from `items`: the types that must be there.
    mandatory: tuple[int, ...] = ()
    # _IOC_READ in the number: the kernel copies our out data over the caller's fixed struct.
    returns_struct: bool = False

    @classmethod
    def of(cls, cmd: Cmd, layout: structs.Layout[Any], flags: int, *specs: ItemSpec,
           setup: SetupRunner | None = None, setup_on: type | None = None, run: ConnRunner | None = None,
           kinds: tuple[Kind, ...] = (), owner_of_endpoint: bool = False,
           negotiate: Callable[[Connection, Args[Any], Caller], None] | None = None,
           writeback_on_error: bool = False) -> Command:
        # The fixed part is what _IOC_SIZE covers, so the reply of an _IOC_READ command is all of it.
        assert layout.size == ioc_size(cmd), cmd.name
        items = {Item.NEGOTIATE: ItemSpec(Item.NEGOTIATE), **{spec.type: spec for spec in specs}}
        return cls(cmd, layout, flags, items, setup, setup_on, run, kinds, owner_of_endpoint, negotiate,
                   writeback_on_error, tuple(spec.type for spec in specs if spec.mandatory),
                   bool(ioc_dir(cmd) & _IOC_READ))


_ALL_KINDS = (Kind.ORDINARY, Kind.MONITOR, Kind.ACTIVATOR, Kind.POLICY_HOLDER)
_RECEIVERS = (Kind.ORDINARY, Kind.MONITOR, Kind.ACTIVATOR)
_MATCH_RULES = (Item.BLOOM_MASK, Item.NAME, Item.ID, Item.DST_ID, Item.NAME_ADD, Item.NAME_REMOVE,
                Item.NAME_CHANGE, Item.ID_ADD, Item.ID_REMOVE)

COMMANDS: dict[int, Command] = {
    c.cmd: c
    for c in (
        Command.of(Cmd.BUS_MAKE, structs.CMD, MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD,
                   ItemSpec(Item.MAKE_NAME, mandatory=True), ItemSpec(Item.BLOOM_PARAMETER, mandatory=True),
                   ItemSpec(Item.ATTACH_FLAGS_SEND), setup=_bus_make, setup_on=Control),
        Command.of(Cmd.ENDPOINT_MAKE, structs.CMD, MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD,
                   ItemSpec(Item.MAKE_NAME, mandatory=True), setup=_endpoint_make, setup_on=Endpoint),
        Command.of(Cmd.ENDPOINT_UPDATE, structs.CMD, 0,
                   ItemSpec(Item.NAME, multiple=True), ItemSpec(Item.POLICY_ACCESS, multiple=True),
                   setup=_endpoint_update, owner_of_endpoint=True),
        Command.of(Cmd.HELLO, structs.CMD_HELLO, HELLO_FLAGS,
                   ItemSpec(Item.NAME), ItemSpec(Item.CREDS), ItemSpec(Item.PIDS), ItemSpec(Item.SECLABEL),
                   ItemSpec(Item.CONN_DESCRIPTION), ItemSpec(Item.POLICY_ACCESS, multiple=True),
                   setup=_hello, setup_on=Endpoint),
        Command.of(Cmd.UPDATE, structs.CMD, 0,
                   ItemSpec(Item.ATTACH_FLAGS_SEND), ItemSpec(Item.ATTACH_FLAGS_RECV),
                   ItemSpec(Item.NAME, multiple=True), ItemSpec(Item.POLICY_ACCESS, multiple=True),
                   run=cmd_update, kinds=_ALL_KINDS),
        Command.of(Cmd.BYEBYE, structs.CMD, 0, run=cmd_byebye, kinds=(Kind.ORDINARY,)),
        Command.of(Cmd.FREE, structs.CMD_FREE, 0, run=cmd_free, kinds=_RECEIVERS),
        Command.of(Cmd.CONN_INFO, structs.CMD_INFO, 0, ItemSpec(Item.NAME), run=cmd_conn_info,
                   kinds=_ALL_KINDS),
        Command.of(Cmd.BUS_CREATOR_INFO, structs.CMD_INFO, 0, run=cmd_bus_creator_info, kinds=_ALL_KINDS),
        Command.of(Cmd.LIST, structs.CMD_LIST, LIST_UNIQUE | LIST_NAMES | LIST_ACTIVATORS | LIST_QUEUED,
                   run=cmd_list, kinds=_ALL_KINDS),
        Command.of(Cmd.SEND, structs.CMD_SEND, SEND_SYNC_REPLY, ItemSpec(Item.CANCEL_FD), run=cmd_send,
                   kinds=(Kind.ORDINARY,), negotiate=negotiate_send),
        Command.of(Cmd.RECV, structs.CMD_RECV, RECV_PEEK | RECV_DROP | RECV_USE_PRIORITY, run=cmd_recv,
                   kinds=_RECEIVERS, writeback_on_error=True),
        Command.of(Cmd.NAME_ACQUIRE, structs.CMD, ACQUIRE_FLAGS, ItemSpec(Item.NAME, mandatory=True),
                   run=cmd_name_acquire, kinds=(Kind.ORDINARY,)),
        Command.of(Cmd.NAME_RELEASE, structs.CMD, 0, ItemSpec(Item.NAME, mandatory=True),
                   run=cmd_name_release, kinds=(Kind.ORDINARY,)),
        Command.of(Cmd.MATCH_ADD, structs.CMD_MATCH, MATCH_REPLACE,
                   *(ItemSpec(t, multiple=True) for t in _MATCH_RULES), run=cmd_match_add,
                   kinds=(Kind.ORDINARY,)),
        Command.of(Cmd.MATCH_REMOVE, structs.CMD_MATCH, 0, run=cmd_match_remove, kinds=(Kind.ORDINARY,)),
    )
}


def _check_handle(handle: Handle, command: Command) -> None:
    if command.owner_of_endpoint:
        if handle.type is not HandleType.EP_OWNER:
            raise KdbusError(errno.EBADFD, f"{command.cmd.name} on a {handle.type.value} handle")
        return
    if command.setup_on is not None:
        if handle.type is not HandleType.NONE or not isinstance(handle.node, command.setup_on):
            raise KdbusError(errno.EBADFD, f"{command.cmd.name} on a {handle.type.value} handle")
        return
    if handle.type is not HandleType.CONNECTED or handle.conn is None:
        raise KdbusError(errno.EBADFD, f"{command.cmd.name} needs a connection")
    if not handle.conn.active:
        raise KdbusError(errno.ECONNRESET, f"connection {handle.conn.id} is disconnected")
    if handle.conn.kind not in command.kinds:
        raise KdbusError(errno.EOPNOTSUPP, f"{command.cmd.name} on a {handle.conn.kind.value}")


def ioctl(handle: Handle, cmd: int, address: int, in_data: bytes,
          caller: Caller) -> bytes | Pending | Connected:
    """Run one kdbus ioctl; returns the ioctl's out data, Pending for a blocked call, or
    Connected (with the out data) when HELLO has made a connection on the handle."""
    command = COMMANDS.get(cmd)
    if command is None:
        raise KdbusError(errno.ENOTTY, f"unknown ioctl {cmd:#x}")
    _check_handle(handle, command)
    layout = command.layout
    data = copy_in(caller, address, layout, in_data)
    flags = U64.unpack_from(data, 8)[0]
    returns_struct = command.returns_struct
    if flags & ~(command.flags | FLAG_NEGOTIATE):
        _write_return_flags(caller, address, data)
        raise KdbusError(errno.EINVAL, f"{command.cmd.name}: unknown flags {flags:#x}")
    if len(data) == layout.size:
        items: dict[int, list[ParsedItem]] = {}
    else:
        try:
            items = walk_items(data, layout.size, command.items)
        except KdbusError:
            _write_return_flags(caller, address, data)
            raise
    args = Args(address, data, layout, items)
    if Item.NEGOTIATE in items:
        _negotiate_items(args, command, caller)
    if args.negotiate:
        if command.negotiate is not None:
            assert handle.conn is not None
            command.negotiate(handle.conn, args, caller)
        args.out = args.out._replace(flags=command.flags)
        caller.write(address + 8, U64.pack(command.flags))
        return args.fixed() if returns_struct else b""
    if args.fields.return_flags:
        args.out = args.out._replace(return_flags=0)
    try:
        if command.mandatory:
            missing = [t for t in command.mandatory if t not in items]
            if missing:
                raise KdbusError(errno.EINVAL, f"{command.cmd.name}: missing item {Item(missing[0]).name}")
        if command.run is not None:
            assert handle.conn is not None
            pending = command.run(handle.conn, args, caller)
            if pending is not None:
                return pending
            made = None
        else:
            assert command.setup is not None
            made = command.setup(handle, args, caller)
    except KdbusError:
        if command.writeback_on_error and args.out != args.fields:
            caller.write(address, args.fixed())
        elif args.out.return_flags != args.fields.return_flags:
            caller.write(address + 16, U64.pack(args.out.return_flags))
        raise
    if returns_struct:
        out = args.fixed()
    else:
        if args.out != args.fields:
            caller.write(address, args.fixed())
        out = b""
    return out if made is None else Connected(made, out)


def _write_return_flags(caller: Caller, address: int, data: bytes) -> None:
    # kdbus zeroes return_flags in its copy and writes it back even when parsing fails.
    if data[16:24] != bytes(8):
        caller.write(address + 16, bytes(8))


def _negotiate_items(args: Args[Any], command: Command, caller: Caller) -> None:
    """Zero, in the caller's NEGOTIATE item, every item type this command does not accept."""
    negotiation = args.item(Item.NEGOTIATE)
    if negotiation is None:
        return
    payload = negotiation.payload
    for i in range(0, len(payload), 8):
        wanted = U64.unpack_from(payload, i)[0]
        if wanted not in command.items:
            caller.write(args.address + negotiation.offset + 16 + i, bytes(8))
