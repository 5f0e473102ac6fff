"""What both wire formats share about basic values: the numbers' layouts, which Python values a
type accepts, and the rules strings, object paths and signatures must keep."""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import DecodeError, EncodeError
from .names import ObjectPath, Signature, Variant
from .signature import MAX_CONTAINER_DEPTH, DBusType, SignatureError

# struct formats of the numeric types (booleans differ between the formats).
NUMBER_FORMATS = {"y": "B", "n": "h", "q": "H", "i": "i", "u": "I", "h": "I", "x": "q", "t": "Q", "d": "d"}


# Numbers whose arrays are (un)marshalled in one call, with no per-element Python work: their
# layout is the same in both formats, an element's size equals its alignment (so elements touch) and
# any bit pattern is valid. Booleans (one format checks 0/1 in four bytes, the other in one) and
# bytes (an 'ay' is bytes already) are not among them.
BULK_CODES = frozenset("nqiuhxtd")
# array.array codes of those sizes (the C type sizes Linux's ABIs give: short 2, int 4, long long 8).
_ARRAY_CODES = {"n": "h", "q": "H", "i": "i", "u": "I", "h": "I", "x": "q", "t": "Q", "d": "d"}
_SWAP = {"<": sys.byteorder != "little", ">": sys.byteorder != "big"}
# The Python types an array of numbers may hold to be packed at once; others (bool, IntEnum,
# out-of-range values) take pack_number's path, which accepts or refuses them one by one.
_PACKABLE = {"d": frozenset((int, float))}
_INTEGERS = frozenset((int,))


def pack_numbers(order: str, code: str, items: Sequence[Any]) -> bytes | None:
    """An array of numbers marshalled at once, or None if some item needs pack_number."""
    if not set(map(type, items)) <= _PACKABLE.get(code, _INTEGERS):
        return None
    try:
        packed = array.array(_ARRAY_CODES[code], items)
    except (OverflowError, TypeError):
        return None
    if _SWAP[order]:
        packed.byteswap()
    return packed.tobytes()


def unpack_numbers(order: str, code: str, data: bytes | memoryview) -> list[Any]:
    """Every number in `data`, whose size is a multiple of the element's."""
    unpacked = array.array(_ARRAY_CODES[code])
    unpacked.frombytes(data)
    if _SWAP[order]:
        unpacked.byteswap()
    return unpacked.tolist()


def pack_number(order: str, code: str, value: Any) -> bytes:
    if code == "d":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise EncodeError(f"'d' wants a number, not {value!r}")
        return struct.pack(order + "d", float(value))
    if not isinstance(value, int) or isinstance(value, bool):
        raise EncodeError(f"'{code}' wants an integer, not {value!r}")
    try:
        return struct.pack(order + NUMBER_FORMATS[code], value)
    except struct.error:
        raise EncodeError(f"{value} is out of range for '{code}'") from None


def unpack_number(order: str, code: str, data: bytes | memoryview, offset: int = 0) -> int | float:
    value: int | float = struct.unpack_from(order + NUMBER_FORMATS[code], data, offset)[0]
    return value


def boolean(value: Any) -> bool:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise EncodeError(f"'b' wants true or false, not {value!r}")


def text_bytes(code: str, value: Any) -> bytes:
    """The UTF-8 bytes of a STRING, OBJECT_PATH or SIGNATURE value, after checking it."""
    if not isinstance(value, str):
        raise EncodeError(f"'{code}' wants a string, not {value!r}")
    if "\0" in value:
        raise EncodeError(f"'{code}' values cannot hold NUL")
    try:
        if code == "o":
            ObjectPath(value)
        elif code == "g":
            Signature(value)
        return value.encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise EncodeError(str(exc)) from None


def text_value(code: str, raw: bytes) -> str:
    """A decoded STRING (valid UTF-8 without NUL, as D-Bus requires), ObjectPath or Signature."""
    if b"\0" in raw:
        raise DecodeError(f"'{code}' value holds NUL")
    try:
        text = raw.decode("utf-8")
        if code == "o":
            return ObjectPath(text)
        if code == "g":
            return Signature(text)
        return text
    except (ValueError, SignatureError) as exc:
        raise DecodeError(f"bad '{code}' value: {exc}") from None


def check_depth(depth: int, error: type[ValueError]) -> None:
    if depth > MAX_CONTAINER_DEPTH:
        raise error(f"containers nested more than {MAX_CONTAINER_DEPTH} deep")


def array_items(array: DBusType, value: Any) -> Sequence[Any]:
    """The elements of an ARRAY value: a sequence, a mapping for arrays of dict entries, bytes for
    arrays of bytes."""
    if array.is_dict and isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, list | tuple):
        return value
    if array.element.code == "y" and isinstance(value, bytes | bytearray):
        return value
    raise EncodeError(f"'{array.signature}' wants a {'dict' if array.is_dict else 'list'}, not {value!r}")


def struct_members(struct_type: DBusType, value: Any) -> Sequence[Any]:
    if not isinstance(value, list | tuple) or len(value) != len(struct_type.children):
        wanted = len(struct_type.children)
        raise EncodeError(f"'{struct_type.signature}' wants {wanted} values, not {value!r}")
    return value


def variant(value: Any) -> Variant:
    if not isinstance(value, Variant):
        raise EncodeError(f"'v' wants a Variant, not {value!r}")
    return value


def byte_array(items: Sequence[Any]) -> bytes | None:
    """An 'ay' value's bytes when it is given as bytes (or None: marshal it element by element)."""
    return bytes(items) if isinstance(items, bytes | bytearray) else None


def array_value(array: DBusType, items: list[Any]) -> list[Any] | dict[Any, Any]:
    """A decoded array: a dict for arrays of dict entries, else a list (arrays of bytes are decoded
    as bytes before they get here)."""
    return dict(items) if array.is_dict else items
