# The interface of layout.pyx (compiled), for type checkers.
from .message import Buffer, Staged
from .pool import Pool

def layout_size(msg: Staged, meta: bytes, meta_pad: int) -> tuple[int, int, int]:
    """(kdbus_msg.size, payload start, slice size) for a receiver getting `meta`."""

def last_item_padding(items: bytes) -> int:
    """Padding bytes after the last of a run of padded items (kdbus sizes end unpadded)."""

def layout_for(msg: Staged, meta: bytes) -> tuple[int, int, int]:
    """layout_size() for a receiver getting the metadata items `meta` (each padded to 8)."""

def write(msg: Staged, pool: Pool, offset: int, meta: bytes, layout: tuple[int, int, int]) -> None:
    """Lay the message out in `pool` at `offset` (the slice is allocated and large enough)."""

def render(msg: Staged, buf: Buffer, offset: int, meta: bytes, layout: tuple[int, int, int]) -> None:
    """write() into any buffer: a pool, or daemon-private bytes a message is kept in."""
