# cython: language_level=3, boundscheck=False, wraparound=False
"""A connection's pool: the memory a client maps read-only and finds its results and messages in.

The pool is a list of contiguous slices covering the whole buffer, each free or busy. Allocation is
best fit (the smallest free slice that is large enough, split if larger). A busy slice holds two
references: the bus's (while it still needs the bytes, e.g. a queued message) and the client's (once
the offset is published to it); it becomes free when both are gone and merges with free neighbours.

Everything the allocator knows lives here, never in the pool bytes: clients can scribble on their
mapping (FUSE cannot refuse a writable shared mapping), so pool bytes are output only.

Compiled (issue 12: every message delivered takes a slice and every FREE gives one back): slices
and the pool are cdef classes with typed fields; the bookkeeping is the same sorted lists.
"""

from bisect import bisect_left, insort
import errno
import mmap

from ..errors import KdbusError


cdef class Slice:
    """A run of the pool's bytes, free or busy (fields in pool.pxd)."""

    def __init__(self, Py_ssize_t offset, Py_ssize_t size, bint free=True, bint bus_ref=False,
                 bint user_ref=False, bint accounted=False):
        self.offset = offset
        self.size = size
        self.free = free
        self.bus_ref = bus_ref
        self.user_ref = user_ref
        self.accounted = accounted

    def __repr__(self):
        return (f"Slice(offset={self.offset}, size={self.size}, free={self.free}, bus_ref={self.bus_ref}, "
                f"user_ref={self.user_ref}, accounted={self.accounted})")


cdef inline Slice _free_slice(Py_ssize_t offset, Py_ssize_t size):
    """Slice(offset, size) without a Python call (every allocation that splits makes one)."""
    cdef Slice piece = Slice.__new__(Slice)
    piece.offset = offset
    piece.size = size
    piece.free = True
    return piece


cdef Py_ssize_t _first_fitting(list free, Py_ssize_t size) except -1:
    """bisect_left(free, (size, -1)) over the (size, offset) index of free slices: the index of
    the smallest free slice of at least `size` bytes (best fit), comparing sizes as C integers."""
    cdef Py_ssize_t low = 0, high = len(free), middle
    while low < high:
        middle = (low + high) // 2
        if <Py_ssize_t>(<tuple>free[middle])[0] < size:
            low = middle + 1
        else:
            high = middle
    return low


cdef class Pool:
    """A connection's pool (fields in pool.pxd)."""

    def __init__(self, Py_ssize_t size, buffer=None):
        self.size = size
        # Anonymous memory unless the edge maps something the client sees directly (a memfd
        # backing the client's mapping); either way pages cost nothing until written.
        self.buffer = buffer if buffer is not None else mmap.mmap(-1, size)
        # Whether the client's mapping is this memory itself, which it can write to: then no byte
        # of it may ever be copied to another connection.
        self.client_writable = buffer is not None
        # Busy and free slices by offset, kept sorted; free slices also indexed by (size, offset).
        self._offsets = [0]
        self._slices = {0: Slice(0, size)}
        self._free = [(size, 0)]
        self.accounted_size = 0
        # Byte ranges written since the edge last pushed them into the client's page cache.
        self.dirty = []

    # -- allocation ---------------------------------------------------------------------------
    cpdef Slice alloc(self, Py_ssize_t size, bint accounted=False):
        """Allocate a slice of ALIGN8(size) bytes, best fit, held by the bus."""
        size = max((size + 7) & ~(<Py_ssize_t>7), 8)
        cdef Py_ssize_t i = _first_fitting(self._free, size)
        if i == len(self._free):
            raise KdbusError(errno.EXFULL, f"no free slice of {size} bytes in a {self.size}-byte pool")
        cdef tuple found = self._free.pop(i)
        cdef Py_ssize_t free_size = found[0], offset = found[1]
        cdef Slice piece = self._slices[offset]
        cdef Slice rest
        if free_size > size:
            rest = _free_slice(offset + size, free_size - size)
            self._slices[rest.offset] = rest
            insort(self._offsets, rest.offset)
            insort(self._free, (rest.size, rest.offset))
            piece.size = size
        piece.free = False
        piece.bus_ref = True
        piece.user_ref = False
        piece.accounted = accounted
        if accounted:
            self.accounted_size += size
        return piece

    def write(self, Slice piece not None, data, Py_ssize_t at=0):
        cdef Py_ssize_t start = piece.offset + at
        cdef Py_ssize_t end = start + len(data)
        if end > piece.offset + piece.size:
            raise AssertionError("write past the end of a slice")
        self.buffer[start:end] = data
        self.dirty.append((start, end))

    cpdef touched(self, Py_ssize_t start, Py_ssize_t end):
        """Bytes [start, end) were changed in place (after the message was written)."""
        self.dirty.append((start, end))

    cpdef publish(self, Slice piece):
        """Hand the slice's offset to the client: it now holds a reference until FREE."""
        piece.user_ref = True

    cpdef release_bus_ref(self, Slice piece):
        piece.bus_ref = False
        if piece.accounted:
            self.accounted_size -= piece.size
            piece.accounted = False
        if not piece.user_ref:
            self._release(piece)

    cpdef free_user(self, offset):
        """KDBUS_CMD_FREE: drop the client's reference to the slice published at `offset` (any
        u64 the client gives)."""
        if offset == self.size:
            return
        cdef Slice piece = self._slices.get(offset)
        if piece is None or piece.free or not piece.user_ref:
            raise KdbusError(errno.ENXIO, f"offset {offset} is not a published slice")
        piece.user_ref = False
        if not piece.bus_ref:
            self._release(piece)

    cdef _release(self, Slice piece):
        piece.free = True
        cdef Py_ssize_t i = bisect_left(self._offsets, piece.offset)
        cdef Slice after, before
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
        insort(self._free, (piece.size, piece.offset))

    # -- inspection (tests, statistics) -------------------------------------------------------
    def slices(self):
        return [self._slices[o] for o in self._offsets]

    def free_size(self):
        return sum(size for size, _ in self._free)

    def close(self):
        try:
            self.buffer.close()
        except BufferError:
            # A page-cache store still queued reads straight from this memory (the edge writes
            # stores on a thread of its own, without copying them): the mapping goes with the last
            # view of it. Its pages go now; the client's file is released, so nobody looks at
            # what such a store leaves.
            self.buffer.madvise(mmap.MADV_DONTNEED)

    def take_dirty(self):
        dirty, self.dirty = self.dirty, []
        return dirty
