"""Who may own which names and talk to whom (KDBUS-SPEC.md §9).

A policy database maps names to access records {USER uid | GROUP gid | WORLD, SEE < TALK < OWN}.
The bus's database is written by policy holders and activators; a custom endpoint has its own.
On the default endpoint, bus owners bypass the bus policy, and a sender may always talk to
connections opened by its own user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..abi.constants import (
    POLICY_ACCESS_GROUP,
    POLICY_ACCESS_USER,
    POLICY_ACCESS_WORLD,
    POLICY_OWN,
    POLICY_TALK,
)
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


@dataclass(slots=True, eq=False)
class PolicyDb:
    entries: dict[str, tuple[Access, ...]] = field(default_factory=dict)
    # Which connection put each bus-policy entry there (policy holders and activators).
    owners: dict[str, object] = field(default_factory=dict)

    def query(self, creds: Creds, name: str) -> int:
        """The highest access `creds` have to `name`, or NO_ACCESS."""
        records = self.entries.get(name)
        if records is None and "." in name:
            records = self.entries.get(name.rsplit(".", 1)[0] + ".*")
        if records is None:
            return NO_ACCESS
        return max((r.access for r in records if r.applies_to(creds)), default=NO_ACCESS)


def may_own(conn: Connection, creds: Creds, name: str) -> bool:
    if conn.owner:
        return True
    return conn.bus.policy.query(creds, name) >= POLICY_OWN


def may_talk(src: Connection, creds: Creds, dst: Connection) -> bool:
    """TALK from `src` (acting with `creds`) to `dst`."""
    if src.owner:
        return True
    if creds.euid == dst.opener.uid:
        return True
    policy = src.bus.policy
    return any(policy.query(creds, record.entry.name) >= POLICY_TALK
               for record in src.bus.names.owned_names(dst))
