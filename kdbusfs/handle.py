"""Open kdbus files and the one dispatch table from KDBUS_CMD_* to the model.

Every command follows the same frame (KDBUS-SPEC.md §2.2): check the handle may run it, copy the
command struct from the caller (8-aligned, bounded size), check flags and items, answer negotiation,
run, then write the caller-visible fields back. For commands whose ioctl number says _IOC_READ the
kernel copies our reply over the caller's fixed struct, so the reply carries the whole fixed part.
"""

from __future__ import annotations

import enum
import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

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
    Cmd,
    Item,
    ioc_dir,
    ioc_size,
)
from .abi.items import ItemSpec, ParsedItem, walk_items
from .abi.structs import U64, Layout
from .bus import limits
from .bus.bus import Bus
from .bus.connection import HELLO_FLAGS, Connection, Kind, is_owner
from .bus.domain import Domain
from .bus.endpoint import Endpoint
from .bus.errors import KdbusError
from .bus.metadata import Creds, sanitize_attach_flags
from .bus.names import is_valid_name

log = logging.getLogger("kdbusfs.handle")


class Caller(Protocol):
    """The task issuing an ioctl: its identity and its memory."""

    def creds(self) -> Creds: ...

    def read(self, address: int, size: int) -> bytes: ...

    def write(self, address: int, data: bytes) -> None: ...


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

    @property
    def domain(self) -> Domain:
        return self.node.domain if isinstance(self.node, Control) else self.node.bus.domain

    def release(self) -> None:
        """The last reference to the file is gone."""
        if self.type is HandleType.BUS_OWNER and self.bus is not None:
            self.bus.shutdown()
        elif self.type is HandleType.CONNECTED and self.conn is not None:
            self.conn.disconnect()
            # No mapping of the pool is left either (a mapping holds the file open).
            self.conn.pool.close()


class Args:
    """A command struct copied from the caller, its fixed part editable for write-back."""

    __slots__ = ("address", "data", "original", "fixed", "fields", "items", "negotiate")

    def __init__(self, address: int, data: bytes, layout: Layout,
                 items: dict[int, list[ParsedItem]]) -> None:
        self.address = address
        self.data = data
        self.original = data[: layout.size]
        self.fixed = bytearray(self.original)
        self.fields = layout.unpack(data)
        self.items = items
        self.negotiate = bool(self.fields.flags & FLAG_NEGOTIATE)

    def item(self, item_type: int) -> ParsedItem | None:
        found = self.items.get(item_type)
        return found[0] if found else None

    def set_u64(self, offset: int, value: int) -> None:
        U64.pack_into(self.fixed, offset, value)

    def set_bytes(self, offset: int, value: bytes) -> None:
        self.fixed[offset : offset + len(value)] = value


Runner = Callable[[Handle, Args, Caller], None]


@dataclass(frozen=True, slots=True)
class Command:
    cmd: Cmd
    layout: Layout
    flags: int
    items: dict[int, ItemSpec]
    run: Runner
    # Which handles may run it: a setup command wants a fresh handle on this node type; a connection
    # command wants a connection of one of these kinds.
    setup_on: type | None = None
    kinds: tuple[Kind, ...] = ()
    mandatory: tuple[int, ...] = field(default=())


def _specs(*specs: ItemSpec) -> dict[int, ItemSpec]:
    return {Item.NEGOTIATE: ItemSpec(Item.NEGOTIATE), **{s.type: s for s in specs}}


def _attach_flags(value: int) -> int:
    sane = sanitize_attach_flags(value)
    if sane is None:
        raise KdbusError(errno.EINVAL, f"unknown attach flags {value:#x}")
    return sane


# -- setup commands -----------------------------------------------------------------------------

