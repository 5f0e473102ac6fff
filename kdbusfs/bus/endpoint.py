"""Endpoints: the files of a bus that clients open and connect through."""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..abi import structs
from ..abi.constants import MAKE_ACCESS_GROUP, MAKE_ACCESS_WORLD, Item
from ..errors import KdbusError
from .command import Args, Caller
from .metadata import CAP_IPC_OWNER, Creds
from .policy import parse_upload

if TYPE_CHECKING:
    from .bus import Bus
    from .connection import Connection
    from .domain import User
    from .policy import PolicyDb


log = logging.getLogger("kdbusfs.endpoint")


def node_mode(base: int, access_flags: int) -> int:
    """Permission bits of a kdbus node: owner always, group with GROUP or WORLD, others with WORLD."""
    mode = base
    if access_flags & (MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD):
        mode |= (base >> 3) & 0o070
    if access_flags & MAKE_ACCESS_WORLD:
        mode |= (base >> 6) & 0o007
    return mode


@dataclass(slots=True, eq=False)
class Endpoint:
    bus: Bus
    name: str
    uid: int
    gid: int
    mode: int
    is_default: bool
    connections: dict[int, Connection] = field(default_factory=dict)
    active: bool = True
    # Custom endpoints only: their own policy (empty: nothing visible, nothing allowed), and one
    # anonymous accounting user for everyone who connects through them.
    policy: PolicyDb | None = None
    user: User | None = None

    def shutdown(self) -> None:
        """The endpoint goes (its owner's handle closed, or the bus went): disconnect its users."""
        self.active = False
        for conn in list(self.connections.values()):
            conn.disconnect()
        if not self.is_default and self.bus.endpoints.get(self.name) is self:
            del self.bus.endpoints[self.name]


def is_privileged(endpoint: Endpoint, opener: Creds) -> bool:
    return endpoint.is_default and opener.has_cap(CAP_IPC_OWNER)


def is_owner(endpoint: Endpoint, opener: Creds) -> bool:
    """Bus owner rights: the bus creator's euid, or CAP_IPC_OWNER, on the default endpoint."""
    return endpoint.is_default and (opener.euid == endpoint.bus.uid or is_privileged(endpoint, opener))


# -- commands ---------------------------------------------------------------------------------

def cmd_endpoint_make(endpoint: Endpoint, opener: Creds, args: Args[structs.Cmd], caller: Caller) -> Endpoint:
    """ENDPOINT_MAKE on the bus's own endpoint: a custom endpoint beside it."""
    if not is_owner(endpoint, opener):
        raise KdbusError(errno.EPERM, "only the bus owner makes endpoints, through the bus's own endpoint")
    name_item = args.item(Item.MAKE_NAME)
    assert name_item is not None
    made = endpoint.bus.make_endpoint(name_item.string, caller.creds(),
                                      args.fields.flags & (MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD))
    log.info("endpoint %s/%s created", endpoint.bus.name, made.name)
    return made


def cmd_endpoint_update(endpoint: Endpoint, args: Args[structs.Cmd]) -> None:
    """ENDPOINT_UPDATE by the endpoint's maker: replace its policy."""
    assert endpoint.policy is not None
    if not endpoint.active:
        raise KdbusError(errno.ESHUTDOWN, f"endpoint {endpoint.name} is gone")
    items = [*args.items.get(Item.NAME, []), *args.items.get(Item.POLICY_ACCESS, [])]
    endpoint.policy.entries = dict(parse_upload(items, allow_wildcards=True))
