"""A bus: a named message space in a domain, created by KDBUS_CMD_BUS_MAKE.

The bus owns what its connections share: the name registry, the policy database, the message
sequence counter, and the replies awaited; notify.py has the kernel notifications it sends.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import limits
from ..abi import structs
from ..abi.constants import (
    MAKE_ACCESS_GROUP,
    MAKE_ACCESS_WORLD,
    MSG_NO_AUTO_START,
    NAME_ACTIVATOR,
    Attach,
    Item,
)
from ..abi.items import string_item
from ..errors import KdbusError
from . import message as msgs
from . import notify
from .command import Args, Caller, attach_flags
from .connection import Kind
from .domain import Domain
from .endpoint import Endpoint, node_mode
from .match import NotificationSubscribers, selecting
from .metadata import Creds, Process, Snapshot, View, render
from .names import Registry, is_valid_name
from .policy import PolicyDb, may_talk
from .stats import Counters

if TYPE_CHECKING:
    from .connection import Connection
    from .reply import Reply

log = logging.getLogger("kdbusfs.bus")
DEFAULT_ENDPOINT = "bus"


def check_uid_prefix(name: str, euid: int) -> None:
    """Bus and custom endpoint names start with the creator's euid and a dash."""
    if not name.startswith(f"{euid}-"):
        raise KdbusError(errno.EINVAL, f"name {name!r} does not start with '{euid}-'")


