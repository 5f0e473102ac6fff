"""Endpoints: the files of a bus that clients open and connect through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..abi.constants import MAKE_ACCESS_GROUP, MAKE_ACCESS_WORLD

if TYPE_CHECKING:
    from .bus import Bus
    from .connection import Connection
    from .domain import User
    from .policy import PolicyDb


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