def _bus_make(handle: Handle, args: Args, caller: Caller) -> None:
    assert isinstance(handle.node, Control)
    name_item = args.item(Item.MAKE_NAME)
    bloom_item = args.item(Item.BLOOM_PARAMETER)
    assert name_item is not None and bloom_item is not None
    bloom = structs.BLOOM_PARAMETER.unpack(bloom_item.payload)
    if not (limits.BUS_BLOOM_MIN_SIZE <= bloom.size <= limits.BUS_BLOOM_MAX_SIZE) or bloom.size % 8:
        raise KdbusError(errno.EINVAL, f"bloom size {bloom.size} not a multiple of 8 in [8, 4096]")
    if bloom.n_hash < 1:
        raise KdbusError(errno.EINVAL, "bloom n_hash must be at least 1")
    attach_item = args.item(Item.ATTACH_FLAGS_SEND)
    creator_attach = _attach_flags(attach_item.u64) if attach_item else 0
    flags = args.fields.flags
    bus = Bus.make(
        handle.domain, name_item.string, caller.creds(), flags,
        flags & (MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD), bloom.size, bloom.n_hash, creator_attach,
    )
    handle.type = HandleType.BUS_OWNER
    handle.bus = bus
    log.info("bus %s (id %d) created by uid %d", bus.name, bus.id, bus.uid)


def _hello(handle: Handle, args: Args, caller: Caller) -> None:
    endpoint = handle.node
    assert isinstance(endpoint, Endpoint)
    f = args.fields
    attach_send = _attach_flags(f.attach_flags_send)
    attach_recv = _attach_flags(f.attach_flags_recv)
    creds = caller.creds()
    faked = [t for t in (Item.CREDS, Item.PIDS, Item.SECLABEL) if t in args.items]
    if faked:
        if not is_owner(endpoint, handle.opener):
            raise KdbusError(errno.EPERM, "faking metadata needs bus owner rights")
        creds = _faked_creds(creds, args)
    name_item = args.item(Item.NAME)
    name = name_item.string if name_item else None
    if name is not None and not is_valid_name(name, allow_wildcard=True):
        raise KdbusError(errno.EINVAL, f"invalid well-known name {name!r}")
    description_item = args.item(Item.CONN_DESCRIPTION)
    conn = Connection.hello(
        endpoint, handle.opener, creds, f.flags & HELLO_FLAGS, attach_send, attach_recv,
        f.pool_size, description_item.string if description_item else None, name,
    )
    try:
        offset, items_size = conn.bloom_slice()
    except KdbusError:
        conn.disconnect()
        raise
    bus = endpoint.bus
    args.set_u64(40, bus.bus_flags)
    args.set_u64(48, conn.id)
    args.set_u64(64, offset)
    args.set_u64(72, items_size)
    args.set_bytes(80, bus.id128)
    handle.type = HandleType.CONNECTED
    handle.conn = conn
    log.debug("connection %d on %s/%s (%s)", conn.id, bus.name, endpoint.name, conn.kind.value)


def _faked_creds(real: Creds, args: Args) -> Creds:
    values = real
    creds_item = args.item(Item.CREDS)
    if creds_item is not None:
        c = structs.CREDS.unpack(creds_item.payload)
        values = Creds(
            real.pid, real.tid, real.ppid, c.uid, c.euid, c.suid, c.fsuid, c.gid, c.egid, c.sgid,
            c.fsgid, real.cap_effective, real.in_domain_userns, real.comm,
        )
    pids_item = args.item(Item.PIDS)
    if pids_item is not None:
        p = structs.PIDS.unpack(pids_item.payload)
        values = Creds(
            p.pid, p.tid, p.ppid, values.uid, values.euid, values.suid, values.fsuid, values.gid,
            values.egid, values.sgid, values.fsgid, values.cap_effective, values.in_domain_userns, "",
        )
    return values


# -- connection commands ------------------------------------------------------------------------

def _conn(handle: Handle) -> Connection:
    assert handle.conn is not None
    return handle.conn


def _byebye(handle: Handle, args: Args, caller: Caller) -> None:
    conn = _conn(handle)
    conn.disconnect()
    log.debug("connection %d said goodbye", conn.id)


def _free(handle: Handle, args: Args, caller: Caller) -> None:
    _conn(handle).pool.free_user(args.fields.offset)


