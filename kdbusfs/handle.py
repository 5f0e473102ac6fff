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
import mmap
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol

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
    NAME_ACTIVATOR,
    NAME_IN_QUEUE,
    RECV_DROP,
    RECV_PEEK,
    RECV_RETURN_DROPPED_MSGS,
    RECV_RETURN_INCOMPLETE_FDS,
    RECV_USE_PRIORITY,
    SEND_SYNC_REPLY,
    Attach,
    Cmd,
    Item,
    ioc_dir,
    ioc_size,
)
from .abi.items import ItemSpec, ParsedItem, item, walk_items
from .abi.structs import U64, Layout, T
from .bus import limits, notify
from .bus.bus import Bus
from .bus.connection import HELLO_FLAGS, Connection, Kind, is_owner, is_privileged, unicast
from .bus.domain import Domain
from .bus.endpoint import Endpoint
from .bus.errors import KdbusError
from .bus.message import MSG_FLAGS, Passed, SenderFiles, Staged, parse_user, stage_parsed
from .bus.metadata import (
    DAEMON_USERNS,
    UNKNOWN_ROOT,
    Creds,
    Process,
    Snapshot,
    UserNamespace,
    View,
    sanitize_attach_flags,
)
from .bus.names import ACQUIRE_FLAGS, is_valid_name
from .bus.policy import may_own, may_see, may_see_name, parse_upload
from .bus.pool import Pool
from .bus.reply import SyncWait

log = logging.getLogger("kdbusfs.handle")


class Caller(Protocol):
    """The task issuing an ioctl: its identity, its process facts and its memory."""

    def creds(self) -> Creds: ...

    def process(self) -> Process: ...

    def read(self, address: int, size: int) -> bytes: ...

    def read_into(self, address: int, size: int, buffer: object, offset: int) -> None: ...

    def write(self, address: int, data: bytes) -> None: ...

    def files(self) -> SenderFiles: ...

    def close_fd(self, fd: int) -> None: ...

    def install(self, passed: Passed, pool: Pool, offset: int) -> bool:
        """Take the descriptors a received message passes: install them in this task and write
        their numbers into the message at `offset` in `pool` (True if all were), or close them
        (False: the task cannot be given descriptors, and the numbers stay -1)."""


@dataclass(slots=True, eq=False)
class Pending:
    """An ioctl that blocks (a synchronous SEND): the edge answers it when `wait` is done."""

    wait: SyncWait
    address: int
    msg_address: int


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


class Args(Generic[T]):
    """A command struct copied from the caller: its fixed part as the caller wrote it (`fields`)
    and as it goes back (`out`, which commands replace fields of by name), and its items."""

    __slots__ = ("address", "data", "layout", "fields", "out", "items", "negotiate")

    def __init__(self, address: int, data: bytes, layout: Layout[T],
                 items: dict[int, list[ParsedItem]]) -> None:
        self.address = address
        self.data = data
        self.layout = layout
        self.fields: T = layout.unpack(data)
        self.out: T = self.fields
        self.items = items
        self.negotiate = bool(U64.unpack_from(data, 8)[0] & FLAG_NEGOTIATE)

    def item(self, item_type: int) -> ParsedItem | None:
        found = self.items.get(item_type)
        return found[0] if found else None

    def fixed(self) -> bytes:
        """The fixed part to write back."""
        return self.layout.pack_fields(self.out)


# What a command body returns: a blocked call, the connection HELLO made, or nothing to report.
Runner = Callable[[Handle, Args[Any], Caller], "Pending | Connection | None"]


