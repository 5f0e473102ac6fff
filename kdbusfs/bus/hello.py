"""HELLO: the command that turns an endpoint handle into a connection, with the metadata it
reports (captured from the caller, or stated by a bus owner)."""

from __future__ import annotations

import errno
import logging
import mmap
from collections.abc import Callable
from dataclasses import replace

from ..abi import structs
from ..abi.constants import Item
from ..errors import KdbusError
from . import names, notify
from .command import Args, Caller, attach_flags
from .connection import HELLO_FLAGS, Connection, Kind
from .endpoint import Endpoint, is_owner, is_privileged
from .metadata import UNKNOWN_ROOT, Creds, Snapshot, UserNamespace, View

log = logging.getLogger("kdbusfs.connection")


def cmd_hello(endpoint: Endpoint, opener: Creds, opener_userns: UserNamespace,
              pool_memory: Callable[[int], mmap.mmap] | None, args: Args[structs.CmdHello],
              caller: Caller) -> Connection:
    """HELLO on an endpoint: a connection of the kind its flags ask for, with its pool."""
    f = args.fields
    attach_send = attach_flags(f.attach_flags_send)
    attach_recv = attach_flags(f.attach_flags_recv)
    accounted = opener
    if Item.CREDS in args.items or Item.PIDS in args.items or Item.SECLABEL in args.items:
        if not is_owner(endpoint, opener):
            raise KdbusError(errno.EPERM, "faking metadata needs bus owner rights")
        snapshot = _stated(args)
        if is_privileged(endpoint, opener) and Item.CREDS in args.items:
            # A privileged connection with faked creds is accounted to the faked user.
            accounted = replace(opener, uid=snapshot.creds_.uid)
    else:
        snapshot = Snapshot.capture(caller.process(), attach_send)
    process = caller.process()
    view = View(opener_userns, process.pidns(), process.root() or UNKNOWN_ROOT)
    name_item = args.item(Item.NAME)
    name = name_item.string if name_item else None
    if name is not None and not names.is_valid_name(name, allow_wildcard=True):
        raise KdbusError(errno.EINVAL, f"invalid well-known name {name!r}")
    description_item = args.item(Item.CONN_DESCRIPTION)
    conn = Connection.hello(
        endpoint, accounted, snapshot, f.flags & HELLO_FLAGS, attach_send, attach_recv, f.pool_size,
        description_item.string if description_item else None, name, pool_memory, view,
    )
    # Policy and visibility go by who opened the file, whoever the connection is accounted to.
    conn.opener = opener
    try:
        offset, items_size = conn.bloom_slice()
        if conn.kind is not Kind.MONITOR:
            notify.id_change(conn.bus, Item.ID_ADD, conn)
        if name_item is not None:
            names.register_special(conn, name_item, args.items.get(Item.POLICY_ACCESS, []))
    except KdbusError:
        conn.disconnect()
        # The handle stays fresh for another HELLO, which maps a pool of its own.
        conn.pool.close()
        raise
    bus = endpoint.bus
    args.out = args.out._replace(bus_flags=bus.bus_flags, id=conn.id, offset=offset, items_size=items_size,
                                 id128=bus.id128)
    log.debug("connection %d on %s/%s (%s)", conn.id, bus.name, endpoint.name, conn.kind.value)
    return conn


def _stated(args: Args[structs.CmdHello]) -> Snapshot:
    """The metadata a bus owner states at HELLO (CREDS, PIDS, SECLABEL items)."""
    creds_item = args.item(Item.CREDS)
    pids_item = args.item(Item.PIDS)
    label = args.item(Item.SECLABEL)
    return Snapshot.stated(
        tuple(structs.CREDS.unpack(creds_item.payload)) if creds_item is not None else None,
        tuple(structs.PIDS.unpack(pids_item.payload)) if pids_item is not None else None,
        label.string if label else None,
    )
