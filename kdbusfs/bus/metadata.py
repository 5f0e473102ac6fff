"""Who a caller is: the credentials and process facts kdbus records and attaches.

The edge (kdbusfs.host) reads them from /proc when a file is opened or a command runs, lazily: a
`Process` answers only what a receiver asked for. The model stores and renders them as items, each
receiver seeing ids through its own user and pid namespaces (a `View`).

Ids and pids from the edge are as the daemon sees them. Namespaces are named by their nsfs inode
numbers and placed by their path: the namespaces from just below the daemon's own down to the
task's, outermost first; the empty path is the daemon's namespace itself.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..abi import structs
from ..abi.constants import ATTACH_ALL, ATTACH_ANY, Attach, Item
from ..abi.items import item
from ..abi.structs import ITEM_HEADER_SIZE

if TYPE_CHECKING:
    from .connection import Connection
    from .message import Staged

CAP_IPC_OWNER = 15
# Items every sender attaches whether or not its attach_flags_send allow it (KDBUS-SPEC.md §8.2).
# Plain ints, not flags: they meet a mask on every SEND.
IMPLICIT = int(Attach.TIMESTAMP | Attach.CREDS | Attach.PIDS | Attach.AUXGROUPS | Attach.NAMES
               | Attach.CONN_DESCRIPTION)
PROCESS_ITEMS = ATTACH_ALL & ~int(Attach.TIMESTAMP | Attach.NAMES | Attach.CONN_DESCRIPTION)


@dataclass(frozen=True, slots=True)
class IdMap:
    """A user namespace's uid_map or gid_map as the daemon reads it: (inside, outside, count) ranges."""

    ranges: tuple[tuple[int, int, int], ...] = ()

    def inside(self, outside: int) -> int | None:
        for first_inside, first_outside, count in self.ranges:
            if first_outside <= outside < first_outside + count:
                return first_inside + outside - first_outside
        return None


# Ids a namespace cannot represent show as the overflow id (the kernel's default overflowuid and
# overflowgid); kdbus's "unset" (faked creds without a value) stays unset in every namespace.
OVERFLOW_ID = 65534
UNSET_ID = 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class UserNamespace:
    """A user namespace: its path, the owner (euid) of each namespace on it, and its id maps."""

    path: tuple[int, ...] = ()
    owners: tuple[int, ...] = ()
    uid_map: IdMap = IdMap()
    gid_map: IdMap = IdMap()

    def uid(self, uid: int) -> int:
        return _map_id(self.uid_map, uid) if self.path else uid

    def gid(self, gid: int) -> int:
        return _map_id(self.gid_map, gid) if self.path else gid


def _map_id(id_map: IdMap, value: int) -> int:
    if value == UNSET_ID:
        return value
    inside = id_map.inside(value)
    return OVERFLOW_ID if inside is None else inside


DAEMON_USERNS = UserNamespace()
# A namespace that could not be read (nsfs inode numbers are never 0): it sees nothing of others
# (ids overflow, pids 0, no capabilities, no EXE) and is seen only from the daemon's namespaces.
UNKNOWN_NS = 0
UNKNOWN_USERNS = UserNamespace((UNKNOWN_NS,))
UNKNOWN_ROOT = (UNKNOWN_NS, "")
# A thread's ids in each pid namespace from the daemon's down to its own: (tgid, tid, parent's tgid),
# as the NStgid/NSpid lines of /proc/PID/status list them.
NsPids = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class View:
    """How a receiver sees other tasks (KDBUS-SPEC.md §8.4): the user namespace of the credentials
    that opened its file, the pid namespace and root directory of the task that called HELLO."""

    userns: UserNamespace = DAEMON_USERNS
    pidns: tuple[int, ...] = ()
    # (mount namespace inode, root directory path); None: not recorded, EXE always shown.
    root: tuple[int, str] | None = None

    def sees(self, process: Process) -> bool:
        """Whether `process` is visible in this pid namespace (it lives in it or below it)."""
        depth = len(self.pidns)
        if not depth:
            return True
        return UNKNOWN_NS not in self.pidns and process.pidns()[:depth] == self.pidns

    def pids(self, ids: Ids, process: Process) -> tuple[int, int, int]:
        depth = len(self.pidns)
        if not depth:
            return ids.pid, ids.tid, ids.ppid
        if not self.sees(process):
            return 0, 0, 0
        tgids, tids, parent_tgids = process.ns_pids()
        if len(tgids) <= depth or len(tids) <= depth:
            # The task went away before its ids could be read.
            return 0, 0, 0
        # A parent lives in the thread's pid namespace or an ancestor of it.
        parent = parent_tgids[depth] if len(parent_tgids) > depth else 0
        return tgids[depth], tids[depth], parent

    def caps(self, caps: bytes, euid: int, process: Process) -> bytes:
        """Capability sets mean something only from the sender's user namespace downwards."""
        sender = process.userns().path
        mine = self.userns.path
        if UNKNOWN_NS in mine or UNKNOWN_NS in sender:
            return caps[:4] + bytes(32)
        if sender == mine:
            return caps
        if mine[: len(sender)] != sender:
            # Not below the sender's namespace: none of its capabilities apply here.
            return caps[:4] + bytes(32)
        owners = self.userns.owners
        if len(owners) > len(sender) and owners[len(sender)] == euid:
            # The sender created the namespace on our path: it holds every capability below it.
            last_cap = int.from_bytes(caps[:4], "little")
            full = (1 << (last_cap + 1)) - 1
            sets = b"".join(_cap_set(bits) for bits in (0, full, full, full))
            return caps[:4] + sets
        return caps

    def shows_exe(self, process: Process) -> bool:
        return self.root is None or process.root() == self.root