@dataclass(frozen=True, slots=True)
class Command:
    cmd: Cmd
    layout: Layout[Any]
    flags: int
    items: dict[int, ItemSpec]
    run: Runner
    # Which handles may run it: a setup command wants a fresh handle on this node type; a connection
    # command wants a connection of one of these kinds.
    setup_on: type | None = None
    # ENDPOINT_UPDATE: only on the handle that made a custom endpoint.
    owner_of_endpoint: bool = False
    kinds: tuple[Kind, ...] = ()
    mandatory: tuple[int, ...] = field(default=())
    # Extra work when negotiating (SEND negotiates its message too).
    negotiate: Callable[[Handle, Args[Any], Caller], None] | None = None
    # Commands that report through their struct even when failing (RECV on EAGAIN).
    writeback_on_error: bool = False

    @property
    def returns_struct(self) -> bool:
        """_IOC_READ in the number: the kernel copies our out data over the caller's fixed struct."""
        return bool(ioc_dir(self.cmd) & _IOC_READ)


def _specs(*specs: ItemSpec) -> dict[int, ItemSpec]:
    return {Item.NEGOTIATE: ItemSpec(Item.NEGOTIATE), **{s.type: s for s in specs}}


def _attach_flags(value: int) -> int:
    sane = sanitize_attach_flags(value)
    if sane is None:
        raise KdbusError(errno.EINVAL, f"unknown attach flags {value:#x}")
    return sane


# -- setup commands -----------------------------------------------------------------------------

def _bus_make(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
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
        handle.domain, name_item.string, Snapshot.capture(caller.process()), flags,
        flags & (MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD), bloom.size, bloom.n_hash, creator_attach,
    )
    handle.type = HandleType.BUS_OWNER
    handle.bus = bus
    log.info("bus %s (id %d) created by uid %d", bus.name, bus.id, bus.uid)


