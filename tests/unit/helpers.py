"""Shared pieces of the unit tests: a fake caller, command builders and setup shortcuts.

`FakeCaller` stands for the memory and identity of the task issuing an ioctl. It is a bytearray mapped
at a fixed base address; reads and writes outside it fail with EFAULT, as process_vm_readv would.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from kdbusfs.abi import structs
from kdbusfs.abi.constants import Cmd, Item
from kdbusfs.abi.items import item, string_item
from kdbusfs.abi.structs import Layout
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.message import Passed
from kdbusfs.bus.metadata import Creds, Snapshot
from kdbusfs.bus.pool import Pool
from kdbusfs.errors import KdbusError
from kdbusfs.handle import Connected, Control, Handle, ioctl

BASE = 0x10000
MEMORY_SIZE = 0x10000
PAGE = 4096
POOL_SIZE = 16 * PAGE

CREATOR = Creds.for_ids(1000, 1000, 4242)
STRANGER = Creds.for_ids(1001, 1001, 4343)
BUS_NAME = "1000-test"

U64 = struct.Struct("<Q")


class NoFiles:
    def check_fds(self, fds: list[int]) -> None:
        raise KdbusError(errno.EBADF, "the fake task has no descriptors")

    def check_memfd(self, fd: int, start: int, size: int) -> None:
        raise KdbusError(errno.EBADF, "the fake task has no descriptors")

    def pollable(self, fd: int) -> int:
        raise KdbusError(errno.EBADF, "the fake task has no descriptors")


class FakeCaller:
    """The caller's address space: `size` bytes at `base`; anything else is EFAULT."""

    def __init__(self, creds: Creds = CREATOR, base: int = BASE, size: int = MEMORY_SIZE) -> None:
        self.base = base
        self.memory = bytearray(size)
        self._creds = creds

    def creds(self) -> Creds:
        return self._creds

    def process(self) -> Snapshot:
        """Process facts of the fake task: its creds and its name."""
        comm = self._creds.comm or None
        return Snapshot(self._creds, tid_comm_=comm, pid_comm_=comm)

    def read_into(self, address: int, size: int, buffer: Any, offset: int) -> None:
        buffer[offset : offset + size] = self.read(address, size)

    def files(self) -> Any:
        """The fake task has no descriptors to pass: any fd is EBADF."""
        return NoFiles()

    def close_fd(self, fd: int) -> None:
        raise AssertionError("the fake task never hands over descriptors")

    def install(self, passed: Passed, pool: Pool, offset: int) -> bool:
        """The fake task cannot be given descriptors (like a receiver not started under the
        launcher): they are closed and their numbers stay -1 in the message."""
        passed.close()
        return False

    def _index(self, address: int, size: int) -> int:
        start = address - self.base
        if start < 0 or start + size > len(self.memory):
            raise KdbusError(errno.EFAULT, f"{size} bytes at {address:#x} outside the fake address space")
        return start

    def read(self, address: int, size: int) -> bytes:
        start = self._index(address, size)
        return bytes(self.memory[start : start + size])

    def write(self, address: int, data: bytes) -> None:
        start = self._index(address, len(data))
        self.memory[start : start + len(data)] = data

    # -- test conveniences ---------------------------------------------------------------------
    def place(self, data: bytes, offset: int = 0) -> int:
        """Copy `data` to base + offset and return its address."""
        self.memory[offset : offset + len(data)] = data
        return self.base + offset

    def u64(self, address: int) -> int:
        return int(U64.unpack_from(self.read(address, 8))[0])


@contextmanager
def raises_errno(expected: int) -> Iterator[Any]:
    """Expect a KdbusError carrying exactly `expected`."""
    with pytest.raises(KdbusError) as info:
        yield info
    got = info.value.errno
    assert got == expected, f"expected {errno.errorcode[expected]}, got {errno.errorcode.get(got, got)}"


# -- command builders ---------------------------------------------------------------------------

def cmd_bytes(layout: Layout[Any], items: bytes = b"", **fields: int | bytes) -> bytes:
    """A command struct: fixed part from `fields` (0 by default; size = fixed + items), then items."""
    values: dict[str, int | bytes] = {}
    for name in layout.tuple._fields:
        values[name] = bytes(16) if name == "id128" else 0
    values["size"] = layout.size + len(items)
    for name, value in fields.items():
        if name not in values:
            raise TypeError(f"{layout.name} has no field {name!r}")
        values[name] = value
    return layout.pack(*values.values()) + items


def bloom_item(size: int = 64, n_hash: int = 1) -> bytes:
    return item(Item.BLOOM_PARAMETER, structs.BLOOM_PARAMETER.pack(size, n_hash))


def negotiate_item(*types: int) -> bytes:
    return item(Item.NEGOTIATE, b"".join(U64.pack(t) for t in types))


def bus_make_cmd(
    name: str | None = BUS_NAME, flags: int = 0, bloom_size: int = 64, n_hash: int = 1,
    with_bloom: bool = True, extra: bytes = b"", return_flags: int = 0,
) -> bytes:
    items = b""
    if with_bloom:
        items += bloom_item(bloom_size, n_hash)
    if name is not None:
        items += string_item(Item.MAKE_NAME, name)
    return cmd_bytes(structs.CMD, items + extra, flags=flags, return_flags=return_flags)


def hello_cmd(
    flags: int = 0, pool_size: int = POOL_SIZE, attach_send: int = 0, attach_recv: int = 0,
    items: bytes = b"", return_flags: int = 0,
) -> bytes:
    return cmd_bytes(
        structs.CMD_HELLO, items, flags=flags, pool_size=pool_size, attach_flags_send=attach_send,
        attach_flags_recv=attach_recv, return_flags=return_flags,
    )


# -- running commands ---------------------------------------------------------------------------

def run(handle: Handle, caller: FakeCaller, cmd: int, data: bytes, offset: int = 0) -> bytes:
    """Place `data` in the caller's memory and run the ioctl on it, as the edge would (no in_data)."""
    address = caller.place(data, offset)
    out = ioctl(handle, cmd, address, b"", caller)
    return out.out if isinstance(out, Connected) else out


def control(domain: Domain, creds: Creds = CREATOR) -> tuple[Handle, FakeCaller]:
    return Handle(Control(domain), creds), FakeCaller(creds)


def make_bus(domain: Domain, creds: Creds = CREATOR, name: str = BUS_NAME, flags: int = 0) -> Handle:
    """BUS_MAKE on a fresh control handle; returns the bus-owner handle."""
    handle, caller = control(domain, creds)
    run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(name, flags=flags))
    return handle


@dataclass
class Conn:
    handle: Handle
    caller: FakeCaller
    reply: Any  # the kdbus_cmd_hello named tuple HELLO returned

    @property
    def id(self) -> int:
        return int(self.reply.id)


def hello_handle(bus: Bus, creds: Creds = CREATOR) -> tuple[Handle, FakeCaller]:
    """A fresh handle on the bus's default endpoint, opened by `creds`."""
    return Handle(bus.default_endpoint, creds), FakeCaller(creds)


def connect(bus: Bus, creds: Creds = CREATOR, **hello: Any) -> Conn:
    handle, caller = hello_handle(bus, creds)
    out = run(handle, caller, Cmd.HELLO, hello_cmd(**hello))
    return Conn(handle, caller, structs.CMD_HELLO.unpack(out))
