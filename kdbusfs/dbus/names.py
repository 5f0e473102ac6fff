"""The D-Bus specification's rules for names and paths, and the value types whose text must obey
them (object paths and signatures are strings on the wire, but not any string)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .signature import SignatureError, parse_signature, parse_type

MAX_NAME_LENGTH = 255
# Names recur in every message (the peers', their interfaces and members): each rule keeps its
# verdicts on this many texts of at most MAX_NAME_LENGTH characters (a longer object path is checked
# every time rather than held), so a busy bus checks a name once instead of on every message.
NAMES_CACHED = 4096

_ELEMENT = r"[A-Za-z_][A-Za-z0-9_]*"
_INTERFACE = re.compile(rf"{_ELEMENT}(?:\.{_ELEMENT})+")
_MEMBER = re.compile(_ELEMENT)
_WELL_KNOWN = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*(?:\.[A-Za-z_-][A-Za-z0-9_-]*)+")
_UNIQUE = re.compile(r":[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+")
_PATH = re.compile(r"/|(?:/[A-Za-z0-9_]+)+")


def _cached(rule: Callable[[str], bool]) -> Callable[[str], bool]:
    cached = functools.lru_cache(maxsize=NAMES_CACHED)(rule)

    @functools.wraps(rule)
    def check(text: str) -> bool:
        return cached(text) if len(text) <= MAX_NAME_LENGTH else rule(text)

    return check


def _fits(pattern: re.Pattern[str], text: str) -> bool:
    return len(text) <= MAX_NAME_LENGTH and pattern.fullmatch(text) is not None


@_cached
def is_object_path(text: str) -> bool:
    """"/" or "/"-separated elements of [A-Za-z0-9_], no empty element, no trailing "/"."""
    return _PATH.fullmatch(text) is not None


@_cached
def is_interface_name(text: str) -> bool:
    """Two or more "."-separated elements, none starting with a digit; at most 255 bytes."""
    return _fits(_INTERFACE, text)


def is_error_name(text: str) -> bool:
    return is_interface_name(text)


@_cached
def is_member_name(text: str) -> bool:
    return _fits(_MEMBER, text)


@_cached
def is_unique_name(text: str) -> bool:
    return _fits(_UNIQUE, text)


@_cached
def is_well_known_name(text: str) -> bool:
    return _fits(_WELL_KNOWN, text)


@_cached
def is_bus_name(text: str) -> bool:
    return is_unique_name(text) or is_well_known_name(text)


def is_signature(text: str) -> bool:
    try:
        parse_signature(text)
    except SignatureError:
        return False
    return True


class ObjectPath(str):
    """An OBJECT_PATH value: a str that is a valid object path."""

    __slots__ = ()

    def __new__(cls, text: str) -> ObjectPath:
        if not is_object_path(text):
            raise ValueError(f"'{text}' is not a valid object path")
        return super().__new__(cls, text)


class Signature(str):
    """A SIGNATURE value: a str that is a valid signature."""

    __slots__ = ()

    def __new__(cls, text: str) -> Signature:
        parse_signature(text)
        return super().__new__(cls, text)


@dataclass(frozen=True, slots=True)
class Variant:
    """A VARIANT value: the single complete type it holds, and the value."""

    signature: str
    value: Any

    def __post_init__(self) -> None:
        parse_type(self.signature)
