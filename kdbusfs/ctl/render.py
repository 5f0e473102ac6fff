"""Metadata and ids as kdbusctl shows them: busctl's Key=value names for text, snake_case keys for
JSON. Only what the bus attached is shown (a peer decides what it lets others see)."""

from __future__ import annotations

import pwd
from typing import Any

from ..abi.constants import (
    DST_ID_BROADCAST,
    DST_ID_NAME,
    HELLO_ACCEPT_FD,
    HELLO_ACTIVATOR,
    HELLO_MONITOR,
    HELLO_POLICY_HOLDER,
    MAKE_ACCESS_GROUP,
    MAKE_ACCESS_WORLD,
    NAME_ACTIVATOR,
    NAME_ALLOW_REPLACEMENT,
    NAME_IN_QUEUE,
    NAME_PRIMARY,
    NAME_QUEUE,
)
from ..client import Caps, Metadata

# Linux capability numbers 0-40 (capability.h), as busctl prints them.
CAPABILITY_NAMES = (
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_kill",
    "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable", "cap_net_bind_service",
    "cap_net_broadcast", "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module",
    "cap_sys_rawio", "cap_sys_chroot", "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot",
    "cap_sys_nice", "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
    "cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override", "cap_mac_admin",
    "cap_syslog", "cap_wake_alarm", "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf",
    "cap_checkpoint_restore",
)
_HELLO_FLAGS = ((HELLO_ACCEPT_FD, "accept-fd"), (HELLO_ACTIVATOR, "activator"),
                (HELLO_POLICY_HOLDER, "policy-holder"), (HELLO_MONITOR, "monitor"))
_NAME_FLAGS = ((NAME_PRIMARY, "primary"), (NAME_IN_QUEUE, "in-queue"), (NAME_ACTIVATOR, "activator"),
               (NAME_ALLOW_REPLACEMENT, "allow-replacement"), (NAME_QUEUE, "queue"))


def unique_name(connection_id: int) -> str:
    """The D-Bus unique name sd-bus gave a kdbus connection id."""
    return f":1.{connection_id}"


def id_text(connection_id: int) -> str:
    """A message's dst_id: a connection, all (a broadcast), or by name (the DST_NAME item)."""
    if connection_id == DST_ID_BROADCAST:
        return "broadcast"
    return "name" if connection_id == DST_ID_NAME else unique_name(connection_id)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def hello_flag_names(flags: int) -> list[str]:
    return [name for bit, name in _HELLO_FLAGS if flags & bit]


def connection_kind(flags: int) -> str:
    """What HELLO made of a connection: ordinary, activator, policy-holder or monitor."""
    special = [name for name in hello_flag_names(flags) if name != "accept-fd"]
    return special[0] if special else "ordinary"


def bus_flag_names(flags: int) -> list[str]:
    """A bus's BUS_MAKE flags: who besides its creator's user may connect."""
    return [name for bit, name in ((MAKE_ACCESS_GROUP, "access-group"), (MAKE_ACCESS_WORLD, "access-world"))
            if flags & bit]


def name_flag_names(flags: int) -> list[str]:
    return [name for bit, name in _NAME_FLAGS if flags & bit]


def capability_names(mask: int, last_cap: int) -> list[str]:
    return [CAPABILITY_NAMES[cap] if cap < len(CAPABILITY_NAMES) else f"cap_{cap}"
            for cap in range(min(last_cap + 1, mask.bit_length())) if mask >> cap & 1]


def _caps(caps: Caps) -> dict[str, list[str]]:
    return {"effective": capability_names(caps.effective, caps.last_cap),
            "permitted": capability_names(caps.permitted, caps.last_cap),
            "inheritable": capability_names(caps.inheritable, caps.last_cap),
            "bounding": capability_names(caps.bounding, caps.last_cap)}


