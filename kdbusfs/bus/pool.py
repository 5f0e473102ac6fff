"""A connection's pool: the memory a client maps read-only and finds its results and messages in.

The pool is a list of contiguous slices covering the whole buffer, each free or busy. Allocation is
best fit (the smallest free slice that is large enough, split if larger). A busy slice holds two
references: the bus's (while it still needs the bytes, e.g. a queued message) and the client's (once
the offset is published to it); it becomes free when both are gone and merges with free neighbours.

Everything the allocator knows lives here, never in the pool bytes: clients can scribble on their
mapping (FUSE cannot refuse a writable shared mapping), so pool bytes are output only.
"""

from __future__ import annotations

import bisect
import errno
import mmap
from dataclasses import dataclass

from ..errors import KdbusError


@dataclass(slots=True, eq=False)
class Slice:
    offset: int
    size: int
    free: bool = True
    bus_ref: bool = False
    user_ref: bool = False
    accounted: bool = False


class Pool:
    def __init__(self, size: int, buffer: mmap.mmap | None = None) -> None:
        self.size = size
        # Anonymous memory unless the edge maps something the client sees directly (a memfd
        # backing the client's mapping); either way pages cost nothing until written.
        self.buffer = buffer if buffer is not None else mmap.mmap(-1, size)
        # Whether the client's mapping is this memory itself, which it can write to: then no byte
        # of it may ever be copied to another connection.
        self.client_writable = buffer is not None
        # Busy and free slices by offset, kept sorted; free slices also indexed by (size, offset).
        self._offsets: list[int] = [0]
        self._slices: dict[int, Slice] = {0: Slice(0, size)}
        self._free: list[tuple[int, int]] = [(size, 0)]
        self.accounted_size = 0
        # Byte ranges written since the edge last pushed them into the client's page cache.
        self.dirty: list[tuple[int, int]] = []

    # -- allocation ---------------------------------------------------------------------------
    def alloc(self, size: int, accounted: bool = False) -> Slice:
        """Allocate a slice of ALIGN8(size) bytes, best fit, held by the bus."""
        size = max((size + 7) & ~7, 8)
        i = bisect.bisect_left(self._free, (size, -1))
        if i == len(self._free):
            raise KdbusError(errno.EXFULL, f"no free slice of {size} bytes in a {self.size}-byte pool")
        free_size, offset = self._free.pop(i)
        piece = self._slices[offset]
        if free_size > size:
            rest = Slice(offset + size, free_size - size)
            self._slices[rest.offset] = rest
            bisect.insort(self._offsets, rest.offset)
            bisect.insort(self._free, (rest.size, rest.offset))
            piece.size = size
        piece.free = False
        piece.bus_ref = True
        piece.user_ref = False
        piece.accounted = accounted
        if accounted:
            self.accounted_size += size
        return piece

    def write(self, piece: Slice, data: bytes | bytearray | memoryview, at: int = 0) -> None:
        start = piece.offset + at
        end = start + len(data)
        if end > piece.offset + piece.size:
            raise AssertionError("write past the end of a slice")
        self.buffer[start:end] = data
        self.dirty.append((start, end))

    def touched(self, start: int, end: int) -> None:
        """Bytes [start, end) were changed in place (after the message was written)."""
        self.dirty.append((start, end))

    def publish(self, piece: Slice) -> None:
        """Hand the slice's offset to the client: it now holds a reference until FREE."""
        piece.user_ref = True

    def release_bus_ref(self, piece: Slice) -> None:
        piece.bus_ref = False
        if piece.accounted:
            self.accounted_size -= piece.size
            piece.accounted = False
        if not piece.user_ref:
            self._release(piece)

    def free_user(self, offset: int) -> None:
        """KDBUS_CMD_FREE: drop the client's reference to the slice published at `offset`."""
        if offset == self.size:
            return
        piece = self._slices.get(offset)
        if piece is None or piece.free or not piece.user_ref:
            raise KdbusError(errno.ENXIO, f"offset {offset} is not a published slice")
        piece.user_ref = False
        if not piece.bus_ref:
            self._release(piece)

    def _release(self, piece: Slice) -> None:
        piece.free = True
        i = bisect.bisect_left(self._offsets, piece.offset)
        # Merge with the following slice, then with the preceding one.
        if i + 1 < len(self._offsets):
            after = self._slices[self._offsets[i + 1]]
            if after.free:
                self._free.remove((after.size, after.offset))
                del self._slices[after.offset]
                del self._offsets[i + 1]
                piece.size += after.size
        if i > 0:
            before = self._slices[self._offsets[i - 1]]
            if before.free:
                self._free.remove((before.size, before.offset))
                del self._slices[piece.offset]
                del self._offsets[i]
                before.size += piece.size
                piece = before
        bisect.insort(self._free, (piece.size, piece.offset))

    # -- inspection (tests, statistics) -------------------------------------------------------
    def slices(self) -> list[Slice]:
        return [self._slices[o] for o in self._offsets]

    def free_size(self) -> int:
        return sum(size for size, _ in self._free)

    def close(self) -> None:
        try:
            self.buffer.close()
        except BufferError:
            # A page-cache store still queued reads straight from this memory (the edge writes
            # stores on a thread of its own, without copying them): the mapping goes with the last
            # view of it. Its pages go now; the client's file is released, so nobody looks at
            # what such a store leaves.
            self.buffer.madvise(mmap.MADV_DONTNEED)

    def take_dirty(self) -> list[tuple[int, int]]:
        dirty, self.dirty = self.dirty, []
        return dirty
