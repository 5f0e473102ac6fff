"""Who a caller is: the credentials and process facts kdbus records and reports.

The edge (kdbusfs.peer) reads them from /proc when a file is opened or a command runs; the model only
stores and renders them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..abi import structs
from ..abi.constants import Attach, Item
from ..abi.items import item, string_item

CAP_IPC_OWNER = 15
# The kernel writes an unmappable id as the overflow id.
OVERFLOW_ID = 65534


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

    def has_cap(self, cap: int) -> bool:
        return self.in_domain_userns and bool(self.cap_effective >> cap & 1)

    @classmethod
    def for_ids(cls, uid: int, gid: int, pid: int = 0) -> Creds:
        return cls(pid, pid, 0, uid, uid, uid, uid, gid, gid, gid, gid)


def sanitize_attach_flags(value: int) -> int | None:
    """~0 means "all"; any other bit outside the known set is invalid (returns None)."""
    from ..abi.constants import ATTACH_ALL, ATTACH_ANY

    if value == ATTACH_ANY:
        return ATTACH_ALL
    if value & ~ATTACH_ALL:
        return None
    return value


def render(creds: Creds, mask: int, description: str | None = None) -> bytes:
    """The metadata items selected by `mask`, in kdbus's item order."""
    out = []
    if mask & Attach.CREDS:
        out.append(item(Item.CREDS, structs.CREDS.pack(
            creds.uid, creds.euid, creds.suid, creds.fsuid,
            creds.gid, creds.egid, creds.sgid, creds.fsgid)))
    if mask & Attach.PIDS:
        out.append(item(Item.PIDS, structs.PIDS.pack(creds.pid, creds.tid, creds.ppid)))
    if mask & Attach.PID_COMM and creds.comm:
        out.append(string_item(Item.PID_COMM, creds.comm))
    if mask & Attach.CONN_DESCRIPTION and description is not None:
        out.append(string_item(Item.CONN_DESCRIPTION, description))
    return b"".join(out)