def _cap_set(bits: int) -> bytes:
    # One kdbus capability set: two u32 words, low first.
    return (bits & 0xFFFF_FFFF).to_bytes(4, "little") + (bits >> 32).to_bytes(4, "little")


DAEMON_VIEW = View()


class Ids(NamedTuple):
    """What a CREDS and a PIDS item say of a task: its pids and ids at one instant."""

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
    # Whether the task lives in the daemon's user namespace, where kdbusfs evaluates capabilities;
    # or how to find out, a /proc lookup that only has_cap needs (most creds describe a sender
    # for metadata and policy, which never ask).
    in_domain_userns: bool | Callable[[], bool] = True
    comm: str = ""
    groups: tuple[int, ...] = ()

    def has_cap(self, cap: int) -> bool:
        if not self.cap_effective >> cap & 1:
            return False
        inside = self.in_domain_userns
        return inside if isinstance(inside, bool) else inside()

    def ids(self) -> Ids:
        return Ids(self.pid, self.tid, self.ppid, self.uid, self.euid, self.suid, self.fsuid,
                   self.gid, self.egid, self.sgid, self.fsgid)

    @classmethod
    def for_ids(cls, uid: int, gid: int, pid: int = 0) -> Creds:
        return cls(pid, pid, 0, uid, uid, uid, uid, gid, gid, gid, gid)


class Process(Protocol):
    """Process facts of a task, read on demand; None where the task has no such thing."""

    def creds(self) -> Creds: ...

    def ids(self) -> Ids:
        """creds().ids(), which a reader may get more cheaply than all of creds()."""

    def tid_comm(self) -> str | None: ...

    def pid_comm(self) -> str | None: ...

    def exe(self) -> str | None: ...

    def cmdline(self) -> str | None: ...

    def cgroup(self) -> str | None: ...

    def caps(self) -> bytes | None: ...

    def audit(self) -> tuple[int, int] | None: ...

    def seclabel(self) -> str | None: ...

    def userns(self) -> UserNamespace: ...

    def pidns(self) -> tuple[int, ...]: ...

    def ns_pids(self) -> NsPids: ...

    def root(self) -> tuple[int, str] | None: ...


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
    seclabel_: str | None = None
    userns_: UserNamespace = DAEMON_USERNS
    pidns_: tuple[int, ...] = ()
    ns_pids_: NsPids | None = None
    root_: tuple[int, str] | None = None
    # Faked credentials (HELLO by a bus owner) carry no other process facts.
    faked: bool = False
    # Which of (CREDS, PIDS) a faked snapshot states.
    faked_items: tuple[bool, bool] = (False, False)

    @classmethod
    def capture(cls, process: Process, reveal: int = ATTACH_ALL) -> Snapshot:
        """The facts of `process` that `reveal` lets CONN_INFO show (nothing else is even read);
        the namespace facts always, which are never shown, only used to translate what is."""
        pidns = process.pidns()
        creds = process.creds()
        if not isinstance(creds.in_domain_userns, bool):
            # A snapshot holds facts, not lookups into a task that may be gone when asked.
            creds = replace(creds, in_domain_userns=creds.in_domain_userns())
        return cls(creds,
                   process.tid_comm() if reveal & Attach.TID_COMM else None,
                   process.pid_comm() if reveal & Attach.PID_COMM else None,
                   process.exe() if reveal & Attach.EXE else None,
                   process.cmdline() if reveal & Attach.CMDLINE else None,
                   process.cgroup() if reveal & Attach.CGROUP else None,
                   process.caps() if reveal & Attach.CAPS else None,
                   process.audit() if reveal & Attach.AUDIT else None,
                   process.seclabel() if reveal & Attach.SECLABEL else None,
                   process.userns(), pidns, process.ns_pids() if pidns else None, process.root())

    @classmethod
    def stated(cls, ids: tuple[int, ...] | None, pids: tuple[int, ...] | None,
               seclabel: str | None) -> Snapshot:
        """Metadata a bus owner states for its connection at HELLO (the CREDS and PIDS items'
        values); no real process facts go with it, and what it does not state stays unset."""
        uid, euid, suid, fsuid, gid, egid, sgid, fsgid = ids if ids is not None else (_UNSET32,) * 8
        pid, tid, ppid = pids if pids is not None else (0, 0, 0)
        creds = Creds(pid, tid, ppid, uid, euid, suid, fsuid, gid, egid, sgid, fsgid)
        return cls(creds, seclabel_=seclabel, faked=True, faked_items=(ids is not None, pids is not None))

    def creds(self) -> Creds:
        return self.creds_

    def ids(self) -> Ids:
        return self.creds_.ids()

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

    def seclabel(self) -> str | None:
        return self.seclabel_

    def userns(self) -> UserNamespace:
        return self.userns_

    def pidns(self) -> tuple[int, ...]:
        return self.pidns_

    def ns_pids(self) -> NsPids:
        if self.ns_pids_ is None:
            creds = self.creds_
            return (creds.pid,), (creds.tid,), (creds.ppid,)
        return self.ns_pids_

    def root(self) -> tuple[int, str] | None:
        return self.root_


