"""Hypothesis strategies for the D-Bus codec tests: random types, and values of a type."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from kdbusfs.dbus import ObjectPath, Signature, Variant, parse_type
from kdbusfs.dbus.signature import DBusType

_RANGES = {"y": (0, 255), "n": (-(2**15), 2**15 - 1), "q": (0, 2**16 - 1), "i": (-(2**31), 2**31 - 1),
           "u": (0, 2**32 - 1), "h": (0, 2**32 - 1), "x": (-(2**63), 2**63 - 1), "t": (0, 2**64 - 1)}
BASIC = "ybnqiuxtdhsog"
_ELEMENT = st.text(st.sampled_from("abcXYZ_019"), min_size=1, max_size=4)
object_paths = st.one_of(st.just("/"), st.lists(_ELEMENT, min_size=1, max_size=4).map(
    lambda parts: "/" + "/".join(parts)))
# Any Unicode but NUL and lone surrogates: what a D-Bus string may hold.
strings = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=40)


def _type_text(depth: int) -> st.SearchStrategy[str]:
    basic = st.sampled_from(BASIC)
    if depth <= 0:
        return basic
    inner = _type_text(depth - 1)
    return st.one_of(
        basic, st.just("v"),
        inner.map(lambda t: "a" + t),
        st.lists(inner, min_size=1, max_size=4).map(lambda ts: "(" + "".join(ts) + ")"),
        st.tuples(basic, inner).map(lambda kv: "a{" + kv[0] + kv[1] + "}"),
    )


types = _type_text(3).map(parse_type)
signatures = st.lists(_type_text(2), max_size=4).map("".join)


def values_of(kind: DBusType, depth: int = 0) -> st.SearchStrategy[Any]:
    code = kind.code
    if code in _RANGES:
        low, high = _RANGES[code]
        return st.integers(low, high)
    if code == "b":
        return st.booleans()
    if code == "d":
        return st.floats(allow_nan=False)
    if code == "s":
        return strings
    if code == "o":
        return object_paths.map(ObjectPath)
    if code == "g":
        return signatures.map(Signature)
    if code == "v":
        nested = ["(yv)", "a{sv}"] if depth < 3 else ["(yy)", "ay"]
        held = st.sampled_from(["s", "u", "as", *nested])
        return held.flatmap(lambda text: _variants(text, depth + 1))
    if code == "a":
        if kind.element.code == "y":
            return st.binary(max_size=8)
        if kind.is_dict:
            key, value = kind.element.children
            return st.dictionaries(values_of(key, depth + 1), values_of(value, depth + 1), max_size=4)
        return st.lists(values_of(kind.element, depth + 1), max_size=4)
    return st.tuples(*(values_of(member, depth + 1) for member in kind.children))


def _variants(signature: str, depth: int) -> st.SearchStrategy[Variant]:
    return values_of(parse_type(signature), depth).map(lambda value: Variant(signature, value))


typed_values = types.flatmap(lambda kind: st.tuples(st.just(kind), values_of(kind)))


def same(left: Any, right: Any) -> bool:
    """Equality that counts -0.0 and 0.0 as different (a codec must keep the sign)."""
    if isinstance(left, float) and isinstance(right, float):
        return left == right and math.copysign(1, left) == math.copysign(1, right)
    if isinstance(left, Variant) and isinstance(right, Variant):
        return left.signature == right.signature and same(left.value, right.value)
    if isinstance(left, bytes) or isinstance(right, bytes):
        # Arrays of bytes decode as bytes, and are given as bytes or as lists of ints.
        comparable = isinstance(left, bytes | list) and isinstance(right, bytes | list)
        return comparable and list(left) == list(right)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return type(left) is type(right) and len(left) == len(right) and all(
            same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(left[key], right[key]) for key in left)
    return bool(left == right) and type(left) is type(right)
