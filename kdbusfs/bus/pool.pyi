# The interface of pool.pyx (compiled), for type checkers.
import mmap

class Slice:
    offset: int
    size: int
    free: bool
    bus_ref: bool
    user_ref: bool
    accounted: bool
    def __init__(self, offset: int, size: int, free: bool = True, bus_ref: bool = False,
                 user_ref: bool = False, accounted: bool = False) -> None: ...

class Pool:
    """A connection's pool: contiguous slices covering the whole buffer, each free or busy."""

    @property
    def size(self) -> int: ...
    @property
    def buffer(self) -> mmap.mmap: ...
    @property
    def client_writable(self) -> bool:
        """Whether the client's mapping is this memory itself, which it can write to."""
    accounted_size: int
    dirty: list[tuple[int, int]]
    def __init__(self, size: int, buffer: mmap.mmap | None = None) -> None: ...
    def alloc(self, size: int, accounted: bool = False) -> Slice:
        """Allocate a slice of ALIGN8(size) bytes, best fit, held by the bus."""
    def write(self, piece: Slice, data: bytes | bytearray | memoryview, at: int = 0) -> None: ...
    def touched(self, start: int, end: int) -> None:
        """Bytes [start, end) were changed in place (after the message was written)."""
    def publish(self, piece: Slice) -> None:
        """Hand the slice's offset to the client: it now holds a reference until FREE."""
    def release_bus_ref(self, piece: Slice) -> None: ...
    def free_user(self, offset: int) -> None:
        """KDBUS_CMD_FREE: drop the client's reference to the slice published at `offset`."""
    def slices(self) -> list[Slice]: ...
    def free_size(self) -> int: ...
    def close(self) -> None: ...
    def take_dirty(self) -> list[tuple[int, int]]: ...