def _update(handle: Handle, args: Args, caller: Caller) -> None:
    conn = _conn(handle)
    send_item = args.item(Item.ATTACH_FLAGS_SEND)
    recv_item = args.item(Item.ATTACH_FLAGS_RECV)
    policy = Item.NAME in args.items or Item.POLICY_ACCESS in args.items
    if send_item and conn.kind not in (Kind.ORDINARY, Kind.MONITOR):
        raise KdbusError(errno.EOPNOTSUPP, f"a {conn.kind.value} cannot change its send attach flags")
    if recv_item and conn.kind is Kind.POLICY_HOLDER:
        raise KdbusError(errno.EOPNOTSUPP, "a policy holder receives nothing")
    if policy and conn.kind is not Kind.POLICY_HOLDER:
        raise KdbusError(errno.EOPNOTSUPP, "only policy holders upload policy")
    if policy:
        raise KdbusError(errno.EOPNOTSUPP, "policy upload is not supported yet")
    new_send = _attach_flags(send_item.u64) if send_item else conn.attach_flags_send
    new_recv = _attach_flags(recv_item.u64) if recv_item else conn.attach_flags_recv
    conn.attach_flags_send, conn.attach_flags_recv = new_send, new_recv


def _conn_info(handle: Handle, args: Args, caller: Caller) -> None:
    conn = _conn(handle)
    attach = _attach_flags(args.fields.attach_flags)
    name_item = args.item(Item.NAME)
    if name_item is not None:
        # No connection owns a well-known name until the registry lands with messaging.
        raise KdbusError(errno.ESRCH, f"name {name_item.string!r} has no owner")
    if args.fields.id == 0:
        raise KdbusError(errno.EINVAL, "CONN_INFO needs an id or a NAME item")
    target = conn.find_peer(args.fields.id)
    offset, size = conn.publish(conn.info_of(target, attach))
    args.set_u64(40, offset)
    args.set_u64(48, size)


def _bus_creator_info(handle: Handle, args: Args, caller: Caller) -> None:
    conn = _conn(handle)
    attach = _attach_flags(args.fields.attach_flags)
    offset, size = conn.publish(conn.bus_creator_info(attach))
    args.set_u64(40, offset)
    args.set_u64(48, size)


def _list(handle: Handle, args: Args, caller: Caller) -> None:
    conn = _conn(handle)
    flags = args.fields.flags
    records = []
    for endpoint in conn.bus.endpoints.values():
        for peer in endpoint.connections.values():
            if peer.kind is Kind.MONITOR:
                continue
            if flags & LIST_UNIQUE:
                records.append(structs.INFO.pack(structs.INFO.size, peer.id, peer.flags))
    # Name records (LIST_NAMES, LIST_ACTIVATORS, LIST_QUEUED) join when the registry lands.
    data = b"".join(records)
    if not data:
        args.set_u64(24, conn.pool.size)
        args.set_u64(32, 0)
        return
    offset, size = conn.publish(data)
    args.set_u64(24, offset)
    args.set_u64(32, size)


_ALL_KINDS = (Kind.ORDINARY, Kind.MONITOR, Kind.ACTIVATOR, Kind.POLICY_HOLDER)

COMMANDS: dict[int, Command] = {
    c.cmd: c
    for c in (
        Command(Cmd.BUS_MAKE, structs.CMD, MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD,
                _specs(ItemSpec(Item.MAKE_NAME, mandatory=True),
                       ItemSpec(Item.BLOOM_PARAMETER, mandatory=True),
                       ItemSpec(Item.ATTACH_FLAGS_SEND)),
                _bus_make, setup_on=Control),
        Command(Cmd.HELLO, structs.CMD_HELLO, HELLO_FLAGS,
                _specs(ItemSpec(Item.NAME), ItemSpec(Item.CREDS), ItemSpec(Item.PIDS),
                       ItemSpec(Item.SECLABEL), ItemSpec(Item.CONN_DESCRIPTION),
                       ItemSpec(Item.POLICY_ACCESS, multiple=True)),
                _hello, setup_on=Endpoint),
        Command(Cmd.UPDATE, structs.CMD, 0,
                _specs(ItemSpec(Item.ATTACH_FLAGS_SEND), ItemSpec(Item.ATTACH_FLAGS_RECV),
                       ItemSpec(Item.NAME, multiple=True), ItemSpec(Item.POLICY_ACCESS, multiple=True)),
                _update, kinds=_ALL_KINDS),
        Command(Cmd.BYEBYE, structs.CMD, 0, _specs(), _byebye, kinds=(Kind.ORDINARY,)),
        Command(Cmd.FREE, structs.CMD_FREE, 0, _specs(), _free,
                kinds=(Kind.ORDINARY, Kind.MONITOR, Kind.ACTIVATOR)),
        Command(Cmd.CONN_INFO, structs.CMD_INFO, 0, _specs(ItemSpec(Item.NAME)), _conn_info,
                kinds=_ALL_KINDS),
        Command(Cmd.BUS_CREATOR_INFO, structs.CMD_INFO, 0, _specs(), _bus_creator_info,
                kinds=_ALL_KINDS),
        Command(Cmd.LIST, structs.CMD_LIST, LIST_UNIQUE | LIST_NAMES | LIST_ACTIVATORS | LIST_QUEUED,
                _specs(), _list, kinds=_ALL_KINDS),
    )
}
for _command in COMMANDS.values():
    for _spec in _command.items.values():
        if _spec.mandatory:
            object.__setattr__(_command, "mandatory", (*_command.mandatory, _spec.type))