# A 32-bit id nobody stated ((uid_t)-1).
_UNSET32 = 0xFFFF_FFFF


def sanitize_attach_flags(value: int) -> int | None:
    """~0 means "all"; any other bit outside the known set is invalid (returns None)."""
    if value == ATTACH_ANY:
        return ATTACH_ALL
    if value & ~ATTACH_ALL:
        return None
    return value


def render(process: Process | None, mask: int, names: Sequence[tuple[int, str]] = (),
           description: str | None = None, timestamp: tuple[int, int, int] | None = None,
           stated: tuple[bool, bool] | None = None, view: View = DAEMON_VIEW) -> bytes:
    """The metadata items selected by `mask`, in kdbus's order, as `view` sees them; each padded
    to 8 bytes. `stated`: the facts are what a bus owner stated at HELLO, and which of (CREDS, PIDS)
    it stated; nothing else about it is real.

    Every SEND with a metadata receiver comes here: masks are plain ints (a flag enum's operators
    cost a microsecond each) and each fixed-size item is one pack of header and payload."""
    faked = stated is not None
    out = bytearray()
    if process is not None and mask & _PROCESS_ITEMS:
        ids = process.ids()
        userns = view.userns
        if stated is not None:
            mask &= ~((0 if stated[0] else _CREDS) | (0 if stated[1] else _PIDS))
        if mask & _CREDS:
            if userns.path:
                uid, gid = userns.uid, userns.gid
                out += _CREDS_ITEM.pack(_CREDS_ITEM.size, Item.CREDS, uid(ids.uid), uid(ids.euid),
                                        uid(ids.suid), uid(ids.fsuid), gid(ids.gid), gid(ids.egid),
                                        gid(ids.sgid), gid(ids.fsgid))
            else:
                out += _CREDS_ITEM.pack(_CREDS_ITEM.size, Item.CREDS, *ids[3:])
        if mask & _PIDS:
            # Faked pids were stated by the HELLO caller and stay as they are.
            pid, tid, ppid = ids[:3] if faked else view.pids(ids, process)
            out += _PIDS_ITEM.pack(_PIDS_ITEM.size, Item.PIDS, pid, tid, ppid)
        if not faked:
            groups = process.creds().groups if mask & _AUXGROUPS else ()
            if groups:
                out += item(Item.AUXGROUPS, b"".join(userns.gid(g).to_bytes(8, "little") for g in groups))
            if mask & _TID_COMM:
                _text_item(out, Item.TID_COMM, process.tid_comm())
            if mask & _PID_COMM:
                _text_item(out, Item.PID_COMM, process.pid_comm())
            if mask & _EXE and view.shows_exe(process):
                _text_item(out, Item.EXE, process.exe())
            if mask & _CMDLINE:
                _text_item(out, Item.CMDLINE, process.cmdline())
            if mask & _CGROUP:
                _text_item(out, Item.CGROUP, process.cgroup())
            if mask & _CAPS:
                caps = process.caps()
                if caps is not None:
                    out += item(Item.CAPS, view.caps(caps, ids.euid, process))
        if mask & _SECLABEL:
            # The only process fact a faked identity may state besides creds and pids.
            _text_item(out, Item.SECLABEL, process.seclabel())
        if not faked:
            if mask & _AUDIT:
                audit = process.audit()
                if audit is not None:
                    session, loginuid = audit
                    if userns.path and loginuid != UNSET_ID:
                        # The login uid is mapped without the overflow id: unmapped is unset.
                        inside = userns.uid_map.inside(loginuid)
                        loginuid = UNSET_ID if inside is None else inside
                    out += _AUDIT_ITEM.pack(_AUDIT_ITEM.size, Item.AUDIT, session, loginuid)
    if mask & _NAMES:
        for flags, name in names:
            raw = name.encode()
            size = _NAME_ITEM_HEADER.size + len(raw) + 1
            out += _NAME_ITEM_HEADER.pack(size, Item.OWNED_NAME, flags)
            out += raw
            out += _NUL_PADDED[size & 7]
    if mask & _CONN_DESCRIPTION:
        _text_item(out, Item.CONN_DESCRIPTION, description)
    if mask & _TIMESTAMP and timestamp is not None:
        seqnum, monotonic_ns, realtime_ns = timestamp
        out += _TIMESTAMP_ITEM.pack(_TIMESTAMP_ITEM.size, Item.TIMESTAMP, seqnum, monotonic_ns, realtime_ns)
    return bytes(out)


