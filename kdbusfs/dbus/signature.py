"""D-Bus type signatures, parsed into type trees with the facts both wire formats need.

A signature is a sequence of complete types ("sa{sv}" is STRING, ARRAY of DICT_ENTRY). Each
`DBusType` knows its alignment and size in the GVariant encoding (which fixes the size of booleans
at one byte and lets fixed-size structs be laid out without framing) and its alignment in the dbus1
encoding. Limits are the D-Bus specification's: 255 bytes per signature, at most 32 nested arrays
and 32 nested structs in one signature, and (as libdbus enforces) at most 64 nested containers in
a value once variants are counted.

    >>> [t.signature for t in parse_signature("sa{sv}")]
    ['s', 'a{sv}']
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

MAX_SIGNATURE_LENGTH = 255
MAX_ARRAY_NESTING = 32
MAX_STRUCT_NESTING = 32
# Containers (arrays, structs, dict entries, variants) nested in one value, variants included.
MAX_CONTAINER_DEPTH = 64

# Fixed-size basic types: (GVariant size, dbus1 alignment). GVariant aligns each to its size.
_FIXED: dict[str, tuple[int, int]] = {
    "y": (1, 1), "b": (1, 4), "n": (2, 2), "q": (2, 2), "i": (4, 4), "u": (4, 4), "h": (4, 4),
    "x": (8, 8), "t": (8, 8), "d": (8, 8),
}
# Strings: GVariant alignment 1; dbus1 aligns the length prefix (a byte for signatures).
_STRINGS: dict[str, int] = {"s": 4, "o": 4, "g": 1}
BASIC_CODES = frozenset(_FIXED) | frozenset(_STRINGS)


class SignatureError(ValueError):
    """A signature that is not valid D-Bus."""


@dataclass(frozen=True, slots=True)
class DBusType:
    """One complete type. `code` is the type code ('a' for arrays, '(' for structs, '{' for dict
    entries); `children` the element type of an array, the members of a struct or dict entry."""

    code: str
    children: tuple[DBusType, ...]
    signature: str
    # GVariant: alignment, and the size of a fixed-size type (None for variable-size ones).
    alignment: int
    fixed_size: int | None
    # dbus1: alignment.
    dbus1_alignment: int

    @property
    def is_basic(self) -> bool:
        return self.code in BASIC_CODES

    @property
    def is_string_like(self) -> bool:
        return self.code in _STRINGS

    @property
    def element(self) -> DBusType:
        """An array's element type."""
        assert self.code == "a"
        return self.children[0]

    @property
    def is_dict(self) -> bool:
        """An array of dict entries, shown and built as a mapping."""
        return self.code == "a" and self.children[0].code == "{"

    def __str__(self) -> str:
        return self.signature


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def basic_type(code: str) -> DBusType:
    if code in _FIXED:
        size, dbus1_alignment = _FIXED[code]
        return DBusType(code, (), code, size, size, dbus1_alignment)
    if code in _STRINGS:
        return DBusType(code, (), code, 1, None, _STRINGS[code])
    raise SignatureError(f"'{code}' is not a basic type code")


def variant_type() -> DBusType:
    return DBusType("v", (), "v", 8, None, 1)


def array_type(element: DBusType) -> DBusType:
    return DBusType("a", (element,), "a" + element.signature, element.alignment, None, 4)


def struct_type(members: tuple[DBusType, ...], dict_entry: bool = False) -> DBusType:
    """A struct, or a dict entry (laid out as the struct of its key and value). Without members it
    is GVariant's unit type, which D-Bus allows only as an empty message body."""
    alignment = max((member.alignment for member in members), default=1)
    fixed_size: int | None = None
    if all(member.fixed_size is not None for member in members):
        end = 0
        for member in members:
            assert member.fixed_size is not None
            end = _align(end, member.alignment) + member.fixed_size
        # Fixed-size structs are padded to their alignment; the unit type takes one byte.
        fixed_size = _align(end, alignment) if members else 1
    inner = "".join(member.signature for member in members)
    text = "{" + inner + "}" if dict_entry else "(" + inner + ")"
    return DBusType("{" if dict_entry else "(", members, text, alignment, fixed_size, 8)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> SignatureError:
        return SignatureError(f"signature '{self.text}': {why}")

    def complete_type(self, arrays: int, structs: int) -> DBusType:
        if self.pos >= len(self.text):
            raise self.fail("ends in the middle of a type")
        code = self.text[self.pos]
        self.pos += 1
        if code in BASIC_CODES:
            return basic_type(code)
        if code == "v":
            return variant_type()
        if code == "a":
            if arrays >= MAX_ARRAY_NESTING:
                raise self.fail(f"more than {MAX_ARRAY_NESTING} nested arrays")
            if self.pos < len(self.text) and self.text[self.pos] == "{":
                self.pos += 1
                return array_type(self.dict_entry(arrays + 1, structs))
            return array_type(self.complete_type(arrays + 1, structs))
        if code == "(":
            if structs >= MAX_STRUCT_NESTING:
                raise self.fail(f"more than {MAX_STRUCT_NESTING} nested structs")
            members: list[DBusType] = []
            while self.pos < len(self.text) and self.text[self.pos] != ")":
                members.append(self.complete_type(arrays, structs + 1))
            if self.pos >= len(self.text):
                raise self.fail("a struct is not closed")
            self.pos += 1
            if not members:
                raise self.fail("empty structs are not allowed")
            return struct_type(tuple(members))
        if code == "{":
            raise self.fail("a dict entry must be the element of an array")
        if code in ")}":
            raise self.fail(f"unexpected '{code}'")
        raise self.fail(f"unknown type code '{code}'")

    def dict_entry(self, arrays: int, structs: int) -> DBusType:
        if structs >= MAX_STRUCT_NESTING:
            raise self.fail(f"more than {MAX_STRUCT_NESTING} nested structs")
        key = self.complete_type(arrays, structs + 1)
        if not key.is_basic:
            raise self.fail("a dict key must be a basic type")
        if self.text[self.pos : self.pos + 1] == "}":
            raise self.fail("a dict entry holds exactly a key and a value")
        value = self.complete_type(arrays, structs + 1)
        if self.pos >= len(self.text) or self.text[self.pos] != "}":
            raise self.fail("a dict entry holds exactly a key and a value")
        self.pos += 1
        return struct_type((key, value), dict_entry=True)


def _check_text(text: str) -> None:
    if len(text) > MAX_SIGNATURE_LENGTH:
        raise SignatureError(f"signature of {len(text)} characters; at most {MAX_SIGNATURE_LENGTH}")
    if not text.isascii():
        raise SignatureError(f"signature '{text}': not ASCII")


@functools.lru_cache(maxsize=1024)
def parse_signature(text: str) -> tuple[DBusType, ...]:
    """The complete types of a signature (empty for ""). Types are immutable, and a message's few
    signatures (its body's, each header field's) recur in every message: parsed once each, kept in
    a bounded cache (an invalid signature raises and is not kept)."""
    _check_text(text)
    parser = _Parser(text)
    types = []
    while parser.pos < len(text):
        types.append(parser.complete_type(0, 0))
    return tuple(types)


def parse_type(text: str) -> DBusType:
    """The one complete type `text` spells (a variant's signature)."""
    types = parse_signature(text)
    if len(types) != 1:
        raise SignatureError(f"signature '{text}': want a single complete type, got {len(types)}")
    return types[0]


def body_type(text: str) -> DBusType:
    """The struct a message body of signature `text` is (the unit type for an empty body)."""
    return struct_type(parse_signature(text))
