"""kdbusfs.host.memory (compiled): another task's memory read and written as kdbus's copy_*_user
would, with the errno kdbus gives for a bad pointer. The "other task" is this process: the calls
are the same, and its memory can be checked directly."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import subprocess
from typing import Any, cast

import pytest

from kdbusfs.errors import KdbusError
from kdbusfs.host.memory import USER_ADDRESS_LIMIT, ProcessMemory

ME = os.getpid()


@pytest.fixture
def memory() -> ProcessMemory:
    return ProcessMemory()


def test_read_write_and_read_into_a_pool_mapping(memory: ProcessMemory) -> None:
    source = ctypes.create_string_buffer(b"0123456789abcdef", 16)
    address = ctypes.addressof(source)
    assert memory.read(ME, address + 4, 6) == b"456789"
    assert memory.read(ME, address, 0) == b""
    memory.write(ME, address + 10, b"XYZ")
    memory.write(ME, address, memoryview(b"--"))
    assert source.raw == b"--23456789XYZdef"
    pool = mmap.mmap(-1, mmap.PAGESIZE)
    memory.read_into(ME, address, 16, pool, mmap.PAGESIZE - 16)
    assert pool[-16:] == source.raw
    scratch = bytearray(4)
    memory.read_into(ME, address + 2, 2, scratch, 1)
    assert scratch == b"\0" + b"23" + b"\0"
    pool.close()  # no buffer export left behind


def test_a_large_transfer_is_exact(memory: ProcessMemory) -> None:
    data = os.urandom(3 * 65536 + 5)
    source = ctypes.create_string_buffer(data, len(data))
    assert memory.read(ME, ctypes.addressof(source), len(data)) == data
    target = bytearray(len(data))
    memory.read_into(ME, ctypes.addressof(source), len(data), target, 0)
    assert target == data


def test_bad_pointers_are_efault_and_nothing_is_written_past_the_buffer(memory: ProcessMemory) -> None:
    unmapped = mmap.mmap(-1, mmap.PAGESIZE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(unmapped))
    unmapped.close()
    for attempt in (lambda: memory.read(ME, address, 8),
                    lambda: memory.write(ME, address, b"x"),
                    lambda: memory.read(ME, USER_ADDRESS_LIMIT - 4, 8),
                    lambda: memory.write(ME, USER_ADDRESS_LIMIT, b"x"),
                    lambda: memory.read(ME, 2**64 - 4, 8)):
        with pytest.raises(KdbusError) as failed:
            attempt()
        assert failed.value.errno == errno.EFAULT
    small = bytearray(4)
    source = ctypes.create_string_buffer(8)
    with pytest.raises(ValueError):
        memory.read_into(ME, ctypes.addressof(source), 8, small, 0)
    with pytest.raises(ValueError):
        memory.read_into(ME, ctypes.addressof(source), 2, small, -1)
    with pytest.raises(BufferError):  # not writable
        memory.read_into(ME, ctypes.addressof(source), 2, cast(Any, b"read-only"), 0)
    assert small == bytes(4)


def test_a_task_that_is_gone_is_esrch(memory: ProcessMemory) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(KdbusError) as failed:
        memory.read(child.pid, 4096, 8)
    assert failed.value.errno == errno.ESRCH
