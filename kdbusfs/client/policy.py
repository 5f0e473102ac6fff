"""Bus policy as activators and policy holders upload it: a name, then who may see, talk to or own
it (KDBUS-SPEC.md §9). Without a policy only the bus owner's user may own names, and a user may talk
to its own connections only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
from ..abi.items import item, string_item

ACCESS_LEVELS = {"see": POLICY_SEE, "talk": POLICY_TALK, "own": POLICY_OWN}


@dataclass(frozen=True, slots=True)
class PolicyAccess:
    """One grant: `level` (KDBUS_POLICY_SEE/TALK/OWN, each implying the lower ones) to a user, a
    group or everyone (`kind` KDBUS_POLICY_ACCESS_USER/GROUP/WORLD; `id` the uid or gid)."""

    kind: int
    level: int
    id: int = 0

    @classmethod
    def user(cls, uid: int, level: str) -> PolicyAccess:
        return cls(POLICY_ACCESS_USER, ACCESS_LEVELS[level], uid)

    @classmethod
    def group(cls, gid: int, level: str) -> PolicyAccess:
        return cls(POLICY_ACCESS_GROUP, ACCESS_LEVELS[level], gid)

    @classmethod
    def world(cls, level: str) -> PolicyAccess:
        return cls(POLICY_ACCESS_WORLD, ACCESS_LEVELS[level])

    def item(self) -> bytes:
        return item(Item.POLICY_ACCESS, structs.POLICY_ACCESS.pack(self.kind, self.level, self.id))


def policy_items(name: str, grants: Iterable[PolicyAccess]) -> bytes:
    """The upload for `name`: its NAME item, then its grants (none: nobody but owners)."""
    return string_item(Item.NAME, name) + b"".join(grant.item() for grant in grants)
