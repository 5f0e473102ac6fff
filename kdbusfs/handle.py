"""Open kdbus files and the one dispatch table from KDBUS_CMD_* to the model.

Every command runs in the same frame (KDBUS-SPEC.md §2.2), compiled in kdbusfs/dispatch.pyx: check
the handle may run it, copy the command struct in, check flags and items, answer negotiation, run,
write the caller-visible fields back. This module says which commands there are, what each
accepts and which body runs it. The bodies live with their concepts (bus/bus.py, endpoint.py,
connection.py, names.py, match.py, send.py); what a setup command makes (a bus, an endpoint, a
connection) becomes the handle's here.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from dataclasses import dataclass

from .abi import structs
from .abi.constants import (
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
)
from .abi.walk import ItemSpec
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
from .dispatch import Command, CommandTable, Connected, HandleType

log = logging.getLogger("kdbusfs.handle")

__all__ = ["COMMANDS", "MSG_NEGOTIABLE", "Caller", "Connected", "Control", "Handle", "HandleType", "Pending",
           "attempt", "copy_in", "ioctl"]


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


_ALL_KINDS = (Kind.ORDINARY, Kind.MONITOR, Kind.ACTIVATOR, Kind.POLICY_HOLDER)
_RECEIVERS = (Kind.ORDINARY, Kind.MONITOR, Kind.ACTIVATOR)
_MATCH_RULES = (Item.BLOOM_MASK, Item.NAME, Item.ID, Item.DST_ID, Item.NAME_ADD, Item.NAME_REMOVE,
                Item.NAME_CHANGE, Item.ID_ADD, Item.ID_REMOVE)

COMMANDS = CommandTable(
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
# What the edge runs for every kdbus ioctl (launched.py, classic clients); FUSE requests take
# `attempt`, which returns the failures that are no surprise (an empty RECV) rather than raising.
ioctl = COMMANDS.ioctl
attempt = COMMANDS.attempt
