"""Who may own which names and talk to whom (KDBUS-SPEC.md §9).

A policy database maps names to access records {USER uid | GROUP gid | WORLD, SEE < TALK < OWN}.
The bus's database is written by policy holders and activators; a custom endpoint has its own.
On the default endpoint, bus owners bypass the bus policy, and a sender may always talk to
connections opened by its own user.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..abi import structs
from ..abi.constants import (
    POLICY_ACCESS_GROUP,
    POLICY_ACCESS_USER,
    POLICY_ACCESS_WORLD,
    POLICY_OWN,
    POLICY_SEE,
    POLICY_TALK,
    Item,
)
from ..abi.walk import ParsedItem
from ..errors import KdbusError
from . import names
from .metadata import Creds

if TYPE_CHECKING:
    from .connection import Connection

NO_ACCESS = -1


@dataclass(frozen=True, slots=True)
class Access:
    type: int
    access: int
    id: int

    def applies_to(self, creds: Creds) -> bool:
        if self.type == POLICY_ACCESS_WORLD:
            return True
        if self.type == POLICY_ACCESS_USER:
            return self.id == creds.euid
        if self.type == POLICY_ACCESS_GROUP:
            return self.id == creds.egid or self.id in creds.groups
        return False


def parse_upload(items: list[ParsedItem], allow_wildcards: bool) -> dict[str, tuple[Access, ...]]:
    """NAME items each followed by the POLICY_ACCESS records that apply to it."""
    groups: dict[str, list[Access]] = {}
    current: list[Access] | None = None
    for parsed in sorted(items, key=lambda p: p.offset):
        if parsed.type == Item.NAME:
            name = parsed.string
            if not names.is_valid_name(name, allow_wildcard=allow_wildcards):
                raise KdbusError(errno.EINVAL, f"invalid policy name {name!r}")
            if name in groups:
                raise KdbusError(errno.EEXIST, f"policy name {name} given twice")
            current = groups[name] = []
        elif parsed.type == Item.POLICY_ACCESS:
            if current is None:
                raise KdbusError(errno.EINVAL, "POLICY_ACCESS before any NAME")
            kind, access, ident = structs.POLICY_ACCESS.struct.unpack(parsed.payload)
            if kind not in (POLICY_ACCESS_USER, POLICY_ACCESS_GROUP, POLICY_ACCESS_WORLD):
                raise KdbusError(errno.EINVAL, f"unknown policy access type {kind}")
            if access not in (POLICY_SEE, POLICY_TALK, POLICY_OWN):
                raise KdbusError(errno.EINVAL, f"unknown policy access level {access}")
            current.append(Access(kind, access, ident))
    return {name: tuple(records) for name, records in groups.items()}


@dataclass(slots=True, eq=False)
class PolicyDb:
    entries: dict[str, tuple[Access, ...]] = field(default_factory=dict)
    # Which connection put each bus-policy entry there (policy holders and activators).
    owners: dict[str, object] = field(default_factory=dict)

    def replace(self, owner: object, upload: dict[str, tuple[Access, ...]]) -> None:
        """Swap `owner`'s entries for `upload`, all or nothing (EEXIST if another owner has a name)."""
        for name in upload:
            holder = self.owners.get(name)
            if holder is not None and holder is not owner:
                raise KdbusError(errno.EEXIST, f"policy for {name} is held by another connection")
        self.remove_owner(owner)
        for name, records in upload.items():
            self.entries[name] = records
            self.owners[name] = owner

    def remove_owner(self, owner: object) -> None:
        for name in [n for n, o in self.owners.items() if o is owner]:
            del self.owners[name]
            del self.entries[name]

    def query(self, creds: Creds, name: str) -> int:
        """The highest access `creds` have to `name`, or NO_ACCESS."""
        records = self.entries.get(name)
        if records is None and "." in name:
            records = self.entries.get(name.rsplit(".", 1)[0] + ".*")
        if records is None:
            return NO_ACCESS
        return max((r.access for r in records if r.applies_to(creds)), default=NO_ACCESS)


def may_own(conn: Connection, creds: Creds, name: str) -> bool:
    endpoint_policy = conn.endpoint.policy
    if endpoint_policy is not None and endpoint_policy.query(creds, name) < POLICY_OWN:
        return False
    if conn.owner:
        return True
    return conn.bus.policy.query(creds, name) >= POLICY_OWN


def _best(policy: PolicyDb, creds: Creds, dst: Connection) -> int:
    """The most a name `dst` holds as primary grants `creds`."""
    owned = dst.bus.names.owned_names(dst)
    return max((policy.query(creds, record.entry.name) for record in owned), default=NO_ACCESS)


def may_talk(src: Connection, creds: Creds, dst: Connection) -> bool:
    """TALK from `src` (acting with `creds`) to `dst`."""
    endpoint_policy = src.endpoint.policy
    if endpoint_policy is not None and _best(endpoint_policy, creds, dst) < POLICY_TALK:
        return False
    if src.owner:
        return True
    if creds.euid == dst.opener.uid:
        return True
    return _best(src.bus.policy, creds, dst) >= POLICY_TALK


def may_see_name(conn: Connection, creds: Creds, name: str) -> bool:
    """Custom endpoints hide what their policy does not show; the default endpoint hides nothing."""
    policy = conn.endpoint.policy
    return policy is None or policy.query(creds, name) >= POLICY_SEE


def may_see(conn: Connection, creds: Creds, peer: Connection) -> bool:
    """A peer is visible through a custom endpoint if one of its names is."""
    policy = conn.endpoint.policy
    return policy is None or _best(policy, creds, peer) >= POLICY_SEE
