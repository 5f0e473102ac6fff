"""`kdbusctl list` and `kdbusctl status`: the bus's connections and names, and what one
connection (or the bus's creator) lets others see of itself."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import Any

from ..abi.constants import ATTACH_ALL, HELLO_ACTIVATOR, NAME_ACTIVATOR, NAME_IN_QUEUE, Attach
from ..client import BusCreatorInfo, CommandError, Connection, ConnectionInfo, Metadata
from ..dbus.names import is_well_known_name
from .render import (
    bus_flag_names,
    connection_kind,
    hello_flag_names,
    metadata_json,
    metadata_pairs,
    name_flag_names,
    unique_name,
    user_name,
)
from .target import CtlError

# What a row of `list` shows of each connection.
LIST_ATTACH = Attach.CREDS | Attach.PIDS | Attach.PID_COMM | Attach.CONN_DESCRIPTION
_UNIQUE = re.compile(r"(?::1\.)?([0-9]+)")


@dataclass(frozen=True, slots=True)
class Row:
    """One line of `list`: a unique name or a well-known name, and the connection behind it.
    `state`: the connection's kind for unique names; for well-known names "primary", "queued",
    "activatable" (held by an activator only) or "activator" (an activator waiting behind an
    owner)."""

    name: str
    connection_id: int
    state: str
    metadata: Metadata

    @property
    def is_unique(self) -> bool:
        return self.name.startswith(":")

    def json(self) -> dict[str, Any]:
        meta = self.metadata
        return {
            "name": self.name, "connection": unique_name(self.connection_id), "id": self.connection_id,
            "state": self.state, "pid": meta.pids.pid if meta.pids else None, "process": meta.pid_comm,
            "uid": meta.creds.uid if meta.creds else None,
            "user": user_name(meta.creds.uid) if meta.creds else None, "description": meta.description,
        }

    def cells(self) -> list[str]:
        meta = self.metadata
        return [self.name, str(meta.pids.pid) if meta.pids else "-", meta.pid_comm or "-",
                user_name(meta.creds.uid) if meta.creds else "-", unique_name(self.connection_id),
                self.state, meta.description or "-"]


COLUMNS = ["NAME", "PID", "PROCESS", "USER", "CONNECTION", "STATE", "DESCRIPTION"]


def _metadata_of(conn: Connection, connection_id: int) -> Metadata:
    try:
        return conn.conn_info(connection_id, LIST_ATTACH).metadata
    except CommandError as exc:
        # A peer that left between LIST and CONN_INFO, or that the policy hides, is listed
        # without metadata.
        if exc.errno in (errno.ENXIO, errno.ESRCH, errno.EPERM):
            return Metadata()
        raise


def list_rows(conn: Connection, *, unique: bool = False, acquired: bool = False,
              activatable: bool = False) -> list[Row]:
    """The rows the filters select (none given: all)."""
    entries = conn.list_peers(unique=True, names=True, activators=True, queued=True)
    kinds = {entry.id: entry.flags for entry in entries}
    metadata = {connection_id: _metadata_of(conn, connection_id) for connection_id in sorted(kinds)}
    owned = {entry.name.name for entry in entries if entry.name is not None
             and not entry.flags & HELLO_ACTIVATOR and not entry.name.flags & NAME_IN_QUEUE}
    rows = [Row(unique_name(connection_id), connection_id, connection_kind(flags), metadata[connection_id])
            for connection_id, flags in sorted(kinds.items())]
    named = []
    for entry in entries:
        if entry.name is None:
            continue
        if entry.flags & HELLO_ACTIVATOR or entry.name.flags & NAME_ACTIVATOR:
            state = "activator" if entry.name.name in owned else "activatable"
        elif entry.name.flags & NAME_IN_QUEUE:
            state = "queued"
        else:
            state = "primary"
        named.append(Row(entry.name.name, entry.id, state, metadata[entry.id]))
    order = {"primary": 0, "activatable": 1, "activator": 2, "queued": 3}
    rows += sorted(set(named), key=lambda row: (row.name, order[row.state], row.connection_id))
    if not (unique or acquired or activatable):
        return rows
    return [row for row in rows if (unique and row.is_unique)
            or (acquired and not row.is_unique and row.state in ("primary", "queued"))
            or (activatable and row.state == "activatable")]


def table(rows: list[list[str]], legend: bool = True) -> list[str]:
    """Rows as aligned columns (the last one unpadded), with the column names first."""
    lines = ([COLUMNS] if legend else []) + rows
    if not lines:
        return []
    widths = [max(len(line[column]) for line in lines) for column in range(len(COLUMNS) - 1)]
    return ["  ".join([cell.ljust(width) for cell, width in zip(line, widths, strict=False)] + [line[-1]])
            .rstrip() for line in lines]


def parse_target(text: str) -> int | str:
    """A connection id (":1.5" or "5") or a well-known name."""
    matched = _UNIQUE.fullmatch(text)
    if matched:
        return int(matched.group(1))
    if not is_well_known_name(text):
        raise CtlError(f"'{text}' is neither a connection (:1.N or N) nor a well-known name")
    return text


def connection_info(conn: Connection, text: str) -> ConnectionInfo:
    target = parse_target(text)
    try:
        return conn.conn_info(target, ATTACH_ALL)
    except CommandError as exc:
        if exc.errno in (errno.ENXIO, errno.ESRCH):
            what = f"connection {unique_name(target)}" if isinstance(target, int) else f"owner of '{target}'"
            raise CtlError(f"no {what} on this bus ({exc})") from None
        raise


def status_of_connection(info: ConnectionInfo) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(text pairs, JSON object) for a connection."""
    pairs = [("UniqueName", unique_name(info.id)), ("Id", str(info.id)),
             ("Kind", connection_kind(info.flags)), ("Flags", " ".join(hello_flag_names(info.flags)) or "-")]
    names = [f"{owned.name}({','.join(name_flag_names(owned.flags))})" for owned in info.metadata.owned_names]
    pairs += [(key, value) for key, value in metadata_pairs(info.metadata) if key != "WellKnownNames"]
    if info.metadata.owned_names:
        pairs.append(("WellKnownNames", " ".join(names)))
    record = {"unique_name": unique_name(info.id), "id": info.id, "kind": connection_kind(info.flags),
              "flags": hello_flag_names(info.flags), "metadata": metadata_json(info.metadata)}
    return pairs, record


def status_of_bus(conn: Connection, info: BusCreatorInfo, endpoint: str) -> tuple[list[tuple[str, str]],
                                                                                   dict[str, Any]]:
    """(text pairs, JSON object) for the bus and its creator."""
    pairs = [("BusName", info.name), ("BusId", str(info.id)), ("BusUUID", conn.bus_uuid.hex),
             ("Endpoint", endpoint), ("Flags", " ".join(bus_flag_names(info.flags)) or "-"),
             ("BloomSize", str(conn.bloom.size)),
             ("BloomHashes", str(conn.bloom.n_hash))]
    pairs += metadata_pairs(info.metadata)
    record = {"bus_name": info.name, "bus_id": info.id, "bus_uuid": str(conn.bus_uuid), "endpoint": endpoint,
              "flags": info.flags, "bloom": {"size": conn.bloom.size, "n_hash": conn.bloom.n_hash},
              "creator": metadata_json(info.metadata)}
    return pairs, record