def _endpoint_make(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
    endpoint = handle.node
    assert isinstance(endpoint, Endpoint)
    if not is_owner(endpoint, handle.opener):
        raise KdbusError(errno.EPERM, "only the bus owner makes endpoints, through the bus's own endpoint")
    name_item = args.item(Item.MAKE_NAME)
    assert name_item is not None
    flags = args.fields.flags
    made = endpoint.bus.make_endpoint(name_item.string, caller.creds(),
                                      flags & (MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD))
    handle.type = HandleType.EP_OWNER
    handle.endpoint = made
    log.info("endpoint %s/%s created", endpoint.bus.name, made.name)


def _endpoint_update(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
    endpoint = handle.endpoint
    assert endpoint is not None and endpoint.policy is not None
    if not endpoint.active:
        raise KdbusError(errno.ESHUTDOWN, f"endpoint {endpoint.name} is gone")
    items = [*args.items.get(Item.NAME, []), *args.items.get(Item.POLICY_ACCESS, [])]
    endpoint.policy.entries = dict(parse_upload(items, allow_wildcards=True))


def _hello(handle: Handle, args: Args[structs.CmdHello], caller: Caller) -> Connection:
    endpoint = handle.node
    assert isinstance(endpoint, Endpoint)
    f = args.fields
    attach_send = _attach_flags(f.attach_flags_send)
    attach_recv = _attach_flags(f.attach_flags_recv)
    opener = handle.opener
    if Item.CREDS in args.items or Item.PIDS in args.items or Item.SECLABEL in args.items:
        if not is_owner(endpoint, opener):
            raise KdbusError(errno.EPERM, "faking metadata needs bus owner rights")
        snapshot = _faked_snapshot(args)
        if is_privileged(endpoint, opener) and Item.CREDS in args.items:
            # A privileged connection with faked creds is accounted to the faked user.
            opener = replace(opener, uid=snapshot.creds_.uid)
    else:
        snapshot = Snapshot.capture(_only(caller.process(), attach_send))
    process = caller.process()
    view = View(handle.opener_userns, process.pidns(), process.root() or UNKNOWN_ROOT)
    name_item = args.item(Item.NAME)
    name = name_item.string if name_item else None
    if name is not None and not is_valid_name(name, allow_wildcard=True):
        raise KdbusError(errno.EINVAL, f"invalid well-known name {name!r}")
    description_item = args.item(Item.CONN_DESCRIPTION)
    conn = Connection.hello(
        endpoint, opener, snapshot, f.flags & HELLO_FLAGS, attach_send, attach_recv,
        f.pool_size, description_item.string if description_item else None, name, handle.pool_memory,
        view,
    )
    if opener is not handle.opener:
        conn.opener = handle.opener
    try:
        offset, items_size = conn.bloom_slice()
        if conn.kind is not Kind.MONITOR:
            notify.id_change(conn.bus, Item.ID_ADD, conn)
        if name is not None:
            _register_special(conn, name, args)
    except KdbusError:
        conn.disconnect()
        # The handle stays fresh for another HELLO, which maps a pool of its own.
        conn.pool.close()
        raise
    bus = endpoint.bus
    args.out = args.out._replace(bus_flags=bus.bus_flags, id=conn.id, offset=offset, items_size=items_size,
                                 id128=bus.id128)
    handle.type = HandleType.CONNECTED
    handle.conn = conn
    log.debug("connection %d on %s/%s (%s)", conn.id, bus.name, endpoint.name, conn.kind.value)
    return conn


def _register_special(conn: Connection, name: str, args: Args[structs.CmdHello]) -> None:
    """An activator holds its name; activators and policy holders put up policy for their name."""
    access = args.items.get(Item.POLICY_ACCESS, [])
    name_item = args.item(Item.NAME)
    assert name_item is not None
    if conn.kind is Kind.ACTIVATOR:
        if not is_valid_name(name):
            raise KdbusError(errno.EINVAL, f"an activator needs a plain name, not {name!r}")
        conn.bus.names.become_activator(conn, name)
    upload = parse_upload([name_item, *access], allow_wildcards=conn.kind is Kind.POLICY_HOLDER)
    conn.bus.policy.replace(conn, upload)


class _Only:
    """A Process limited to the facts a connection lets CONN_INFO reveal (nothing else is read)."""

    def __init__(self, process: Process, mask: int) -> None:
        self._process = process
        self._mask = mask

    def creds(self) -> Creds:
        return self._process.creds()

    def __getattr__(self, name: str) -> object:
        getter = getattr(self._process, name)
        flag = _FACT_FLAGS.get(name)
        # Namespace facts are never shown, only used to translate what is.
        return getter if flag is None or self._mask & flag else (lambda: None)


_FACT_FLAGS = {"tid_comm": Attach.TID_COMM, "pid_comm": Attach.PID_COMM, "exe": Attach.EXE,
               "cmdline": Attach.CMDLINE, "cgroup": Attach.CGROUP, "caps": Attach.CAPS,
               "seclabel": Attach.SECLABEL, "audit": Attach.AUDIT}


def _only(process: Process, mask: int) -> Process:
    return _Only(process, mask)  # type: ignore[return-value]


_UNSET32 = 0xFFFF_FFFF


def _faked_snapshot(args: Args[structs.CmdHello]) -> Snapshot:
    """Metadata a bus owner states for its connection; no real process facts go with it."""
    ids = (_UNSET32,) * 8
    creds_item = args.item(Item.CREDS)
    if creds_item is not None:
        ids = structs.CREDS.struct.unpack(creds_item.payload)
    pids = (0, 0, 0)
    pids_item = args.item(Item.PIDS)
    if pids_item is not None:
        pids = structs.PIDS.struct.unpack(pids_item.payload)
    uid, euid, suid, fsuid, gid, egid, sgid, fsgid = ids
    creds = Creds(pids[0], pids[1], pids[2], uid, euid, suid, fsuid, gid, egid, sgid, fsgid)
    label = args.item(Item.SECLABEL)
    return Snapshot(creds, seclabel_=label.string if label else None, faked=True,
                    faked_items=(Item.CREDS in args.items, Item.PIDS in args.items))


# -- connection commands ------------------------------------------------------------------------

def _conn(handle: Handle) -> Connection:
    assert handle.conn is not None
    return handle.conn


def _byebye(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
    conn = _conn(handle)
    if conn.queue:
        raise KdbusError(errno.EBUSY, f"connection {conn.id} still has {len(conn.queue)} messages")
    conn.disconnect()
    log.debug("connection %d said goodbye", conn.id)


def _free(handle: Handle, args: Args[structs.CmdFree], caller: Caller) -> None:
    _conn(handle).pool.free_user(args.fields.offset)


def _update(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
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
    new_send = _attach_flags(send_item.u64) if send_item else conn.attach_flags_send
    new_recv = _attach_flags(recv_item.u64) if recv_item else conn.attach_flags_recv
    if policy:
        if len(args.items.get(Item.NAME, [])) > 1:
            raise KdbusError(errno.E2BIG, "a policy holder holds policy for one name")
        upload = parse_upload([*args.items.get(Item.NAME, []), *args.items.get(Item.POLICY_ACCESS, [])],
                              allow_wildcards=True)
        conn.bus.policy.replace(conn, upload)
    conn.attach_flags_send, conn.attach_flags_recv = new_send, new_recv


def _match_add(handle: Handle, args: Args[structs.CmdMatch], caller: Caller) -> None:
    conn = _conn(handle)
    assert conn.matches is not None
    rules = sorted((p for t, ps in args.items.items() if t != Item.NEGOTIATE for p in ps),
                   key=lambda p: p.offset)
    conn.matches.add(args.fields.cookie, rules, conn.bus.bloom_size,
                     bool(args.fields.flags & MATCH_REPLACE))


def _match_remove(handle: Handle, args: Args[structs.CmdMatch], caller: Caller) -> None:
    conn = _conn(handle)
    assert conn.matches is not None
    conn.matches.remove(args.fields.cookie)


def _conn_info(handle: Handle, args: Args[structs.CmdInfo], caller: Caller) -> None:
    conn = _conn(handle)
    attach = _attach_flags(args.fields.attach_flags)
    name_item = args.item(Item.NAME)
    if name_item is not None:
        entry = conn.bus.names.lookup(name_item.string)
        record = entry.owner() if entry is not None else None
        if record is None or not may_see_name(conn, caller.creds(), name_item.string):
            raise KdbusError(errno.ESRCH, f"name {name_item.string!r} has no owner")
        if args.fields.id != 0 and args.fields.id != record.conn.id:
            raise KdbusError(errno.ESRCH, f"name {name_item.string!r} is not owned by {args.fields.id}")
        target = record.conn
    elif args.fields.id == 0:
        raise KdbusError(errno.EINVAL, "CONN_INFO needs an id or a NAME item")
    else:
        target = conn.find_peer(args.fields.id)
        if not may_see(conn, caller.creds(), target):
            raise KdbusError(errno.ENXIO, f"connection {target.id} is not visible here")
    offset, size = conn.publish(conn.info_of(target, attach))
    args.out = args.out._replace(offset=offset, info_size=size)


def _bus_creator_info(handle: Handle, args: Args[structs.CmdInfo], caller: Caller) -> None:
    conn = _conn(handle)
    attach = _attach_flags(args.fields.attach_flags)
    offset, size = conn.publish(conn.bus_creator_info(attach))
    args.out = args.out._replace(offset=offset, info_size=size)


def _list(handle: Handle, args: Args[structs.CmdList], caller: Caller) -> None:
    conn = _conn(handle)
    flags = args.fields.flags
    records = []

    def hidden(name: str) -> bool:
        return conn.endpoint.policy is not None and not may_see_name(conn, caller.creds(), name)

    for peer in conn.bus.connections.values():
        if peer.kind is Kind.MONITOR:
            continue
        emitted = False
        for record in peer.name_records:
            if record.flags & NAME_ACTIVATOR:
                wanted = flags & LIST_ACTIVATORS
            elif record.flags & NAME_IN_QUEUE:
                wanted = flags & LIST_QUEUED
            else:
                wanted = flags & LIST_NAMES
            if wanted and hidden(record.entry.name):
                continue
            if wanted:
                name = item(Item.OWNED_NAME, U64.pack(record.flags) + record.entry.name.encode() + b"\0")
                records.append(structs.INFO.pack(structs.INFO.size + len(name), peer.id, peer.flags) + name)
                emitted = True
        if not emitted and flags & LIST_UNIQUE:
            records.append(structs.INFO.pack(structs.INFO.size, peer.id, peer.flags))
    data = b"".join(records)
    if not data:
        args.out = args.out._replace(offset=conn.pool.size, list_size=0)
        return
    offset, size = conn.publish(data)
    args.out = args.out._replace(offset=offset, list_size=size)


def _name_acquire(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
    conn = _conn(handle)
    name_item = args.item(Item.NAME)
    assert name_item is not None
    name = name_item.string
    if not is_valid_name(name):
        raise KdbusError(errno.EINVAL, f"invalid well-known name {name!r}")
    if not may_own(conn, caller.creds(), name):
        raise KdbusError(errno.EPERM, f"connection {conn.id} may not own {name}")
    try:
        return_flags = conn.bus.names.acquire(conn, name, args.fields.flags & ACQUIRE_FLAGS)
    except KdbusError as exc:
        flags = getattr(exc, "return_flags", None)
        if flags is not None:
            args.out = args.out._replace(return_flags=flags)
        raise
    args.out = args.out._replace(return_flags=return_flags)


def _name_release(handle: Handle, args: Args[structs.Cmd], caller: Caller) -> None:
    conn = _conn(handle)
    name_item = args.item(Item.NAME)
    assert name_item is not None
    conn.bus.names.release(conn, name_item.string)


def _recv(handle: Handle, args: Args[structs.CmdRecv], caller: Caller) -> None:
    conn = _conn(handle)
    flags = args.fields.flags
    if flags & RECV_DROP and flags & RECV_USE_PRIORITY:
        raise KdbusError(errno.EINVAL, "RECV cannot DROP by priority")
    lost = conn.take_lost()
    # What an empty queue (EAGAIN) reports, with the count of messages lost since the last RECV.
    args.out = args.out._replace(dropped_msgs=lost, return_flags=RECV_RETURN_DROPPED_MSGS if lost else 0,
                                 msg_offset=conn.pool.size, msg_msg_size=0, msg_return_flags=0)
    priority = args.fields.priority if flags & RECV_USE_PRIORITY else None
    offset, size, return_flags, passed = conn.recv(bool(flags & RECV_PEEK), bool(flags & RECV_DROP),
                                                   priority)
    if passed is not None and caller.install(passed, conn.pool, offset):
        return_flags &= ~RECV_RETURN_INCOMPLETE_FDS
    args.out = args.out._replace(msg_offset=offset, msg_msg_size=size, msg_return_flags=return_flags)


def _send(handle: Handle, args: Args[structs.CmdSend], caller: Caller) -> Pending | None:
    conn = _conn(handle)
    cmd_flags = args.fields.flags
    # The reply field reads "no reply" unless a synchronous call gets one.
    args.out = args.out._replace(reply_offset=conn.pool.size, reply_msg_size=0, reply_return_flags=0)
    # kdbus's order: the message's framing, then the CANCEL_FD, then src_id, then the rest.
    parsed = parse_user(copy_in(caller, args.fields.msg_address, structs.MSG, b""))
    cancel_fd = None
    cancel_item = args.item(Item.CANCEL_FD)
    if cancel_item is not None:
        # Checked on every SEND, used only by synchronous ones.
        cancel_fd = caller.files().pollable(int.from_bytes(cancel_item.payload, "little", signed=True))
        if not cmd_flags & SEND_SYNC_REPLY:
            caller.close_fd(cancel_fd)
            cancel_fd = None
    try:
        if parsed.fields.src_id not in (0, conn.id):
            raise KdbusError(errno.EINVAL, f"src_id {parsed.fields.src_id} is not the sender's id {conn.id}")
        msg = stage_parsed(parsed, cmd_flags, conn.bus.bloom_size, caller.files)
        try:
            return _deliver(conn, msg, cmd_flags, args, caller, cancel_fd)
        finally:
            # Whatever no receiver's queue took (a broadcast, a failed or synchronous delivery).
            msg.release_passed()
    except BaseException:
        if cancel_fd is not None:
            caller.close_fd(cancel_fd)
        raise


def _deliver(conn: Connection, msg: Staged, cmd_flags: int, args: Args[structs.CmdSend], caller: Caller,
             cancel_fd: int | None) -> Pending | None:
    msg.src_id = conn.id
    sync = None
    now = time.monotonic_ns()
    if cmd_flags & SEND_SYNC_REPLY:
        if msg.timeout_or_reply <= now:
            raise KdbusError(errno.ETIMEDOUT, "the call's deadline has already passed")
        sync = SyncWait(conn, cancel_fd=cancel_fd)
    conn.bus.stamp(msg)
    msg.read_into = caller.read_into
    process = caller.process()
    if msg.is_broadcast:
        conn.bus.broadcast(conn, msg, process)
    else:
        unicast(conn, msg, process, sync)
    if sync is not None:
        return Pending(sync, args.address, args.fields.msg_address)
    return None


def _negotiate_send(handle: Handle, args: Args[structs.CmdSend], caller: Caller) -> None:
    """A negotiating SEND also negotiates the message it points to, if any."""
    address = args.fields.msg_address
    if not address:
        return
    data = copy_in(caller, address, structs.MSG, b"")
    if not U64.unpack_from(data, 8)[0] & FLAG_NEGOTIATE:
        raise KdbusError(errno.EINVAL, "message negotiation needs a negotiating SEND")
    caller.write(address + 8, U64.pack(MSG_FLAGS))
    found = walk_items(data, structs.MSG.size, MSG_NEGOTIABLE)
    negotiation = found.get(Item.NEGOTIATE)
    if negotiation:
        payload = negotiation[0].payload
        for i in range(0, len(payload), 8):
            if U64.unpack_from(payload, i)[0] not in MSG_NEGOTIABLE:
                caller.write(address + negotiation[0].offset + 16 + i, bytes(8))


# The item types a message may carry, as a negotiating SEND reports them.
MSG_NEGOTIABLE = _specs(*(ItemSpec(t, multiple=True) for t in (
    Item.PAYLOAD_VEC, Item.PAYLOAD_MEMFD, Item.FDS, Item.BLOOM_FILTER, Item.DST_NAME)))
_ALL_KINDS = (Kind.ORDINARY, Kind.MONITOR, Kind.ACTIVATOR, Kind.POLICY_HOLDER)
_RECEIVERS = (Kind.ORDINARY, Kind.MONITOR, Kind.ACTIVATOR)

COMMANDS: dict[int, Command] = {
    c.cmd: c
    for c in (
        Command(Cmd.BUS_MAKE, structs.CMD, MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD,
                _specs(ItemSpec(Item.MAKE_NAME, mandatory=True),
                       ItemSpec(Item.BLOOM_PARAMETER, mandatory=True),
                       ItemSpec(Item.ATTACH_FLAGS_SEND)),
                _bus_make, setup_on=Control),
        Command(Cmd.ENDPOINT_MAKE, structs.CMD, MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD,
                _specs(ItemSpec(Item.MAKE_NAME, mandatory=True)), _endpoint_make, setup_on=Endpoint),
        Command(Cmd.ENDPOINT_UPDATE, structs.CMD, 0,
                _specs(ItemSpec(Item.NAME, multiple=True), ItemSpec(Item.POLICY_ACCESS, multiple=True)),
                _endpoint_update, owner_of_endpoint=True),
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
        Command(Cmd.FREE, structs.CMD_FREE, 0, _specs(), _free, kinds=_RECEIVERS),
        Command(Cmd.CONN_INFO, structs.CMD_INFO, 0, _specs(ItemSpec(Item.NAME)), _conn_info,
                kinds=_ALL_KINDS),
        Command(Cmd.BUS_CREATOR_INFO, structs.CMD_INFO, 0, _specs(), _bus_creator_info,
                kinds=_ALL_KINDS),
        Command(Cmd.LIST, structs.CMD_LIST, LIST_UNIQUE | LIST_NAMES | LIST_ACTIVATORS | LIST_QUEUED,
                _specs(), _list, kinds=_ALL_KINDS),
        Command(Cmd.SEND, structs.CMD_SEND, SEND_SYNC_REPLY, _specs(ItemSpec(Item.CANCEL_FD)), _send,
                kinds=(Kind.ORDINARY,), negotiate=_negotiate_send),
        Command(Cmd.RECV, structs.CMD_RECV, RECV_PEEK | RECV_DROP | RECV_USE_PRIORITY, _specs(), _recv,
                kinds=_RECEIVERS, writeback_on_error=True),
        Command(Cmd.NAME_ACQUIRE, structs.CMD, ACQUIRE_FLAGS,
                _specs(ItemSpec(Item.NAME, mandatory=True)), _name_acquire, kinds=(Kind.ORDINARY,)),
        Command(Cmd.NAME_RELEASE, structs.CMD, 0, _specs(ItemSpec(Item.NAME, mandatory=True)),
                _name_release, kinds=(Kind.ORDINARY,)),
        Command(Cmd.MATCH_ADD, structs.CMD_MATCH, MATCH_REPLACE,
                _specs(*(ItemSpec(t, multiple=True) for t in (
                    Item.BLOOM_MASK, Item.NAME, Item.ID, Item.DST_ID, Item.NAME_ADD, Item.NAME_REMOVE,
                    Item.NAME_CHANGE, Item.ID_ADD, Item.ID_REMOVE))),
                _match_add, kinds=(Kind.ORDINARY,)),
        Command(Cmd.MATCH_REMOVE, structs.CMD_MATCH, 0, _specs(), _match_remove, kinds=(Kind.ORDINARY,)),
    )
}
for _command in COMMANDS.values():
    for _spec in _command.items.values():
        if _spec.mandatory:
            object.__setattr__(_command, "mandatory", (*_command.mandatory, _spec.type))
    # The fixed part is what _IOC_SIZE covers, so the reply of an _IOC_READ command is all of it.
    assert _command.layout.size == ioc_size(_command.cmd), _command.cmd.name
_RETURNS_STRUCT = {cmd: command.returns_struct for cmd, command in COMMANDS.items()}


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


_PAGE = limits.PAGE_SIZE
_READ_AHEAD = 512


def copy_in(caller: Caller, address: int, layout: Layout[Any], in_data: bytes) -> bytes:
    """The whole command struct from the caller: aligned, at least the fixed part, at most 32 KiB."""
    if address & 7:
        raise KdbusError(errno.EFAULT, f"{layout.name} at unaligned address {address:#x}")
    if len(in_data) >= 8:
        head = in_data
    else:
        # One read usually covers the whole struct: take up to 512 bytes, within the page.
        chunk = max(layout.size, min(_READ_AHEAD, _PAGE - address % _PAGE))
        try:
            head = caller.read(address, chunk)
        except KdbusError:
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
    returns_struct = _RETURNS_STRUCT[cmd]
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
            command.negotiate(handle, args, caller)
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
        outcome = command.run(handle, args, caller)
    except KdbusError:
        if command.writeback_on_error and args.out != args.fields:
            caller.write(address, args.fixed())
        elif args.out.return_flags != args.fields.return_flags:
            caller.write(address + 16, U64.pack(args.out.return_flags))
        raise
    if isinstance(outcome, Pending):
        return outcome
    if returns_struct:
        out = args.fixed()
    else:
        if args.out != args.fields:
            caller.write(address, args.fixed())
        out = b""
    return out if outcome is None else Connected(outcome, out)


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
