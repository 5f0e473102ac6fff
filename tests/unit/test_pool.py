"""The pool allocator and its two references per slice (KDBUS-SPEC.md §4, §2.9)."""

from __future__ import annotations

import errno
import random

import pytest
from helpers import raises_errno

from kdbusfs.bus.pool import Pool, Slice
from kdbusfs.errors import KdbusError

SIZE = 4096


def layout(pool: Pool) -> list[tuple[int, int, bool]]:
    return [(s.offset, s.size, s.free) for s in pool.slices()]


def holes(pool: Pool, sizes: list[int]) -> list[Slice]:
    """Carve free holes of the given sizes, each followed by a busy separator; returns the separators."""
    pieces = []
    for size in sizes:
        pieces.append(pool.alloc(size))
        pieces.append(pool.alloc(8))
    for hole in pieces[0::2]:
        pool.release_bus_ref(hole)
    return pieces[1::2]


def test_new_pool_is_one_free_slice() -> None:
    pool = Pool(SIZE)
    assert layout(pool) == [(0, SIZE, True)]
    assert pool.free_size() == SIZE
    assert pool.accounted_size == 0
    assert len(pool.buffer) == SIZE


def test_first_allocation_is_at_offset_0_and_split() -> None:
    pool = Pool(SIZE)
    piece = pool.alloc(32)
    assert (piece.offset, piece.size, piece.free) == (0, 32, False)
    assert layout(pool) == [(0, 32, False), (32, SIZE - 32, True)]


@pytest.mark.parametrize(("asked", "got"), [(1, 8), (7, 8), (8, 8), (9, 16), (13, 16), (24, 24), (25, 32)])
def test_allocation_rounds_up_to_8(asked: int, got: int) -> None:
    assert Pool(SIZE).alloc(asked).size == got


def test_offsets_are_8_aligned() -> None:
    pool = Pool(SIZE)
    offsets = [pool.alloc(n).offset for n in (1, 3, 13, 20, 5)]
    assert offsets == [0, 8, 16, 32, 56]


def test_new_slice_is_held_by_the_bus_only() -> None:
    piece = Pool(SIZE).alloc(16)
    assert (piece.bus_ref, piece.user_ref, piece.accounted) == (True, False, False)


def test_exact_fit_preferred_over_larger_slice() -> None:
    pool = Pool(SIZE)
    holes(pool, [64, 32, 48])  # holes at 0, 72, 112
    piece = pool.alloc(32)
    assert piece.offset == 72
    assert piece.size == 32


def test_smallest_larger_slice_is_split() -> None:
    pool = Pool(SIZE)
    holes(pool, [64, 32, 48])  # holes at 0 (64), 72 (32), 112 (48)
    piece = pool.alloc(40)
    assert (piece.offset, piece.size) == (112, 40)
    assert (152, 8, True) in layout(pool)


def test_best_fit_skips_too_small_slices() -> None:
    pool = Pool(SIZE)
    holes(pool, [16, 24, 64])  # holes at 0, 24, 56
    assert pool.alloc(56).offset == 56


def test_exfull_when_pool_is_full() -> None:
    pool = Pool(SIZE)
    pool.alloc(SIZE)
    with raises_errno(errno.EXFULL):
        pool.alloc(8)


def test_exfull_when_request_exceeds_pool() -> None:
    with raises_errno(errno.EXFULL):
        Pool(SIZE).alloc(SIZE + 1)


def test_exfull_when_free_space_is_fragmented() -> None:
    pool = Pool(256)
    separators = holes(pool, [64, 64, 64])
    pool.alloc(pool.free_size() - 192)  # the tail after the last separator
    assert pool.free_size() == 192
    assert all(not s.free for s in separators)
    with raises_errno(errno.EXFULL):
        pool.alloc(72)


def test_failed_allocation_changes_nothing() -> None:
    pool = Pool(SIZE)
    pool.alloc(SIZE - 64)
    before = layout(pool)
    with raises_errno(errno.EXFULL):
        pool.alloc(72)
    assert layout(pool) == before


# -- release and merge --------------------------------------------------------------------------

