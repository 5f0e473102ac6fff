"""dbus1 marshalling: the specification's layout rules byte for byte, its limits, round trips, and
refusal of malformed data."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from dbus_values import same, typed_values
from hypothesis import given, settings

from kdbusfs.dbus import DecodeError, EncodeError, Signature, Variant, dbus1, parse_signature
from kdbusfs.dbus.dbus1 import MAX_ARRAY_LENGTH


@pytest.mark.parametrize(("signature", "values", "data"), [
    # A string is its length, its bytes and a NUL; the next u32 is 4-aligned.
    ("su", ("hi", 7), "02000000 686900 00 07000000"),
    # Booleans are 32-bit; a signature's length is one byte.
    ("bg", (True, Signature("ai")), "01000000 02 616900"),
    # An array's length counts the elements, not the padding to their alignment (even when empty).
    ("at", ([],), "00000000 00000000"),
    ("yat", (1, [2]), "01 000000 08000000 0200000000000000"),
    # Structs and dict entries start 8-aligned.
    ("y(y)", (1, (2,)), "01 00000000000000 02"),
    ("a{yy}", ({1: 2},), "02000000 00000000 01 02"),
    # A variant is a signature, then the value aligned as its type wants.
    ("v", (Variant("u", 5),), "01 7500 00 05000000"),
    ("ad", ([1.5],), "08000000 00000000 000000000000f83f"),
])
def test_known_marshalling(signature: str, values: tuple[Any, ...], data: str) -> None:
    types = parse_signature(signature)
    assert dbus1.encode_values(types, values) == bytes.fromhex(data.replace(" ", ""))
    assert same(dbus1.decode_values(types, bytes.fromhex(data.replace(" ", ""))), values)


def test_big_endian() -> None:
    types = parse_signature("su")
    data = dbus1.encode_values(types, ("hi", 7), big_endian=True)
    assert data == bytes.fromhex("00000002 686900 00 00000007".replace(" ", ""))
    assert dbus1.decode_values(types, data, big_endian=True) == ("hi", 7)


@settings(max_examples=300, deadline=None)
@given(typed_values)
def test_round_trip(typed: tuple[Any, Any]) -> None:
    kind, value = typed
    for big_endian in (False, True):
        data = dbus1.encode_values((kind,), (value,), big_endian=big_endian)
        assert same(dbus1.decode_values((kind,), data, big_endian=big_endian), (value,))


@pytest.mark.parametrize(("signature", "data", "why"), [
    ("u", "010000", "data ends"),
    ("b", "02000000", "boolean 2"),
    ("yu", "01 ff0000 01000000", "non-zero padding"),
    ("s", "02000000 6869 01", "without its NUL"),
    ("s", "02000000 6800 00", "holds NUL"),
    ("ay", "05000000 0102", "runs past the data"),
    ("a(yy)", "01000000 00000000 0102", "runs past the array"),
    ("v", "02 7575 00 00000000", "variant type"),
    ("u", "01000000 00", "1 bytes after the last value"),
])
def test_malformed_data_is_refused(signature: str, data: str, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        dbus1.decode_values(parse_signature(signature), bytes.fromhex(data.replace(" ", "")))


def test_arrays_are_at_most_64_mib() -> None:
    types = parse_signature("ay")
    # The length alone is refused: nothing that large is read.
    with pytest.raises(DecodeError, match="D-Bus allows 67108864"):
        dbus1.decode_values(types, struct.pack("<I", MAX_ARRAY_LENGTH + 1))
    with pytest.raises(EncodeError, match="D-Bus allows 67108864"):
        dbus1.encode_values(parse_signature("at"), ([0] * (MAX_ARRAY_LENGTH // 8 + 1),))


def test_the_value_count_must_match_the_signature() -> None:
    with pytest.raises(EncodeError, match="2 values wanted"):
        dbus1.encode_values(parse_signature("ss"), ("x",))