def _text_item(out: bytearray, item_type: int, text: str | None) -> None:
    """A string item (NUL-terminated, padded to 8) appended to `out`; none for a missing value."""
    if text is None:
        return
    raw = text.encode()
    size = ITEM_HEADER_SIZE + len(raw) + 1
    out += _ITEM_HEADER.pack(size, item_type)
    out += raw
    out += _NUL_PADDED[size & 7]


def _item_struct(*payload: structs.Layout[Any]) -> struct.Struct:
    """An item's header and fixed payload as one struct, from the payload's declaration."""
    packed = struct.Struct("<QQ" + "".join(layout.struct.format.lstrip("<") for layout in payload))
    if packed.size % 8:
        raise ImportError(f"a {packed.size}-byte item would need padding: pack it with item()")
    return packed


# The bits and item types of the per-message path as ints (see render()).
_TIMESTAMP, _CREDS, _PIDS, _AUXGROUPS, _NAMES, _TID_COMM, _PID_COMM, _EXE, _CMDLINE, _CGROUP, _CAPS, \
    _SECLABEL, _AUDIT, _CONN_DESCRIPTION = (int(flag) for flag in Attach)
_PROCESS_ITEMS = int(PROCESS_ITEMS)
_ITEM_HEADER = struct.Struct("<QQ")
_CREDS_ITEM = _item_struct(structs.CREDS)
_PIDS_ITEM = _item_struct(structs.PIDS)
_AUDIT_ITEM = _item_struct(structs.AUDIT)
_TIMESTAMP_ITEM = _item_struct(structs.TIMESTAMP)
# An OWNED_NAME item's header and its kdbus_name's flags; the name follows.
_NAME_ITEM_HEADER = struct.Struct("<QQQ")
# What follows a string whose item is `size` bytes (its NUL included) % 8: the NUL and the padding.
_NUL_PADDED = tuple(b"\0" * (1 + (-size) % 8) for size in range(8))


# -- what a receiver or a query gets ---------------------------------------------------------

def for_receiver(receiver: Connection, msg: Staged, sender: Connection | None,
                 process: Process | None) -> bytes:
    """The metadata items `receiver` gets with `msg` (KDBUS-SPEC.md §8.2)."""
    if sender is None:
        # Kernel notifications carry exactly a TIMESTAMP.
        return item(Item.TIMESTAMP, structs.TIMESTAMP.pack(*msg.timestamp)) if msg.timestamp else b""
    mask = receiver.attach_flags_recv
    if not mask:
        return b""
    names: list[tuple[int, str]] = []
    if mask & _NAMES:
        names = [(r.flags, r.entry.name) for r in receiver.bus.names.owned_names(sender)]
    if sender.snapshot.faked:
        process = None
    elif process is not None and mask & ~(sender.attach_flags_send | IMPLICIT) \
            and not receiver.view.sees(process):
        # What the sender did not offer is shown only to those who could read it in /proc.
        mask &= sender.attach_flags_send | IMPLICIT
    return render(process, mask, names, sender.description, msg.timestamp, view=receiver.view)


def info_record(asker: Connection, target: Connection, attach_flags: int) -> bytes:
    """A kdbus_info record about `target` with the metadata it permits and `asker` asked for."""
    mask = attach_flags & target.attach_flags_send
    names = [(r.flags, r.entry.name) for r in asker.bus.names.owned_names(target)]
    snapshot = target.snapshot
    items = render(snapshot, mask & ~Attach.TIMESTAMP, names, target.description,
                   stated=snapshot.faked_items if snapshot.faked else None, view=asker.view)
    return structs.INFO.pack(structs.INFO.size + len(items), target.id, target.flags) + items
