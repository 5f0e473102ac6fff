"""Signatures: the D-Bus grammar, its limits, and the layout facts of both encodings."""

from __future__ import annotations

import re

import pytest

from kdbusfs.dbus import ObjectPath, Signature, SignatureError, Variant, parse_signature, parse_type
from kdbusfs.dbus.names import (
    MAX_NAME_LENGTH,
    NAMES_CACHED,
    is_bus_name,
    is_error_name,
    is_interface_name,
    is_member_name,
    is_object_path,
    is_unique_name,
    is_well_known_name,
)
from kdbusfs.dbus.signature import body_type


def test_a_signature_is_a_sequence_of_complete_types() -> None:
    assert [t.signature for t in parse_signature("sa{sv}(ia(ss))v")] == ["s", "a{sv}", "(ia(ss))", "v"]
    assert parse_signature("") == ()
    dict_type = parse_type("a{sv}")
    assert dict_type.is_dict and dict_type.element.code == "{"
    assert [member.code for member in dict_type.element.children] == ["s", "v"]


@pytest.mark.parametrize(("text", "why"), [
    ("a", "ends in the middle"),
    ("(i", "not closed"),
    ("()", "empty structs"),
    ("i)", "unexpected ')'"),
    ("{sv}", "element of an array"),
    ("a{vs}", "key must be a basic type"),
    ("a{sss}", "exactly a key and a value"),
    ("a{s}", "exactly a key and a value"),
    ("m", "unknown type code"),
    ("é", "not ASCII"),
])
def test_invalid_signatures_say_why(text: str, why: str) -> None:
    with pytest.raises(SignatureError, match=re.escape(why)):
        parse_signature(text)


def test_the_specification_limits() -> None:
    parse_signature("y" * 255)
    with pytest.raises(SignatureError, match="at most 255"):
        parse_signature("y" * 256)
    parse_type("a" * 32 + "y")
    with pytest.raises(SignatureError, match="32 nested arrays"):
        parse_type("a" * 33 + "y")
    parse_type("(" * 32 + "y" + ")" * 32)
    with pytest.raises(SignatureError, match="32 nested structs"):
        parse_type("(" * 33 + "y" + ")" * 33)
    # Dict entries count as structs.
    parse_type("a{sa{sa{sy}}}")
    with pytest.raises(SignatureError, match="32 nested structs"):
        parse_type("(" * 32 + "a{sy}" + ")" * 32)


def test_parse_type_wants_exactly_one_complete_type() -> None:
    with pytest.raises(SignatureError, match="single complete type"):
        parse_type("ss")
    with pytest.raises(SignatureError, match="single complete type"):
        parse_type("")


@pytest.mark.parametrize(("text", "alignment", "fixed_size", "dbus1_alignment"), [
    ("y", 1, 1, 1), ("b", 1, 1, 4), ("n", 2, 2, 2), ("i", 4, 4, 4), ("h", 4, 4, 4), ("t", 8, 8, 8),
    ("d", 8, 8, 8), ("s", 1, None, 4), ("o", 1, None, 4), ("g", 1, None, 1), ("v", 8, None, 1),
    ("ai", 4, None, 4), ("(yi)", 4, 8, 8), ("(iy)", 4, 8, 8), ("(ty)", 8, 16, 8), ("(yy)", 1, 2, 8),
    ("(ys)", 1, None, 8), ("a{yt}", 8, None, 4), ("((yy)i)", 4, 8, 8),
])
def test_layout_facts(text: str, alignment: int, fixed_size: int | None, dbus1_alignment: int) -> None:
    kind = parse_type(text)
    assert (kind.alignment, kind.fixed_size, kind.dbus1_alignment) == (alignment, fixed_size, dbus1_alignment)


def test_an_empty_body_is_the_unit_type() -> None:
    unit = body_type("")
    assert unit.signature == "()" and unit.fixed_size == 1 and unit.children == ()


@pytest.mark.parametrize(("text", "valid"), [
    ("/", True), ("/a", True), ("/a/b_c/D9", True), ("", False), ("a", False), ("/a/", False),
    ("//a", False), ("/a-b", False), ("/a.b", False),
])
def test_object_paths(text: str, valid: bool) -> None:
    assert is_object_path(text) is valid


def test_names() -> None:
    assert is_interface_name("org.example.Echo") and not is_interface_name("org")
    assert not is_interface_name("org.9x") and not is_interface_name("org..x")
    assert not is_interface_name("o-g.x")
    assert is_interface_name("a." + "b" * 253) and not is_interface_name("a." + "b" * 254)
    assert is_error_name("org.freedesktop.DBus.Error.Failed")
    assert is_member_name("Ping") and is_member_name("_x9") and not is_member_name("9x")
    assert not is_member_name("a.b") and not is_member_name("")
    assert is_unique_name(":1.42") and not is_unique_name(":1") and not is_unique_name("1.2")
    assert is_well_known_name("org.example-x.Y") and not is_well_known_name(":1.2")
    # Only the elements of unique names may start with a digit.
    assert not is_well_known_name("org.3x") and is_unique_name(":1.3x")
    assert not is_well_known_name("org.example.") and is_bus_name(":1.5") and is_bus_name("a.b")


def test_verdicts_are_cached_and_long_texts_are_checked_each_time() -> None:
    # The same verdicts asked again (from the cache) and past the cache's bound.
    for _ in range(2):
        for i in range(NAMES_CACHED + 10):
            assert is_bus_name(f":1.{i}") and not is_bus_name(f"{i}")
    long_path = "/" + "a" * MAX_NAME_LENGTH * 4
    for _ in range(2):
        assert is_object_path(long_path) and not is_object_path(long_path + "/")
    assert not is_member_name("m" * (MAX_NAME_LENGTH + 1))


def test_value_types_check_their_text() -> None:
    assert ObjectPath("/a") == "/a"
    with pytest.raises(ValueError, match="object path"):
        ObjectPath("a/")
    assert Signature("a{sv}") == "a{sv}"
    with pytest.raises(SignatureError):
        Signature("a{")
    with pytest.raises(SignatureError):
        Variant("ss", ("a", "b"))
