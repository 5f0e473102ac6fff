"""kdbusfs.fuse.device (compiled): the session's reads and writes of /dev/fuse as direct calls."""

from __future__ import annotations

import errno
import os

import pytest

from kdbusfs.fuse.device import read_into, write_bytes


def test_a_read_fills_the_buffer_and_says_how_much() -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"request")
        buffer = bytearray(64)
        assert read_into(r, buffer) == 7
        assert bytes(buffer[:7]) == b"request"
    finally:
        os.close(r)
        os.close(w)


def test_nothing_to_read_raises_as_os_read_does() -> None:
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            read_into(r, bytearray(16))
    finally:
        os.close(r)
        os.close(w)


def test_a_read_into_a_read_only_buffer_is_refused() -> None:
    with pytest.raises(BufferError):
        read_into(0, b"immutable")


def test_a_write_succeeds_with_zero_and_fails_with_its_errno_not_an_exception() -> None:
    r, w = os.pipe()
    try:
        assert write_bytes(w, b"answer") == 0
        assert os.read(r, 16) == b"answer"
        os.close(r)
        r = -1
        assert write_bytes(w, b"lost") == errno.EPIPE
    finally:
        if r >= 0:
            os.close(r)
        os.close(w)
    assert write_bytes(w, b"closed") == errno.EBADF
