"""GVariant serialisation: the GVariant specification's examples byte for byte, the framing offset
sizes at their boundaries, round trips of generated values, and refusal of malformed data."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_values import same, typed_values
from hypothesis import given, settings

from kdbusfs.dbus import DecodeError, EncodeError, Variant, gvariant, parse_type
from kdbusfs.dbus.signature import MAX_CONTAINER_DEPTH


@pytest.mark.parametrize(("text", "value", "data"), [
    # The examples of the GVariant serialisation specification (also what GLib writes).
    ("s", "hello world", "68 65 6c 6c 6f 20 77 6f 72 6c 64 00"),
    ("ab", [True, False], "01 00"),
    ("(si)", ("foo", -1), "66 6f 6f 00 ff ff ff ff 04"),
    ("a(si)", [("hi", -2), ("bye", -1)],
     "68 69 00 00 fe ff ff ff 03 00 00 00 62 79 65 00 ff ff ff ff 04 09 15"),
    ("as", ["i", "can", "has", "strings?"],
     "69 00 63 61 6e 00 68 61 73 00 73 74 72 69 6e 67 73 3f 00 02 06 0a 13"),
    ("ay", [4, 5, 6, 7], "04 05 06 07"),
    ("ai", [4, 258], "04 00 00 00 02 01 00 00"),
    ("(yi)", (0x70, 0x60), "70 00 00 00 60 00 00 00"),
    ("(iy)", (0x60, 0x70), "60 00 00 00 70 00 00 00"),
    ("v", Variant("ai", [1, 2]), "01 00 00 00 02 00 00 00 00 61 69"),
    ("((ys)as)", ((1, "x"), ["a"]), "01 78 00 61 00 02 03"),
    ("a{si}", {"a key": 514}, "61 20 6b 65 79 00 00 00 02 02 00 00 06 0d"),
    ("as", [], ""),
    ("aas", [[]], "00"),
    ("(tv)", (5, Variant("s", "x")), "05 00 00 00 00 00 00 00 78 00 00 73"),
])
def test_known_serialisations(text: str, value: Any, data: str) -> None:
    kind = parse_type(text)
    assert gvariant.encode(kind, value) == bytes.fromhex(data)
    assert same(gvariant.decode(kind, bytes.fromhex(data)), value)


def test_big_endian_swaps_values_but_never_framing_offsets() -> None:
    kind = parse_type("a(si)")
    data = gvariant.encode(kind, [("hi", -2)], big_endian=True)
    # The struct's offset (03, the end of "hi") and the array's (09) stay little-endian.
    assert data == bytes.fromhex("68 69 00 00 ff ff ff fe 03 09")
    assert gvariant.decode(kind, data, big_endian=True) == [("hi", -2)]


@pytest.mark.parametrize(("size", "offset_size"), [
    (0, 0), (1, 1), (255, 1), (256, 2), (65535, 2), (65536, 4), (2**32 - 1, 4), (2**32, 8),
])
def test_offset_size_follows_the_container_size(size: int, offset_size: int) -> None:
    assert gvariant.offset_size(size) == offset_size


@pytest.mark.parametrize(("count", "offset_size"), [
    # count strings of 3 bytes ("ab\0"): 3n bytes of strings and n offsets must fit the offsets.
    (63, 1), (64, 2), (13107, 2), (13108, 4),
])
def test_an_offset_table_grows_when_it_pushes_the_container_past_a_size(count: int, offset_size: int) -> None:
    kind = parse_type("as")
    data = gvariant.encode(kind, ["ab"] * count)
    assert len(data) == 3 * count + offset_size * count
    assert gvariant.offset_size(len(data)) == offset_size
    assert gvariant.decode(kind, data) == ["ab"] * count


@settings(max_examples=300, deadline=None)
@given(typed_values)
def test_round_trip(typed: tuple[Any, Any]) -> None:
    kind, value = typed
    data = gvariant.encode(kind, value)
    if kind.fixed_size is not None:
        assert len(data) == kind.fixed_size
    assert same(gvariant.decode(kind, data), value)
    assert same(gvariant.decode(kind, gvariant.encode(kind, value, big_endian=True), big_endian=True), value)


def test_bodies_are_structs_and_an_empty_one_is_the_unit_type() -> None:
    assert gvariant.encode_body((), ()) == b"\0"
    assert gvariant.decode_body((), b"\0") == ()
    kinds = (parse_type("s"), parse_type("u"))
    assert gvariant.encode_body(kinds, ("x", 1)) == bytes.fromhex("78 00 00 00 01 00 00 00 02")
    with pytest.raises(EncodeError, match="2 values wanted"):
        gvariant.encode_body(kinds, ("x",))


@pytest.mark.parametrize(("text", "data", "why"), [
    ("s", "61 62", "without its NUL"),
    ("s", "61 00 62 00", "holds NUL"),
    ("s", "ff 00", "bad 's' value"),
    ("o", "61 00", "bad 'o' value"),
    ("b", "02", "boolean"),
    ("i", "01 00 00", "takes 4 bytes"),
    ("ai", "01 00 00 00 02", "array of 'i'"),
    ("as", "61 00 09", "out of bounds"),
    ("as", "61 00 62 00 05 02", "out of bounds"),
    ("(si)", "66 6f 6f 00 ff ff ff ff 09", "out of bounds"),
    ("(yy)", "01 02 03", "takes 2 bytes"),
    ("(sy)", "61 00 01 00 02", "trailing bytes"),
    ("v", "01 02", "without a type string"),
    ("v", "01 00 79 79", "variant type"),
])
def test_malformed_data_is_refused(text: str, data: str, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        gvariant.decode(parse_type(text), bytes.fromhex(data))


def _nested_variants(depth: int) -> Variant:
    value: Any = 1
    for _ in range(depth):
        value = Variant("v", value) if isinstance(value, Variant) else Variant("y", value)
    assert isinstance(value, Variant)
    return value


def test_variants_count_against_the_nesting_limit() -> None:
    kind = parse_type("v")
    deepest = _nested_variants(MAX_CONTAINER_DEPTH)
    assert gvariant.decode(kind, gvariant.encode(kind, deepest)) == deepest
    too_deep = _nested_variants(MAX_CONTAINER_DEPTH + 1)
    with pytest.raises(EncodeError, match="nested more than 64"):
        gvariant.encode(kind, too_deep)
    # Hand-made: 65 variants, each a variant of the next, around a byte.
    data = b"\1\0y"
    for _ in range(MAX_CONTAINER_DEPTH):
        data += b"\0v"
    with pytest.raises(DecodeError, match="nested more than 64"):
        gvariant.decode(kind, data)


@pytest.mark.parametrize(("text", "value", "why"), [
    ("y", 256, "out of range"), ("i", "1", "wants an integer"), ("b", 2, "true or false"),
    ("s", "a\0b", "NUL"), ("s", "\udc80", "surrogates"), ("o", "a", "object path"), ("g", "a{", "signature"),
    ("(ii)", (1,), "wants 2 values"), ("ai", {1: 2}, "wants a list"), ("v", 1, "wants a Variant"),
    ("d", "x", "wants a number"),
])
def test_values_that_do_not_fit_are_refused(text: str, value: Any, why: str) -> None:
    with pytest.raises(EncodeError, match=why):
        gvariant.encode(parse_type(text), value)