@dataclass(slots=True, eq=False)
class Bus:
    domain: Domain
    id: int
    name: str
    uid: int
    gid: int
    mode: int
    bus_flags: int
    bloom_size: int
    bloom_n_hash: int
    creator: Snapshot
    # Which of the creator's metadata BUS_CREATOR_INFO may reveal.
    creator_attach: int
    id128: bytes = field(default_factory=lambda: uuid.uuid4().bytes)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    connections: dict[int, Connection] = field(default_factory=dict)
    # Monitors see every message, before its recipients.
    monitors: list[Connection] = field(default_factory=list)
    # Who can take each kind of broadcast kernel notification: the only connections it visits.
    notification_subscribers: NotificationSubscribers = field(default_factory=NotificationSubscribers)
    policy: PolicyDb = field(default_factory=PolicyDb)
    names: Registry = field(init=False)
    active: bool = True
    # Statistics (stats.pyx): what departed connections did, and kernel notifications sent.
    gone_counters: Counters = field(default_factory=Counters)
    kernel_notifications: int = 0
    _last_seqnum: int = 0

    def __post_init__(self) -> None:
        self.names = Registry(functools.partial(notify.name_change, self), self._move_messages)

    @classmethod
    def make(
        cls, domain: Domain, name: str, creator: Snapshot, flags: int, access: int,
        bloom_size: int, bloom_n_hash: int, creator_attach: int,
    ) -> Bus:
        if not domain.active:
            raise KdbusError(errno.ESHUTDOWN, "domain is shutting down")
        creds = creator.creds()
        check_uid_prefix(name, creds.euid)
        if name in domain.buses:
            raise KdbusError(errno.EEXIST, f"bus {name!r} exists")
        domain.user(creds.uid).charge_bus()
        bus = cls(
            domain, domain.next_id(), name, creds.euid, creds.egid, node_mode(0o500, access),
            flags, bloom_size, bloom_n_hash, creator, creator_attach,
        )
        bus.endpoints[DEFAULT_ENDPOINT] = Endpoint(
            bus, DEFAULT_ENDPOINT, creds.euid, creds.egid, node_mode(0o600, access), True,
        )
        domain.buses[name] = bus
        return bus

    @property
    def default_endpoint(self) -> Endpoint:
        return self.endpoints[DEFAULT_ENDPOINT]

    def make_endpoint(self, name: str, creds: Creds, access: int) -> Endpoint:
        """A custom endpoint: its own file beside `bus`, its own (initially empty) policy."""
        if not (self.active and self.domain.active):
            raise KdbusError(errno.ESHUTDOWN, f"bus {self.name} is going away")
        check_uid_prefix(name, creds.euid)
        if name in self.endpoints:
            raise KdbusError(errno.EEXIST, f"endpoint {name!r} exists on {self.name}")
        endpoint = Endpoint(self, name, creds.euid, creds.egid, node_mode(0o600, access), False,
                            policy=PolicyDb(), user=self.domain.anonymous_user())
        self.endpoints[name] = endpoint
        return endpoint

    def shutdown(self) -> None:
        """The bus owner's handle went away: remove the bus and disconnect everyone on it."""
        if not self.active:
            return
        self.active = False
        for endpoint in list(self.endpoints.values()):
            endpoint.shutdown()
        self.endpoints.clear()
        if self.domain.buses.get(self.name) is self:
            del self.domain.buses[self.name]
        self.domain.user(self.creator.creds().uid).buses -= 1

    # -- messages -----------------------------------------------------------------------------
    def stamp(self, msg: msgs.Staged) -> None:
        """Give a message its bus-wide sequence number and timestamps (one per SEND)."""
        self._last_seqnum += 1
        msg.seqnum = self._last_seqnum
        msg.timestamp = (self._last_seqnum, time.monotonic_ns(), time.time_ns())

    def resolve_destination(self, msg: msgs.Staged) -> tuple[Connection, int | None]:
        """The receiving connection of a unicast and the name registration it went through."""
        if msg.dst_name is not None:
            entry = self.names.lookup(msg.dst_name)
            # Checked here, not at staging (broadcasts have none); a registered name was checked
            # when it was taken, so only the names nobody holds need the rules applied.
            if entry is None and not is_valid_name(msg.dst_name):
                raise KdbusError(errno.EINVAL, f"invalid destination name {msg.dst_name!r}")
            record = entry.owner() if entry is not None else None
            if record is None or entry is None:
                raise KdbusError(errno.ESRCH, f"name {msg.dst_name} has no owner")
            if msg.dst_id != 0 and msg.dst_id != record.conn.id:
                raise KdbusError(errno.EREMCHG, f"name {msg.dst_name} is not owned by {msg.dst_id}")
            if record.flags & NAME_ACTIVATOR and msg.flags & MSG_NO_AUTO_START:
                raise KdbusError(errno.EADDRNOTAVAIL, f"name {msg.dst_name} is only activatable")
            return record.conn, entry.name_id
        dst = self.connections.get(msg.dst_id)
        if dst is None or dst.kind is not Kind.ORDINARY:
            raise KdbusError(errno.ENXIO, f"no ordinary connection {msg.dst_id}")
        return dst, None

    def may_talk(self, src: Connection, process: Process | None, dst: Connection) -> bool:
        """TALK with the sender's current credentials, read only when the owner shortcut fails."""
        if src.owner:
            return True
        return may_talk(src, process.creds() if process is not None else src.opener, dst)

    def signal_wanted(self, dst: Connection, src: Connection, msg: msgs.Staged) -> bool:
        """Whether `dst` takes a signal from `src`: its matches select it and it may talk to `src`."""
        return bool(selecting((dst,), msg, src)) and may_talk(dst, dst.opener, src)

    def to_monitors(self, msg: msgs.Staged, src: Connection | None, process: Process | None) -> None:
        """A copy for every monitor, before the recipients; a monitor that cannot take it counts it lost."""
        for monitor in self.monitors:
            try:
                monitor.enqueue(msg, src, process)
            except KdbusError as exc:
                log.debug("monitor %d lost a message: %s", monitor.id, exc)
                monitor.lose_message()

    def creator_record(self, attach_flags: int, view: View) -> bytes:
        """A kdbus_info record of the bus: its name and what its creator let be known, as `view`
        sees it."""
        never = Attach.TIMESTAMP | Attach.NAMES | Attach.CONN_DESCRIPTION
        mask = attach_flags & self.creator_attach & ~never
        items = string_item(Item.MAKE_NAME, self.name) + render(self.creator, mask, view=view)
        return structs.INFO.pack(structs.INFO.size + len(items), self.id, self.bus_flags) + items

    # -- replies ------------------------------------------------------------------------------
    def schedule_timeout(self, reply: Reply) -> None:
        self.domain.schedule(reply.deadline_ns, reply)

    def forget_reply(self, reply: Reply) -> None:
        """Drop a tracker without telling anyone (answered, timed out, or its caller left)."""
        reply.waiting = False
        if reply in reply.caller.trackers:
            reply.caller.trackers.remove(reply)
        if reply in reply.replier.awaited:
            reply.replier.awaited.remove(reply)
        if reply.sync is not None and reply.sync in reply.caller.sync_waits:
            reply.caller.sync_waits.remove(reply.sync)

    def reply_dead(self, reply: Reply) -> None:
        """The replier went away or dropped the call: EPIPE for a blocked caller, else REPLY_DEAD."""
        if not reply.waiting:
            return
        self.forget_reply(reply)
        if reply.sync is not None:
            reply.sync.finish(errno.EPIPE)
        else:
            notify.reply_lost(self, reply, Item.REPLY_DEAD)

    def reply_timeout(self, reply: Reply) -> None:
        if not reply.waiting:
            return
        self.forget_reply(reply)
        if reply.sync is not None:
            # No REPLY_TIMEOUT for synchronous calls; an abandoned (interrupted) one just goes away.
            reply.sync.finish(errno.ETIMEDOUT)
        else:
            notify.reply_lost(self, reply, Item.REPLY_TIMEOUT)

    def connection_gone(self, conn: Connection) -> None:
        self.gone_counters.add(conn.stats)
        if conn in self.monitors:
            self.monitors.remove(conn)
        if conn.kind is not Kind.MONITOR:
            notify.id_change(self, Item.ID_REMOVE, conn)

    def _move_messages(self, to: Connection, from_: Connection, name_id: int) -> None:
        """A name moved between an activator and an implementer: so do the messages queued on
        `from_` through that name registration, and the calls awaiting answers through it."""
        for reply in list(from_.awaited):
            if reply.name_id == name_id:
                from_.awaited.remove(reply)
                to.awaited.append(reply)
                reply.replier = to
        for entry in list(from_.queue.entries.values()):
            if entry.name_id != name_id:
                continue
            from_.take_entry(entry)
            try:
                to.adopt_entry(entry, from_.pool)
            except KdbusError as exc:
                log.info("message moved from %d to %d lost: %s", from_.id, to.id, exc)
                entry.drop_passed()
                to.lose_message()
                if entry.reply is not None:
                    self.reply_dead(entry.reply)
            finally:
                from_.pool.release_bus_ref(entry.slice)