def test_release_merges_with_both_neighbours() -> None:
    pool = Pool(SIZE)
    a, b, c, d = (pool.alloc(32) for _ in range(4))
    pool.release_bus_ref(a)
    pool.release_bus_ref(c)
    assert layout(pool) == [(0, 32, True), (32, 32, False), (64, 32, True), (96, 32, False),
                            (128, SIZE - 128, True)]
    pool.release_bus_ref(b)
    assert layout(pool) == [(0, 96, True), (96, 32, False), (128, SIZE - 128, True)]
    pool.release_bus_ref(d)
    assert layout(pool) == [(0, SIZE, True)]
    assert pool.free_size() == SIZE


def test_release_merges_with_following_free_slice() -> None:
    pool = Pool(SIZE)
    a, b = pool.alloc(16), pool.alloc(16)
    pool.release_bus_ref(b)
    assert layout(pool) == [(0, 16, False), (16, SIZE - 16, True)]
    pool.release_bus_ref(a)
    assert layout(pool) == [(0, SIZE, True)]


def test_release_merges_with_preceding_free_slice() -> None:
    pool = Pool(SIZE)
    a, b = pool.alloc(16), pool.alloc(16)
    pool.alloc(16)
    pool.release_bus_ref(a)
    pool.release_bus_ref(b)
    assert layout(pool) == [(0, 32, True), (32, 16, False), (48, SIZE - 48, True)]


def test_merged_space_is_reusable_as_one_slice() -> None:
    pool = Pool(128)
    a, b, c, d = (pool.alloc(32) for _ in range(4))
    for piece in (a, c, b):
        pool.release_bus_ref(piece)
    assert pool.alloc(96).offset == 0


# -- FREE semantics (§2.9, §4) ------------------------------------------------------------------

def test_free_of_pool_size_is_a_noop() -> None:
    pool = Pool(SIZE)
    pool.alloc(64)
    before = layout(pool)
    pool.free_user(SIZE)
    assert layout(pool) == before


def test_free_of_unpublished_slice_is_enxio() -> None:
    pool = Pool(SIZE)
    piece = pool.alloc(64)
    with raises_errno(errno.ENXIO):
        pool.free_user(piece.offset)
    assert not piece.free


@pytest.mark.parametrize("offset", [8, 24, 100, SIZE + 8, 2 * SIZE])
def test_free_of_unknown_offset_is_enxio(offset: int) -> None:
    pool = Pool(SIZE)
    piece = pool.alloc(64)
    pool.publish(piece)
    with raises_errno(errno.ENXIO):
        pool.free_user(offset)


def test_free_of_never_allocated_offset_is_enxio() -> None:
    with raises_errno(errno.ENXIO):
        Pool(SIZE).free_user(0)


def test_free_of_published_slice_without_bus_ref_frees_it() -> None:
    pool = Pool(SIZE)
    piece = pool.alloc(64)
    pool.publish(piece)
    pool.release_bus_ref(piece)
    assert not piece.free  # the user still holds it
    pool.free_user(0)
    assert layout(pool) == [(0, SIZE, True)]


def test_double_free_is_enxio() -> None:
    pool = Pool(SIZE)
    piece = pool.alloc(64)
    pool.publish(piece)
    pool.release_bus_ref(piece)
    pool.free_user(0)
    with raises_errno(errno.ENXIO):
        pool.free_user(0)


def test_user_freed_slice_held_by_bus_stays_busy_until_bus_release() -> None:
    pool = Pool(SIZE)
    piece = pool.alloc(64)
    pool.publish(piece)
    pool.free_user(0)  # like FREE after a PEEK: the message stays queued
    assert layout(pool) == [(0, 64, False), (64, SIZE - 64, True)]
    assert (piece.bus_ref, piece.user_ref) == (True, False)
    with raises_errno(errno.ENXIO):
        pool.free_user(0)  # not published any more
    pool.release_bus_ref(piece)
    assert layout(pool) == [(0, SIZE, True)]


def test_republished_slice_can_be_freed_again() -> None:
    pool = Pool(SIZE)
    piece = pool.alloc(64)
    pool.publish(piece)
    pool.free_user(0)
    pool.publish(piece)  # the next PEEK/RECV hands out the same offset
    pool.release_bus_ref(piece)
    pool.free_user(0)
    assert layout(pool) == [(0, SIZE, True)]


# -- accounting and dirty ranges ----------------------------------------------------------------

