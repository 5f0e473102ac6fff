"""Making a bus: KDBUS_CMD_BUS_MAKE on a domain's `control` file (KDBUS-SPEC.md §2.3).

The bus lives as long as the file it was made on stays open, so `Bus` holds that file; closing it
(or leaving its `with`) removes the bus and disconnects everyone on it.

    with make_bus("/sys/fs/kdbus", "example", policy={"org.example.Clock": [
            PolicyAccess.world("talk")]}) as bus:
        conn = bus.connect()
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..abi import structs
from ..abi.constants import MAKE_ACCESS_GROUP, MAKE_ACCESS_WORLD, Cmd, Item
from ..abi.items import item, string_item, u64_item
from ..limits import PAGE_SIZE
from .bloom import BloomParameters
from .connection import Connection, Kind
from .ioctl import command, issue
from .policy import PolicyAccess


class Bus:
    """A bus this process made, alive while this object's `control` file is open."""

    def __init__(self, control_fd: int, root: Path, name: str) -> None:
        self.control_fd = control_fd
        self.root = root
        # The bus's directory name, "<euid>-<name>".
        self.name = name
        self.policy_holders: list[Connection] = []

    @property
    def endpoint(self) -> Path:
        """The bus's default endpoint, the file connections open."""
        return self.root / self.name / "bus"

    def connect(self, **hello: Any) -> Connection:
        """A connection on this bus (`hello` as for `Connection.hello`)."""
        return Connection.hello(self.endpoint, **hello)

    def close(self) -> None:
        """Remove the bus: every connection on it is disconnected."""
        for holder in self.policy_holders:
            holder.close()
        self.policy_holders.clear()
        if self.control_fd >= 0:
            os.close(self.control_fd)
            self.control_fd = -1

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Bus {self.root / self.name}{' closed' if self.control_fd < 0 else ''}>"


# sd-bus's parameters, which its bloom filters assume.
SD_BUS_BLOOM = BloomParameters(64, 8)


def make_bus(root: str | os.PathLike[str], name: str, *, bloom: BloomParameters = SD_BUS_BLOOM,
             group_access: bool = False, world_access: bool = False, creator_attach_flags: int = 0,
             policy: Mapping[str, Iterable[PolicyAccess]] | None = None,
             prefix_uid: bool = True) -> Bus:
    """Make bus `name` in the domain mounted at `root`.

    kdbus wants bus names to start with the creator's euid and a dash; with `prefix_uid` that is
    added unless `name` has it. `group_access` / `world_access` open the bus to the creator's group
    / to everyone (else only the creator's user may connect). `creator_attach_flags` is the
    creator's metadata BUS_CREATOR_INFO may show. kdbus keeps bus policy in policy-holder
    connections: each name in `policy` gets one, held by the returned Bus.
    """
    prefix = f"{os.geteuid()}-"
    full_name = name if not prefix_uid or name.startswith(prefix) else prefix + name
    flags = (MAKE_ACCESS_GROUP if group_access or world_access else 0) | (
        MAKE_ACCESS_WORLD if world_access else 0)
    items = (item(Item.BLOOM_PARAMETER, structs.BLOOM_PARAMETER.pack(bloom.size, bloom.n_hash))
             + string_item(Item.MAKE_NAME, full_name)
             + (u64_item(Item.ATTACH_FLAGS_SEND, creator_attach_flags) if creator_attach_flags else b""))
    root = Path(root)
    fd = os.open(root / "control", os.O_RDWR | os.O_CLOEXEC)
    bus = Bus(fd, root, full_name)
    try:
        issue(fd, Cmd.BUS_MAKE, command(structs.CMD, flags, 0, items=items))
        for policy_name, grants in (policy or {}).items():
            bus.policy_holders.append(bus.connect(kind=Kind.POLICY_HOLDER, name=policy_name,
                                                  policy=grants, pool_size=PAGE_SIZE))
    except BaseException:
        bus.close()
        raise
    return bus
