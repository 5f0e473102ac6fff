"""D-Bus values as text, the way busctl reads and writes them on a command line.

Arguments follow a signature: one word per basic value; an array is its element count, then the
elements; a variant is its signature, then its value; struct and dict entry members follow one
another. So `a{sv} 2 name s Tim age u 42` is a dict of two entries. `format_arguments` writes the
same notation (strings quoted), so a reply can be fed back as arguments; `format_tree` writes the
indented "MESSAGE "s" { STRING "x"; };" form, and `to_json` busctl's JSON form.

    >>> parse_arguments("as", ["2", "a", "b c"])
    (['a', 'b c'],)
    >>> format_arguments("a{sv}", ({"k": Variant("u", 7)},))
    'a{sv} 1 "k" u 7'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .basic import array_items
from .errors import EncodeError
from .names import ObjectPath, Signature, Variant
from .signature import DBusType, SignatureError, parse_signature, parse_type

_TRUE = {"1", "yes", "y", "true", "t", "on"}
_FALSE = {"0", "no", "n", "false", "f", "off"}
_NAMES = {
    "y": "BYTE", "b": "BOOLEAN", "n": "INT16", "q": "UINT16", "i": "INT32", "u": "UINT32", "x": "INT64",
    "t": "UINT64", "d": "DOUBLE", "s": "STRING", "o": "OBJECT_PATH", "g": "SIGNATURE", "h": "UNIX_FD",
}


class ArgumentError(ValueError):
    """Command-line words that do not spell values of the signature."""


class _Words:
    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self.position = 0

    def next(self, what: str) -> str:
        if self.position >= len(self.words):
            raise ArgumentError(f"too few arguments: {what} expected")
        self.position += 1
        return self.words[self.position - 1]


def _integer(word: str, kind: DBusType) -> int:
    try:
        return int(word, 0) if word.lower().startswith(("0x", "-0x")) else int(word, 10)
    except ValueError:
        raise ArgumentError(f"'{word}' is not an integer for '{kind.signature}'") from None


def _parse(kind: DBusType, words: _Words) -> Any:
    code = kind.code
    if code == "h":
        raise ArgumentError("passing file descriptors ('h') is not supported")
    if code == "b":
        word = words.next("a boolean").lower()
        if word not in _TRUE | _FALSE:
            raise ArgumentError(f"'{word}' is not a boolean (true/false, yes/no, 1/0, on/off)")
        return word in _TRUE
    if code == "d":
        word = words.next("a number")
        try:
            return float(word)
        except ValueError:
            raise ArgumentError(f"'{word}' is not a number") from None
    if kind.is_basic and kind.fixed_size is not None:
        return _integer(words.next(f"an integer ('{code}')"), kind)
    if kind.is_string_like:
        word = words.next(f"a '{code}' value")
        try:
            return ObjectPath(word) if code == "o" else Signature(word) if code == "g" else word
        except ValueError as exc:
            raise ArgumentError(str(exc)) from None
    if code == "v":
        signature = words.next("a variant's signature")
        try:
            held = parse_type(signature)
        except SignatureError as exc:
            raise ArgumentError(str(exc)) from None
        return Variant(signature, _parse(held, words))
    if code == "a":
        count_word = words.next(f"the element count of '{kind.signature}'")
        count = _integer(count_word, kind)
        if count < 0 or count > len(words.words):
            raise ArgumentError(f"'{count_word}' is not an element count for '{kind.signature}'")
        items = [_parse(kind.element, words) for _ in range(count)]
        return dict(items) if kind.is_dict else items
    return tuple(_parse(member, words) for member in kind.children)


def parse_arguments(signature: str, words: Sequence[str]) -> tuple[Any, ...]:
    """The values `words` spell for `signature`; ArgumentError (or SignatureError) if they do
    not, or if words are left over."""
    reader = _Words(words)
    values = tuple(_parse(kind, reader) for kind in parse_signature(signature))
    if reader.position != len(reader.words):
        raise ArgumentError(f"{len(reader.words) - reader.position} arguments left over after "
                            f"the values of '{signature}'")
    return values


def quote(text: str) -> str:
    """A C-style double-quoted string: quotes, backslashes and control characters escaped."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\x{ord(char):02x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _basic_text(kind: DBusType, value: Any) -> str:
    if kind.code == "b":
        return "true" if value else "false"
    if kind.is_string_like:
        return quote(str(value))
    return repr(float(value)) if kind.code == "d" else str(int(value))


def _words(kind: DBusType, value: Any) -> Iterator[str]:
    if kind.is_basic:
        yield _basic_text(kind, value)
    elif kind.code == "v":
        yield value.signature
        yield from _words(parse_type(value.signature), value.value)
    elif kind.code == "a":
        items = array_items(kind, value)
        yield str(len(items))
        for item in items:
            yield from _words(kind.element, item)
    else:
        for member, item in zip(kind.children, value, strict=True):
            yield from _words(member, item)


def format_arguments(signature: str, values: Sequence[Any]) -> str:
    """`values` in the command-line notation, after their signature (empty for no values)."""
    if not signature:
        return ""
    words = [signature]
    for kind, value in zip(parse_signature(signature), values, strict=True):
        words.extend(_words(kind, value))
    return " ".join(words)


def _tree(kind: DBusType, value: Any, indent: str) -> Iterator[str]:
    inner = indent + " " * 8
    if kind.is_basic:
        yield f"{indent}{_NAMES[kind.code]} {_basic_text(kind, value)};"
        return
    if kind.code == "v":
        held = parse_type(value.signature)
        yield f'{indent}VARIANT "{value.signature}" {{'
        yield from _tree(held, value.value, inner)
    elif kind.code == "a":
        yield f'{indent}ARRAY "{kind.element.signature}" {{'
        for item in array_items(kind, value):
            yield from _tree(kind.element, item, inner)
    else:
        label = "DICT_ENTRY" if kind.code == "{" else "STRUCT"
        yield f'{indent}{label} "{kind.signature[1:-1]}" {{'
        for member, item in zip(kind.children, value, strict=True):
            yield from _tree(member, item, inner)
    yield f"{indent}}};"


def format_tree(signature: str, values: Sequence[Any], indent: str = "") -> list[str]:
    """The body as busctl's verbose form prints it, one line per value or container end."""
    lines = [f'{indent}MESSAGE "{signature}" {{']
    for kind, value in zip(parse_signature(signature), values, strict=True):
        lines.extend(_tree(kind, value, indent + " " * 8))
    lines.append(f"{indent}}};")
    return lines


def _json(kind: DBusType, value: Any) -> Any:
    if kind.is_basic:
        return bool(value) if kind.code == "b" else value if kind.code != "d" else float(value)
    if kind.code == "v":
        return {"type": value.signature, "data": _json(parse_type(value.signature), value.value)}
    if kind.is_dict:
        key_type, value_type = kind.element.children
        return {str(key): _json(value_type, item) for key, item in array_items(kind, value)}
    if kind.code == "a":
        return [_json(kind.element, item) for item in value]
    return [_json(member, item) for member, item in zip(kind.children, value, strict=True)]


def to_json(signature: str, values: Sequence[Any]) -> dict[str, Any]:
    """The body as a JSON-ready object: {"type": signature, "data": [value, ...]}. Variants are
    {"type", "data"} objects, structs lists, dicts objects with their keys as strings."""
    try:
        return {"type": signature,
                "data": [_json(kind, value) for kind, value in zip(parse_signature(signature), values,
                                                                   strict=True)]}
    except (TypeError, AttributeError) as exc:
        raise EncodeError(f"values do not match '{signature}': {exc}") from None
