"""The calling process's memory, read and written with process_vm_readv/writev.

FUSE forwards an ioctl with only the fixed part of the struct, so the daemon reads the rest (items,
messages, payload vectors) from the caller's address space and writes results back the same way.
That needs ptrace-level access: a root daemon has it; a user's daemon has it over that user's
dumpable processes, which is who may open a user mount.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
from typing import Any

from ..bus.message import Buffer
from ..errors import KdbusError
from .libc import libc

log = logging.getLogger("kdbusfs.host")

# Highest user-space address on x86-64 with 5-level paging; anything above is the kernel's.
USER_ADDRESS_LIMIT = 1 << 56
# Every argument is a plain integer (the iovecs are packed by hand into one buffer): ctypes converts
# those far cheaper than structures passed by reference, and this is on every message's path.
_VM_ARGS: list[type[Any]] = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                             ctypes.c_ulong, ctypes.c_ulong]
# Two struct iovec {base, len}: the local one, then the remote one.
_IOVECS = struct.Struct("<QQQQ")
_BOUNCE_SIZE = 64 * 1024


def _vm_call(name: str) -> Any:
    call = getattr(libc(), name)
    call.argtypes = _VM_ARGS
    call.restype = ctypes.c_ssize_t
    return call


class ProcessMemory:
    """Reads and writes other processes' memory with process_vm_readv/writev.

    Unlike /proc/PID/mem (which pokes through page protections like a debugger), these calls honour
    the caller's protections: unmapped, PROT_NONE or read-only memory fails with EFAULT exactly
    where the kernel's copy_from_user/copy_to_user would.
    """

    def __init__(self) -> None:
        self._iovecs = ctypes.create_string_buffer(_IOVECS.size)
        self._iovecs_view = memoryview(self._iovecs).cast("B")
        self._local_iov = ctypes.addressof(self._iovecs)
        self._remote_iov = self._local_iov + 16
        # Small transfers bounce through here: one buffer, no allocation per call.
        self._bounce = ctypes.create_string_buffer(_BOUNCE_SIZE)
        self._bounce_view = memoryview(self._bounce).cast("B")
        self._bounce_address = ctypes.addressof(self._bounce)
        self._readv = _vm_call("process_vm_readv")
        self._writev = _vm_call("process_vm_writev")

    def _transfer(self, call: Any, tid: int, local: int, remote: int, size: int) -> int:
        _IOVECS.pack_into(self._iovecs_view, 0, local, size, remote, size)
        done: int = call(tid, self._local_iov, 1, self._remote_iov, 1, 0)
        if done < 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                log.warning("cannot access the memory of task %d: it runs as another user or is not "
                            "dumpable, so it cannot use this mount", tid)
                raise KdbusError(errno.EPERM, f"no access to the memory of task {tid}")
            if err == errno.ESRCH:
                raise KdbusError(errno.ESRCH, f"task {tid} is gone")
            raise KdbusError(errno.EFAULT, f"{size} bytes at {remote:#x} of task {tid}: {os.strerror(err)}")
        return done

    def read(self, tid: int, address: int, size: int) -> bytes:
        if size == 0:
            return b""
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"read of {size} bytes at {address:#x} outside user space")
        if size <= _BOUNCE_SIZE:
            done = self._transfer(self._readv, tid, self._bounce_address, address, size)
            data = self._bounce_view[:size].tobytes()
        else:
            large = ctypes.create_string_buffer(size)
            done = self._transfer(self._readv, tid, ctypes.addressof(large), address, size)
            data = large.raw
        if done != size:
            raise KdbusError(errno.EFAULT, f"short read of {size} bytes at {address:#x} of task {tid}")
        return data

    def read_into(self, tid: int, address: int, size: int, buffer: Buffer, offset: int) -> None:
        """Copy caller memory straight into `buffer` (a pool) at `offset`: no intermediate copy."""
        if size == 0:
            return
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"read of {size} bytes at {address:#x} outside user space")
        if offset + size > len(buffer):
            raise ValueError(f"{size} bytes at {offset} do not fit the buffer")
        # The address of one byte is all we need: no array type per size, no export kept.
        anchor = ctypes.c_char.from_buffer(buffer, offset)
        local = ctypes.addressof(anchor)
        del anchor
        if self._transfer(self._readv, tid, local, address, size) != size:
            raise KdbusError(errno.EFAULT, f"short read of {size} bytes at {address:#x} of task {tid}")

    def write(self, tid: int, address: int, data: bytes) -> None:
        size = len(data)
        if size == 0:
            return
        if address + size > USER_ADDRESS_LIMIT:
            raise KdbusError(errno.EFAULT, f"write at {address:#x} outside user space")
        if size <= _BOUNCE_SIZE:
            self._bounce_view[:size] = data
            local = self._bounce_address
        else:
            source = ctypes.create_string_buffer(data, size)
            local = ctypes.addressof(source)
        if self._transfer(self._writev, tid, local, address, size) != size:
            raise KdbusError(errno.EFAULT, f"short write of {size} bytes at {address:#x} of task {tid}")

    def close(self) -> None:
        pass