# -- commands ---------------------------------------------------------------------------------

def cmd_bus_make(domain: Domain, args: Args[structs.Cmd], caller: Caller) -> Bus:
    """BUS_MAKE on `control`: a bus with its default endpoint, owned by the caller."""
    name_item = args.item(Item.MAKE_NAME)
    bloom_item = args.item(Item.BLOOM_PARAMETER)
    assert name_item is not None and bloom_item is not None
    bloom = structs.BLOOM_PARAMETER.unpack(bloom_item.payload)
    if not (limits.BUS_BLOOM_MIN_SIZE <= bloom.size <= limits.BUS_BLOOM_MAX_SIZE) or bloom.size % 8:
        raise KdbusError(errno.EINVAL, f"bloom size {bloom.size} not a multiple of 8 in [8, 4096]")
    if bloom.n_hash < 1:
        raise KdbusError(errno.EINVAL, "bloom n_hash must be at least 1")
    attach_item = args.item(Item.ATTACH_FLAGS_SEND)
    creator_attach = attach_flags(attach_item.u64) if attach_item else 0
    flags = args.fields.flags
    bus = Bus.make(
        domain, name_item.string, Snapshot.capture(caller.process()), flags,
        flags & (MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD), bloom.size, bloom.n_hash, creator_attach,
    )
    log.info("bus %s (id %d) created by uid %d", bus.name, bus.id, bus.uid)
    return bus


def cmd_bus_creator_info(conn: Connection, args: Args[structs.CmdInfo], caller: Caller) -> None:
    """BUS_CREATOR_INFO: the bus's name and what its creator let be known, in the pool."""
    offset, size = conn.publish(conn.bus.creator_record(attach_flags(args.fields.attach_flags), conn.view))
    args.out = args.out._replace(offset=offset, info_size=size)