def _check_handle(handle: Handle, command: Command) -> None:
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


def copy_in(caller: Caller, address: int, layout: Layout, in_data: bytes) -> bytes:
    """The whole command struct from the caller: aligned, at least the fixed part, at most 32 KiB."""
    if address & 7:
        raise KdbusError(errno.EFAULT, f"command struct at unaligned address {address:#x}")
    if len(in_data) >= 8:
        head = in_data
    else:
        try:
            head = caller.read(address, layout.size)
        except KdbusError:
            head = caller.read(address, 8)
    size = U64.unpack_from(head)[0]
    if size < layout.size:
        raise KdbusError(errno.EINVAL, f"size {size} below the {layout.size}-byte {layout.name}")
    if size > limits.CMD_MAX_SIZE:
        raise KdbusError(errno.EMSGSIZE, f"size {size} above {limits.CMD_MAX_SIZE}")
    if size <= len(head):
        return bytes(head[:size])
    return bytes(head) + caller.read(address + len(head), size - len(head))


def ioctl(handle: Handle, cmd: int, address: int, in_data: bytes, caller: Caller) -> bytes:
    """Run one kdbus ioctl; returns what to hand back as the ioctl's out data (raises KdbusError)."""
    command = COMMANDS.get(cmd)
    if command is None:
        raise KdbusError(errno.ENOTTY, f"unknown ioctl {cmd:#x}")
    _check_handle(handle, command)
    data = copy_in(caller, address, command.layout, in_data)
    flags = U64.unpack_from(data, 8)[0]
    returns_struct = bool(ioc_dir(cmd) & _IOC_READ)
    if flags & ~(command.flags | FLAG_NEGOTIATE):
        _write_return_flags(caller, address, data)
        raise KdbusError(errno.EINVAL, f"{command.cmd.name}: unknown flags {flags:#x}")
    try:
        items = walk_items(data, command.layout.size, command.items)
    except KdbusError:
        _write_return_flags(caller, address, data)
        raise
    args = Args(address, data, command.layout, items)
    _negotiate_items(args, command, caller)
    if args.negotiate:
        args.set_u64(8, command.flags)
        caller.write(address + 8, U64.pack(command.flags))
        return bytes(args.fixed[: ioc_size(cmd)]) if returns_struct else b""
    args.set_u64(16, 0)
    missing = [t for t in command.mandatory if t not in items]
    try:
        if missing:
            raise KdbusError(errno.EINVAL, f"{command.cmd.name}: missing item {Item(missing[0]).name}")
        command.run(handle, args, caller)
    except KdbusError:
        if args.fixed[16:24] != args.original[16:24]:
            caller.write(address + 16, bytes(args.fixed[16:24]))
        raise
    if returns_struct:
        return bytes(args.fixed[: ioc_size(cmd)])
    if args.fixed != args.original:
        caller.write(address, bytes(args.fixed))
    return b""


def _write_return_flags(caller: Caller, address: int, data: bytes) -> None:
    # kdbus zeroes return_flags in its copy and writes it back even when parsing fails.
    if data[16:24] != bytes(8):
        caller.write(address + 16, bytes(8))


def _negotiate_items(args: Args, command: Command, caller: Caller) -> None:
    """Zero, in the caller's NEGOTIATE item, every item type this command does not accept."""
    negotiation = args.item(Item.NEGOTIATE)
    if negotiation is None:
        return
    payload = negotiation.payload
    for i in range(0, len(payload), 8):
        wanted = U64.unpack_from(payload, i)[0]
        if wanted not in command.items:
            caller.write(args.address + negotiation.offset + 16 + i, bytes(8))

