"""A bus: a named message space in a domain, created by KDBUS_CMD_BUS_MAKE."""

from __future__ import annotations

import errno
import uuid
from dataclasses import dataclass, field

from .domain import Domain
from .endpoint import Endpoint, node_mode
from .errors import KdbusError
from .metadata import Creds

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
    creator: Creds
    # Which of the creator's metadata BUS_CREATOR_INFO may reveal.
    creator_attach: int
    id128: bytes = field(default_factory=lambda: uuid.uuid4().bytes)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    active: bool = True

    @classmethod
    def make(
        cls, domain: Domain, name: str, creator: Creds, flags: int, access: int,
        bloom_size: int, bloom_n_hash: int, creator_attach: int,
    ) -> Bus:
        if not domain.active:
            raise KdbusError(errno.ESHUTDOWN, "domain is shutting down")
        check_uid_prefix(name, creator.euid)
        if name in domain.buses:
            raise KdbusError(errno.EEXIST, f"bus {name!r} exists")
        domain.user(creator.uid).charge_bus()
        bus = cls(
            domain, domain.next_id(), name, creator.euid, creator.egid, node_mode(0o500, access),
            flags, bloom_size, bloom_n_hash, creator, creator_attach,
        )
        bus.endpoints[DEFAULT_ENDPOINT] = Endpoint(
            bus, DEFAULT_ENDPOINT, creator.euid, creator.egid, node_mode(0o600, access), True,
        )
        domain.buses[name] = bus
        return bus

    @property
    def default_endpoint(self) -> Endpoint:
        return self.endpoints[DEFAULT_ENDPOINT]

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
        self.domain.user(self.creator.uid).buses -= 1
