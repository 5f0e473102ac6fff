"""Process and connection metadata as the bus attaches it: to messages, CONN_INFO and
BUS_CREATOR_INFO answers (KDBUS-SPEC.md §8). Every field is None (or empty) when its item is absent:
not asked for, not granted, or without data (no security module, no audit)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..abi import structs
from ..abi.constants import Item

# Fixed-size items as the ABI declares them (typed named tuples): when the bus queued the message
# (a per-bus sequence number and two clocks), the sender's ids, and its process, thread and parent
# ids (0 where the receiver's pid namespace cannot see them).
Timestamp = structs.Timestamp
Creds = structs.Creds
Pids = structs.Pids


@dataclass(frozen=True, slots=True)
class Caps:
    """Capability sets, each an integer with bit N for capability N."""

    last_cap: int
    inheritable: int
    permitted: int
    effective: int
    bounding: int

    def has(self, capability: int) -> bool:
        """Whether `capability` (e.g. 21 for CAP_SYS_ADMIN) is effective."""
        return bool(self.effective >> capability & 1)


@dataclass(frozen=True, slots=True)
class Audit:
    sessionid: int
    loginuid: int


@dataclass(frozen=True, slots=True)
class OwnedName:
    """A well-known name and the owner's flags for it (KDBUS_NAME_*)."""

    name: str
    flags: int


@dataclass(frozen=True, slots=True)
class Metadata:
    timestamp: Timestamp | None = None
    creds: Creds | None = None
    pids: Pids | None = None
    auxgroups: tuple[int, ...] | None = None
    owned_names: tuple[OwnedName, ...] = ()
    tid_comm: str | None = None
    pid_comm: str | None = None
    exe: str | None = None
    # The command line's arguments (kdbus's final code sends argv[0] only).
    cmdline: tuple[str, ...] | None = None
    cgroup: str | None = None
    caps: Caps | None = None
    seclabel: str | None = None
    audit: Audit | None = None
    description: str | None = None


def text(payload: bytes) -> str:
    """A string item's payload without its NUL."""
    return payload.rstrip(b"\0").decode("utf-8", "surrogateescape")


def owned_name(payload: bytes) -> OwnedName:
    flags = structs.NAME.unpack(payload).flags
    return OwnedName(text(payload[structs.NAME.size :]), flags)


def _caps(payload: bytes) -> Caps:
    last_cap = structs.CAPS.unpack(payload).last_cap
    sets = payload[structs.CAPS.size :]
    width = len(sets) // 4
    inheritable, permitted, effective, bounding = (
        int.from_bytes(sets[i * width : (i + 1) * width], "little") for i in range(4))
    return Caps(last_cap, inheritable, permitted, effective, bounding)


def _groups(payload: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(payload[i : i + 8], "little") for i in range(0, len(payload), 8))


def _cmdline(payload: bytes) -> tuple[str, ...]:
    return tuple(arg.decode("utf-8", "surrogateescape") for arg in payload.rstrip(b"\0").split(b"\0"))


@dataclass(slots=True)
class MetadataReader:
    """Collects metadata items while a message or an info record is walked."""

    fields: dict[str, Any] = field(default_factory=dict)
    names: list[OwnedName] = field(default_factory=list)

    def take(self, item_type: int, payload: bytes) -> bool:
        """Record the item if it is metadata; False for other items."""
        if item_type == Item.OWNED_NAME:
            self.names.append(owned_name(payload))
            return True
        reader = _READERS.get(item_type)
        if reader is None:
            return False
        key, parse = reader
        self.fields[key] = parse(payload)
        return True

    def metadata(self) -> Metadata:
        if not self.names and not self.fields:
            return _NONE  # most messages carry none (a receiver that asked for none): no copy
        return replace(_NONE, owned_names=tuple(self.names), **self.fields)


_NONE = Metadata()
_READERS: dict[int, tuple[str, Callable[[bytes], object]]] = {
    Item.TIMESTAMP: ("timestamp", lambda p: structs.TIMESTAMP.unpack(p)),
    Item.CREDS: ("creds", lambda p: structs.CREDS.unpack(p)),
    Item.PIDS: ("pids", lambda p: structs.PIDS.unpack(p)),
    Item.AUXGROUPS: ("auxgroups", _groups),
    Item.TID_COMM: ("tid_comm", text),
    Item.PID_COMM: ("pid_comm", text),
    Item.EXE: ("exe", text),
    Item.CMDLINE: ("cmdline", _cmdline),
    Item.CGROUP: ("cgroup", text),
    Item.CAPS: ("caps", _caps),
    Item.SECLABEL: ("seclabel", text),
    Item.AUDIT: ("audit", lambda p: Audit(*structs.AUDIT.unpack(p))),
    Item.CONN_DESCRIPTION: ("description", text),
}