def metadata_json(meta: Metadata) -> dict[str, Any]:
    """The metadata that is there, as a JSON-ready object."""
    record: dict[str, Any] = {}
    if meta.timestamp is not None:
        record["timestamp"] = {"seqnum": meta.timestamp.seqnum, "monotonic_ns": meta.timestamp.monotonic_ns,
                               "realtime_ns": meta.timestamp.realtime_ns}
    if meta.pids is not None:
        record.update(pid=meta.pids.pid, tid=meta.pids.tid, ppid=meta.pids.ppid)
    if meta.creds is not None:
        creds = meta.creds
        record.update(uid=creds.uid, euid=creds.euid, suid=creds.suid, fsuid=creds.fsuid, gid=creds.gid,
                      egid=creds.egid, sgid=creds.sgid, fsgid=creds.fsgid, user=user_name(creds.uid))
    if meta.auxgroups is not None:
        record["supplementary_gids"] = list(meta.auxgroups)
    for key, value in (("comm", meta.pid_comm), ("tid_comm", meta.tid_comm), ("exe", meta.exe),
                       ("cgroup", meta.cgroup), ("label", meta.seclabel), ("description", meta.description)):
        if value is not None:
            record[key] = value
    if meta.cmdline is not None:
        record["cmdline"] = list(meta.cmdline)
    if meta.audit is not None:
        record.update(audit_loginuid=meta.audit.loginuid, audit_sessionid=meta.audit.sessionid)
    if meta.caps is not None:
        record["capabilities"] = _caps(meta.caps)
    if meta.owned_names:
        record["well_known_names"] = [owned.name for owned in meta.owned_names]
    return record


def metadata_pairs(meta: Metadata, capability_masks: bool = False) -> list[tuple[str, str]]:
    """The metadata that is there, as busctl's (Key, value) pairs; capability sets by name, or as
    hexadecimal masks (shorter, for a stream of messages)."""
    pairs: list[tuple[str, str]] = []
    if meta.pids is not None:
        pairs += [("PID", str(meta.pids.pid)), ("TID", str(meta.pids.tid)), ("PPID", str(meta.pids.ppid))]
    if meta.creds is not None:
        creds = meta.creds
        pairs += [("UID", str(creds.uid)), ("EUID", str(creds.euid)), ("SUID", str(creds.suid)),
                  ("FSUID", str(creds.fsuid)), ("GID", str(creds.gid)), ("EGID", str(creds.egid)),
                  ("SGID", str(creds.sgid)), ("FSGID", str(creds.fsgid))]
    if meta.auxgroups is not None:
        pairs.append(("SupplementaryGIDs", " ".join(map(str, meta.auxgroups))))
    for key, value in (("Comm", meta.pid_comm), ("TIDComm", meta.tid_comm), ("Exe", meta.exe)):
        if value is not None:
            pairs.append((key, value))
    if meta.cmdline is not None:
        pairs.append(("CommandLine", " ".join(meta.cmdline)))
    for key, value in (("CGroup", meta.cgroup), ("Label", meta.seclabel), ("Description", meta.description)):
        if value is not None:
            pairs.append((key, value))
    if meta.audit is not None:
        pairs += [("AuditLoginUID", str(meta.audit.loginuid)), ("AuditSessionID", str(meta.audit.sessionid))]
    if meta.owned_names:
        pairs.append(("WellKnownNames", " ".join(owned.name for owned in meta.owned_names)))
    if meta.caps is not None and capability_masks:
        caps = meta.caps
        pairs += [("EffectiveCapabilities", hex(caps.effective)),
                  ("PermittedCapabilities", hex(caps.permitted)),
                  ("InheritableCapabilities", hex(caps.inheritable)),
                  ("BoundingCapabilities", hex(caps.bounding))]
    elif meta.caps is not None:
        for which, names in _caps(meta.caps).items():
            pairs.append((f"{which.capitalize()}Capabilities", " ".join(names)))
    if meta.timestamp is not None:
        pairs += [("Monotonic", str(meta.timestamp.monotonic_ns // 1000)),
                  ("Realtime", str(meta.timestamp.realtime_ns // 1000)),
                  ("SequenceNumber", str(meta.timestamp.seqnum))]
    return pairs
