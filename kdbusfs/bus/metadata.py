"""Who a caller is: the credentials and process facts kdbus records and attaches.

The edge (kdbusfs.peer) reads them from /proc when a file is opened or a command runs, lazily: a
`Process` answers only what a receiver asked for. The model stores and renders them as items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..abi import structs
from ..abi.constants import ATTACH_ALL, ATTACH_ANY, Attach, Item
from ..abi.items import item, string_item

CAP_IPC_OWNER = 15
# Items every sender attaches whether or not its attach_flags_send allow it (KDBUS-SPEC.md §8.2).
IMPLICIT = Attach.TIMESTAMP | Attach.CREDS | Attach.PIDS | Attach.AUXGROUPS | Attach.NAMES | \
    Attach.CONN_DESCRIPTION
PROCESS_ITEMS = ATTACH_ALL & ~(Attach.TIMESTAMP | Attach.NAMES | Attach.CONN_DESCRIPTION)


@dataclass(frozen=True, slots=True)
class Creds:
    """A task's identity at one instant."""

    pid: int
    tid: int
    ppid: int
    uid: int
    euid: int
    suid: int
    fsuid: int
    gid: int
    egid: int
    sgid: int
    fsgid: int
    cap_effective: int = 0
    # Whether the task lives in the daemon's user namespace, where kdbusfs evaluates capabilities.
    in_domain_userns: bool = True
    comm: str = ""
    groups: tuple[int, ...] = ()

    def has_cap(self, cap: int) -> bool:
        return self.in_domain_userns and bool(self.cap_effective >> cap & 1)

    @classmethod
    def for_ids(cls, uid: int, gid: int, pid: int = 0) -> Creds:
        return cls(pid, pid, 0, uid, uid, uid, uid, gid, gid, gid, gid)


class Process(Protocol):
    """Process facts of a task, read on demand; None where the task has no such thing."""

    def creds(self) -> Creds: ...

    def tid_comm(self) -> str | None: ...

    def pid_comm(self) -> str | None: ...

    def exe(self) -> str | None: ...

    def cmdline(self) -> str | None: ...

    def cgroup(self) -> str | None: ...

    def caps(self) -> bytes | None: ...

    def audit(self) -> tuple[int, int] | None: ...


@dataclass(slots=True)
class Snapshot:
    """Process facts captured once (at BUS_MAKE or HELLO) for later info queries."""

    creds_: Creds
    tid_comm_: str | None = None
    pid_comm_: str | None = None
    exe_: str | None = None
    cmdline_: str | None = None
    cgroup_: str | None = None
    caps_: bytes | None = None
    audit_: tuple[int, int] | None = None
    # Faked credentials (HELLO by a bus owner) carry no other process facts.
    faked: bool = False
    # Which of (CREDS, PIDS) a faked snapshot states.
    faked_items: tuple[bool, bool] = (False, False)

    @classmethod
    def capture(cls, process: Process) -> Snapshot:
        return cls(process.creds(), process.tid_comm(), process.pid_comm(), process.exe(),
                   process.cmdline(), process.cgroup(), process.caps(), process.audit())

    def creds(self) -> Creds:
        return self.creds_

    def tid_comm(self) -> str | None:
        return self.tid_comm_

    def pid_comm(self) -> str | None:
        return self.pid_comm_

    def exe(self) -> str | None:
        return self.exe_

    def cmdline(self) -> str | None:
        return self.cmdline_

    def cgroup(self) -> str | None:
        return self.cgroup_

    def caps(self) -> bytes | None:
        return self.caps_

    def audit(self) -> tuple[int, int] | None:
        return self.audit_


def sanitize_attach_flags(value: int) -> int | None:
    """~0 means "all"; any other bit outside the known set is invalid (returns None)."""
    if value == ATTACH_ANY:
        return ATTACH_ALL
    if value & ~ATTACH_ALL:
        return None
    return value


def render(process: Process | None, mask: int, names: list[tuple[int, str]] = (),  # type: ignore[assignment]
           description: str | None = None, timestamp: tuple[int, int, int] | None = None,
           faked: bool = False) -> bytes:
    """The metadata items selected by `mask`, in kdbus's order; each padded to 8 bytes."""
    out = []
    if process is not None and mask & PROCESS_ITEMS:
        creds = process.creds()
        if faked:
            stated = process.faked_items  # type: ignore[attr-defined]
            mask &= ~((0 if stated[0] else Attach.CREDS) | (0 if stated[1] else Attach.PIDS))
        if mask & Attach.CREDS:
            out.append(item(Item.CREDS, structs.CREDS.pack(
                creds.uid, creds.euid, creds.suid, creds.fsuid,
                creds.gid, creds.egid, creds.sgid, creds.fsgid)))
        if mask & Attach.PIDS:
            out.append(item(Item.PIDS, structs.PIDS.pack(creds.pid, creds.tid, creds.ppid)))
        if not faked:
            if mask & Attach.AUXGROUPS and creds.groups:
                out.append(item(Item.AUXGROUPS, b"".join(g.to_bytes(8, "little") for g in creds.groups)))
            for flag, item_type, getter in _STRINGS:
                if mask & flag:
                    value = getter(process)
                    if value is not None:
                        out.append(string_item(item_type, value))
            if mask & Attach.CAPS:
                caps = process.caps()
                if caps is not None:
                    out.append(item(Item.CAPS, caps))
            if mask & Attach.AUDIT:
                audit = process.audit()
                if audit is not None:
                    out.append(item(Item.AUDIT, structs.AUDIT.pack(*audit)))
    if mask & Attach.NAMES:
        for flags, name in names:
            out.append(item(Item.OWNED_NAME, flags.to_bytes(8, "little") + name.encode() + b"\0"))
    if mask & Attach.CONN_DESCRIPTION and description is not None:
        out.append(string_item(Item.CONN_DESCRIPTION, description))
    if mask & Attach.TIMESTAMP and timestamp is not None:
        out.append(item(Item.TIMESTAMP, structs.TIMESTAMP.pack(*timestamp)))
    return b"".join(out)


_STRINGS: tuple[tuple[int, int, Callable[[Process], str | None]], ...] = (
    (Attach.TID_COMM, Item.TID_COMM, lambda p: p.tid_comm()),
    (Attach.PID_COMM, Item.PID_COMM, lambda p: p.pid_comm()),
    (Attach.EXE, Item.EXE, lambda p: p.exe()),
    (Attach.CMDLINE, Item.CMDLINE, lambda p: p.cmdline()),
    (Attach.CGROUP, Item.CGROUP, lambda p: p.cgroup()),
)
