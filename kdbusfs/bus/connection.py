"""Connections: what a HELLO on an endpoint handle creates."""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass, field

from ..abi import structs
from ..abi.constants import (
    HELLO_ACCEPT_FD,
    HELLO_ACTIVATOR,
    HELLO_MONITOR,
    HELLO_POLICY_HOLDER,
    Item,
)
from ..abi.items import item, string_item
from . import limits
from .bus import Bus
from .domain import User
from .endpoint import Endpoint
from .errors import KdbusError
from .metadata import CAP_IPC_OWNER, Creds, render
from .pool import Pool

HELLO_FLAGS = HELLO_ACCEPT_FD | HELLO_ACTIVATOR | HELLO_POLICY_HOLDER | HELLO_MONITOR


class Kind(enum.Enum):
    ORDINARY = "ordinary"
    MONITOR = "monitor"
    ACTIVATOR = "activator"
    POLICY_HOLDER = "policy holder"


def kind_of(flags: int) -> Kind:
    special = flags & (HELLO_ACTIVATOR | HELLO_POLICY_HOLDER | HELLO_MONITOR)
    if special & (special - 1):
        raise KdbusError(errno.EINVAL, "at most one of ACTIVATOR, POLICY_HOLDER, MONITOR")
    if special == HELLO_MONITOR:
        return Kind.MONITOR
    if special == HELLO_ACTIVATOR:
        return Kind.ACTIVATOR
    if special == HELLO_POLICY_HOLDER:
        return Kind.POLICY_HOLDER
    return Kind.ORDINARY


def is_privileged(endpoint: Endpoint, opener: Creds) -> bool:
    return endpoint.is_default and opener.has_cap(CAP_IPC_OWNER)


def is_owner(endpoint: Endpoint, opener: Creds) -> bool:
    """Bus owner rights: the bus creator's euid, or CAP_IPC_OWNER, on the default endpoint."""
    return endpoint.is_default and (opener.euid == endpoint.bus.uid or is_privileged(endpoint, opener))


@dataclass(slots=True, eq=False)
class Connection:
    id: int
    bus: Bus
    endpoint: Endpoint
    flags: int
    kind: Kind
    attach_flags_send: int
    attach_flags_recv: int
    pool: Pool
    opener: Creds
    # The HELLO caller, as CONN_INFO reports it.
    creds: Creds
    user: User
    description: str | None = None
    owner: bool = False
    privileged: bool = False
    active: bool = True
    names: list[str] = field(default_factory=list)

    @classmethod
    def hello(
        cls, endpoint: Endpoint, opener: Creds, caller: Creds, flags: int,
        attach_flags_send: int, attach_flags_recv: int, pool_size: int,
        description: str | None, name: str | None,
    ) -> Connection:
        bus = endpoint.bus
        if not (bus.active and endpoint.active and bus.domain.active):
            raise KdbusError(errno.ESHUTDOWN, "endpoint is shutting down")
        kind = kind_of(flags)
        if pool_size == 0 or pool_size % limits.PAGE_SIZE:
            raise KdbusError(errno.EINVAL, f"pool size {pool_size} is not a positive multiple of a page")
        if pool_size > limits.POOL_MAX_SIZE:
            raise KdbusError(errno.EINVAL, f"pool size {pool_size} exceeds {limits.POOL_MAX_SIZE}")
        if kind in (Kind.ACTIVATOR, Kind.POLICY_HOLDER):
            if name is None:
                raise KdbusError(errno.EINVAL, f"{kind.value} needs a NAME item")
        elif name is not None:
            raise KdbusError(errno.EINVAL, f"NAME item on a {kind.value} connection")
        if kind is Kind.MONITOR and not endpoint.is_default:
            raise KdbusError(errno.EOPNOTSUPP, "monitors are not allowed on custom endpoints")
        owner = is_owner(endpoint, opener)
        if kind is not Kind.ORDINARY and not owner:
            raise KdbusError(errno.EPERM, f"a {kind.value} needs bus owner rights")
        user = bus.domain.user(opener.uid)
        user.charge_connection()
        conn = cls(
            id=bus.domain.next_id(), bus=bus, endpoint=endpoint, flags=flags, kind=kind,
            attach_flags_send=attach_flags_send, attach_flags_recv=attach_flags_recv,
            pool=Pool(pool_size), opener=opener, creds=caller, user=user,
            description=description, owner=owner, privileged=is_privileged(endpoint, opener),
        )
        endpoint.connections[conn.id] = conn
        return conn

    def bloom_slice(self) -> tuple[int, int]:
        """Publish the bus's bloom parameters in the pool, as HELLO returns them."""
        payload = item(Item.BLOOM_PARAMETER,
                       structs.BLOOM_PARAMETER.pack(self.bus.bloom_size, self.bus.bloom_n_hash))
        return self.publish(payload)

    def publish(self, data: bytes) -> tuple[int, int]:
        """Copy `data` into a fresh unaccounted slice and hand it to the client: (offset, size)."""
        piece = self.pool.alloc(len(data))
        self.pool.write(piece, data)
        self.pool.publish(piece)
        self.pool.release_bus_ref(piece)
        return piece.offset, piece.size

    def require(self, *kinds: Kind) -> None:
        if not self.active:
            raise KdbusError(errno.ECONNRESET, f"connection {self.id} is disconnected")
        if self.kind not in kinds:
            raise KdbusError(errno.EOPNOTSUPP, f"not allowed on a {self.kind.value} connection")

    def disconnect(self) -> bool:
        """Tear the connection down; returns False if it already was."""
        if not self.active:
            return False
        self.active = False
        self.endpoint.connections.pop(self.id, None)
        self.user.connections -= 1
        self.bus.domain.changed.append(self)
        return True

    def find_peer(self, conn_id: int) -> Connection:
        for endpoint in self.bus.endpoints.values():
            peer = endpoint.connections.get(conn_id)
            if peer is not None:
                return peer
        raise KdbusError(errno.ENXIO, f"no connection {conn_id} on bus {self.bus.name}")

    def info_of(self, target: Connection, attach_flags: int) -> bytes:
        """A kdbus_info record about `target` with the metadata it permits and the caller asked for."""
        mask = attach_flags & target.attach_flags_send
        items = render(target.creds, mask, target.description)
        return structs.INFO.pack(structs.INFO.size + len(items), target.id, target.flags) + items

    def bus_creator_info(self, attach_flags: int) -> bytes:
        bus = self.bus
        items = string_item(Item.MAKE_NAME, bus.name)
        items += render(bus.creator, attach_flags & bus.creator_attach)
        return structs.INFO.pack(structs.INFO.size + len(items), bus.id, bus.bus_flags) + items
