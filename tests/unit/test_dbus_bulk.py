"""Arrays of numbers marshalled at once give the bytes and values (and refusals) of marshalling them
one by one, in both formats and byte orders; the element bound counts only what is decoded one by
one."""

from __future__ import annotations

import enum
import struct
from typing import Any

import pytest

from kdbusfs.dbus import dbus1, gvariant, parse_signature, parse_type
from kdbusfs.dbus.basic import pack_number
from kdbusfs.dbus.errors import DecodeError, EncodeError, TooManyElements

EDGES: dict[str, list[Any]] = {
    "n": [-(2**15), -1, 0, 2**15 - 1], "q": [0, 1, 2**16 - 1], "i": [-(2**31), 0, 2**31 - 1],
    "u": [0, 2**32 - 1], "h": [0, 3], "x": [-(2**63), 2**63 - 1], "t": [0, 2**64 - 1],
    "d": [0.0, -1.5, 1e308, 3],
}
ORDERS = pytest.mark.parametrize("big_endian", [False, True])


def _one_by_one(code: str, values: list[Any], big_endian: bool) -> bytes:
    return b"".join(pack_number(">" if big_endian else "<", code, value) for value in values)


@ORDERS
@pytest.mark.parametrize("code", sorted(EDGES))
def test_arrays_of_numbers_are_their_elements_back_to_back(code: str, big_endian: bool) -> None:
    values = EDGES[code]
    elements = _one_by_one(code, values, big_endian)
    kind = parse_type("a" + code)
    assert gvariant.encode(kind, values, big_endian=big_endian) == elements
    assert gvariant.decode(kind, elements, big_endian=big_endian) == [float(v) if code == "d" else v
                                                                      for v in values]
    body = dbus1.encode_values([kind], [values], big_endian=big_endian)
    assert body[-len(elements):] == elements
    assert struct.unpack((">" if big_endian else "<") + "I", body[:4])[0] == len(elements)
    assert dbus1.decode_values([kind], body, big_endian=big_endian) == (gvariant.decode(
        kind, elements, big_endian=big_endian),)


class Small(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize(("signature", "values", "accepted"), [
    ("ai", [True, 2], False),          # booleans are no integers to D-Bus
    ("ai", [Small.ONE, 2], True),      # integer subclasses are, one by one
    ("ai", [2**31], False),            # out of range
    ("au", [-1], False),
    ("ai", [1.0], False),              # floats are no integers
    ("ad", [1, 2.5], True),            # integers are numbers
    ("ad", [True], False),
])
def test_values_packing_at_once_refuses_take_the_one_by_one_path(signature: str, values: list[Any],
                                                                 accepted: bool) -> None:
    kind = parse_type(signature)
    for encode in (lambda: gvariant.encode(kind, values), lambda: dbus1.encode_values([kind], [values])):
        if accepted:
            encode()
        else:
            with pytest.raises(EncodeError):
                encode()


def test_a_truncated_array_of_numbers_is_refused() -> None:
    with pytest.raises(DecodeError):
        gvariant.decode(parse_type("ai"), bytes(6))
    with pytest.raises(DecodeError):
        dbus1.decode_values([parse_type("ai")], struct.pack("<I", 6) + bytes(6))


def test_the_element_bound_counts_elements_decoded_one_by_one_only() -> None:
    types = parse_signature("asat")
    values = (["a"] * 10, list(range(1000)))
    g = gvariant.encode_body(types, values)
    d = dbus1.encode_values(types, values)
    assert gvariant.decode_body(types, g, max_elements=10) == tuple(values)
    assert dbus1.decode_values(types, d, max_elements=10) == tuple(values)
    with pytest.raises(TooManyElements):
        gvariant.decode_body(types, g, max_elements=9)
    with pytest.raises(TooManyElements):
        dbus1.decode_values(types, d, max_elements=9)
