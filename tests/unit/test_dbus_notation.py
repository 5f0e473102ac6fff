"""busctl's command-line notation for values, its verbose tree and its JSON form."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
from dbus_values import same, signatures, values_of
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbusfs.dbus import ObjectPath, SignatureError, Variant, parse_signature
from kdbusfs.dbus.notation import ArgumentError, format_arguments, format_tree, parse_arguments, to_json


@pytest.mark.parametrize(("signature", "words", "values"), [
    ("s", ["hello world"], ("hello world",)),
    ("iu", ["-5", "7"], (-5, 7)),
    ("t", ["0x10"], (16,)),
    ("bbb", ["true", "no", "1"], (True, False, True)),
    ("d", ["2.5"], (2.5,)),
    ("o", ["/a/b"], (ObjectPath("/a/b"),)),
    ("as", ["2", "a", "b"], (["a", "b"],)),
    ("aas", ["2", "0", "1", "x"], ([[], ["x"]],)),
    ("a{sv}", ["2", "name", "s", "Tim", "age", "u", "42"], ({"name": Variant("s", "Tim"),
                                                               "age": Variant("u", 42)},)),
    ("(is)v", ["1", "x", "ai", "2", "3", "4"], ((1, "x"), Variant("ai", [3, 4]))),
    ("", [], ()),
])
def test_parse_arguments(signature: str, words: list[str], values: tuple[Any, ...]) -> None:
    assert same(parse_arguments(signature, words), values)


@pytest.mark.parametrize(("signature", "words", "why"), [
    ("s", [], "too few arguments"),
    ("s", ["a", "b"], "1 arguments left over"),
    ("i", ["x"], "not an integer"),
    ("y", ["1.5"], "not an integer"),
    ("b", ["maybe"], "not a boolean"),
    ("d", ["x"], "not a number"),
    ("o", ["a/"], "not a valid object path"),
    ("as", ["-1"], "not an element count"),
    ("as", ["99", "a"], "not an element count"),
    ("v", ["ss", "a", "b"], "single complete type"),
    ("h", ["3"], "file descriptors"),
])
def test_bad_arguments_say_why(signature: str, words: list[str], why: str) -> None:
    with pytest.raises((ArgumentError, SignatureError), match=why):
        parse_arguments(signature, words)


def test_format_arguments_writes_what_parse_arguments_reads() -> None:
    values = ({"k": Variant("(sb)", ("a \"q\"\n", True))}, 2.5)
    text = format_arguments("a{sv}d", values)
    assert text == 'a{sv}d 1 "k" (sb) "a \\"q\\"\\n" true 2.5'
    assert format_arguments("", ()) == ""


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_round_trip_through_the_notation(data: st.DataObject) -> None:
    signature = data.draw(signatures)
    if "h" in signature:
        return
    values = tuple(data.draw(values_of(kind)) for kind in parse_signature(signature))
    text = format_arguments(signature, values)
    if not signature:
        assert text == ""
        return
    # The text is shell-like: quoted strings with C escapes; shlex undoes the quoting for the
    # strings that hold no escapes, which is what a user types.
    if "\\" not in text:
        words = shlex.split(text)
        assert same(parse_arguments(words[0], words[1:]), values)


def test_the_verbose_tree() -> None:
    assert format_tree("sa{sv}", ("hi", {"k": Variant("u", 5)}), "  ") == [
        '  MESSAGE "sa{sv}" {',
        '          STRING "hi";',
        '          ARRAY "{sv}" {',
        '                  DICT_ENTRY "sv" {',
        '                          STRING "k";',
        '                          VARIANT "u" {',
        '                                  UINT32 5;',
        '                          };',
        '                  };',
        '          };',
        '  };',
    ]


def test_json_form() -> None:
    document = to_json("a{sv}(ib)ay", ({"k": Variant("as", ["x"])}, (1, True), [1, 2]))
    assert document == {"type": "a{sv}(ib)ay",
                        "data": [{"k": {"type": "as", "data": ["x"]}}, [1, True], [1, 2]]}
    assert json.loads(json.dumps(document)) == document
