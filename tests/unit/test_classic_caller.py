"""The arena a classic client's commands run in: made-up addresses for daemon buffers."""

from __future__ import annotations

import errno

import pytest

from kdbusfs import limits
from kdbusfs.abi import structs
from kdbusfs.bus.args import copy_in
from kdbusfs.classic.caller import Arena
from kdbusfs.client.ioctl import command_bytes
from kdbusfs.errors import KdbusError


class CountingReader:
    """An arena as copy_in's caller, counting the reads it is asked for (failed ones too)."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.reads = 0

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        return self.arena.read(address, size)


@pytest.mark.parametrize("size", [8, 40, 512, 520, 4096, 5000])
def test_a_region_ends_where_a_page_ends(size: int) -> None:
    arena = Arena()
    first = arena.place(b"\x01" * 24)
    data = bytes(i % 251 for i in range(size))
    address = arena.place(data)
    assert address % 8 == 0 and (address + size) % limits.PAGE_SIZE == 0
    assert arena.read(address, size) == data
    # Past its end there is nothing, not the next region (nor, before it, the previous one).
    with pytest.raises(KdbusError) as past:
        arena.read(address, size + 1)
    assert past.value.errno == errno.EFAULT
    assert address - (first + 24) >= limits.PAGE_SIZE


def test_a_size_not_a_multiple_of_8_keeps_the_start_aligned() -> None:
    address = Arena().place(bytes(13))
    assert address % 8 == 0 and limits.PAGE_SIZE - (address + 13) % limits.PAGE_SIZE == 3


@pytest.mark.parametrize(("items", "reads"), [(b"", 1), (bytes(600), 2)])
def test_copy_in_reads_a_placed_struct_without_failing_reads(items: bytes, reads: int) -> None:
    struct = command_bytes(structs.CMD, 0, 0, items=items)
    reader = CountingReader(Arena())
    address = reader.arena.place(bytearray(struct))
    assert copy_in(reader, address, structs.CMD, b"") == struct
    assert reader.reads == reads