def test_accounted_allocation_adds_its_rounded_size() -> None:
    pool = Pool(SIZE)
    pool.alloc(20, accounted=True)
    pool.alloc(100)
    assert pool.accounted_size == 24


def test_bus_release_returns_accounted_size_even_while_user_holds_it() -> None:
    pool = Pool(SIZE)
    a = pool.alloc(20, accounted=True)
    b = pool.alloc(40, accounted=True)
    assert pool.accounted_size == 64
    pool.publish(a)
    pool.release_bus_ref(a)
    assert pool.accounted_size == 40
    assert not a.accounted
    pool.free_user(a.offset)
    assert pool.accounted_size == 40
    pool.release_bus_ref(b)
    assert pool.accounted_size == 0


def test_write_copies_into_the_buffer_at_the_slice() -> None:
    pool = Pool(SIZE)
    pool.alloc(16)
    piece = pool.alloc(16)
    pool.write(piece, b"hello", at=3)
    assert pool.buffer[16:32] == b"\0\0\0hello" + bytes(8)


def test_write_records_dirty_range() -> None:
    pool = Pool(SIZE)
    pool.alloc(16)
    piece = pool.alloc(32)
    pool.write(piece, b"abcd")
    pool.write(piece, bytearray(b"xy"), at=10)
    assert pool.dirty == [(16, 20), (26, 28)]


def test_take_dirty_returns_and_clears() -> None:
    pool = Pool(SIZE)
    piece = pool.alloc(16)
    pool.write(piece, memoryview(b"12345678"))
    assert pool.take_dirty() == [(0, 8)]
    assert pool.take_dirty() == []
    assert pool.dirty == []


def test_write_past_the_slice_is_refused() -> None:
    pool = Pool(SIZE)
    piece = pool.alloc(8)
    with pytest.raises(AssertionError):
        pool.write(piece, bytes(9))
    assert pool.dirty == []


# -- randomized invariants ----------------------------------------------------------------------

def check_invariants(pool: Pool, busy: dict[int, Slice]) -> None:
    slices = pool.slices()
    position = 0
    for s in slices:
        assert s.offset == position, "slices must tile the pool"
        assert s.size > 0 and s.size % 8 == 0
        position += s.size
    assert position == pool.size
    for left, right in zip(slices, slices[1:], strict=False):
        assert not (left.free and right.free), f"adjacent free slices at {left.offset} and {right.offset}"
    busy_slices = [s for s in slices if not s.free]
    assert {s.offset for s in busy_slices} == set(busy)
    assert pool.free_size() == sum(s.size for s in slices if s.free)
    assert pool.free_size() + sum(s.size for s in busy_slices) == pool.size
    assert pool.accounted_size == sum(s.size for s in busy_slices if s.accounted)


def test_random_alloc_free_sequences_keep_invariants() -> None:
    rng = random.Random(20150807)
    pool = Pool(16 * 1024)
    busy: dict[int, Slice] = {}
    for _ in range(3000):
        action = rng.random()
        if action < 0.45 or not busy:
            size = rng.choice([rng.randint(1, 64), rng.randint(1, 2048)])
            try:
                piece = pool.alloc(size, accounted=rng.random() < 0.5)
            except KdbusError as exc:
                assert exc.errno == errno.EXFULL
                assert all(s.size < ((size + 7) & ~7) for s in pool.slices() if s.free)
            else:
                assert piece.offset not in busy
                busy[piece.offset] = piece
                if rng.random() < 0.7:
                    pool.publish(piece)
        else:
            piece = busy[rng.choice(sorted(busy))]
            if piece.bus_ref and (not piece.user_ref or rng.random() < 0.5):
                pool.release_bus_ref(piece)
            elif piece.user_ref:
                pool.free_user(piece.offset)
            if not piece.bus_ref and not piece.user_ref:
                del busy[piece.offset]
        check_invariants(pool, busy)


def test_close_while_a_store_still_reads_the_pool() -> None:
    # The session writes stores from a view of the pool on a thread of its own; the connection
    # may go first. The view stays readable; the mapping goes with it.
    pool = Pool(64 * 1024)
    piece = pool.alloc(8)
    pool.write(piece, b"12345678")
    view = memoryview(pool.buffer)[0:8]
    pool.close()
    assert len(bytes(view)) == 8
    view.release()
