"""D-Bus match rules (AddMatch strings): parsing, exact matching, and the kdbus bloom filters behind
them; no I/O.

The bus selects broadcasts with bloom filters only (KDBUS-SPEC.md §7): a signal carries a filter its
sender computed, a match carries a mask, and the bus delivers when the filter has every bit of the
mask. The elements are sd-bus's convention ("interface:org.example.Foo", "path-slash-prefix:/a",
"arg0:x", ...; see kdbusfs/client/bloom.py), so masks made here select signals of native kdbus-era
peers and filters made here are selected by their matches. A bloom can let through signals it
should not (hash collisions, elements it cannot express), so each delivered signal is checked
against the client's rules once more (`MatchRule.matches`). Masks leave out what the bloom cannot
express exactly: argNpath (an argument that is a prefix of the rule's path matches too), arguments
past the first (sd-bus hashed only the leading string arguments), senders (kdbus's ID and NAME
rules do that).

    rule = parse("type='signal',interface='org.example.Clock',arg0namespace='org.example'")
    mask = signal_mask(rule, size=64, n_hash=8)
    assert rule.matches(message)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import limits
from ..client.bloom import BloomFilter
from ..dbus import DBusMessage, MessageType, parse_signature
from ..dbus.names import is_bus_name, is_interface_name, is_member_name, is_object_path

# D-Bus allows argument matches on the first 64 arguments.
MAX_ARG = 63
DRIVER = "org.freedesktop.DBus"
DRIVER_PATH = "/org/freedesktop/DBus"

_TYPES = {"signal": MessageType.SIGNAL, "method_call": MessageType.METHOD_CALL,
          "method_return": MessageType.METHOD_RETURN, "error": MessageType.ERROR}


class InvalidRule(ValueError):
    """The string is no valid match rule (org.freedesktop.DBus.Error.MatchRuleInvalid)."""


@dataclass(frozen=True, slots=True)
class MatchRule:
    # As the client wrote it; rules are equal when they say the same (RemoveMatch finds it so).
    text: str = field(compare=False)
    type: MessageType | None = None
    sender: str | None = None
    interface: str | None = None
    member: str | None = None
    path: str | None = None
    path_namespace: str | None = None
    destination: str | None = None
    # argN='value' (string arguments), argNpath='value' (string or object path arguments).
    args: dict[int, str] = field(default_factory=dict)
    arg_paths: dict[int, str] = field(default_factory=dict)
    arg0_namespace: str | None = None
    eavesdrop: bool = False

    def matches(self, message: DBusMessage) -> bool:
        """The exact test of the D-Bus specification."""
        if self.type is not None and message.type != self.type:
            return False
        if self.sender is not None and message.sender != self.sender and (
                self.sender.startswith(":") or DRIVER in (self.sender, message.sender)):
            # A peer's signal for a well-known sender was checked by the bus (kdbus's NAME rule)
            # when it was sent; the driver's signals are made here, and only the driver sends them.
            return False
        if self.interface is not None and message.interface != self.interface:
            return False
        if self.member is not None and message.member != self.member:
            return False
        if self.path is not None and message.path != self.path:
            return False
        if self.path_namespace is not None and not _in_namespace(message.path, self.path_namespace, "/"):
            return False
        if self.destination is not None and message.destination != self.destination:
            return False
        if self.args or self.arg_paths or self.arg0_namespace is not None:
            return self._args_match(message.body, message.signature)
        return True

    def _args_match(self, body: tuple[Any, ...], signature: str) -> bool:
        codes = _top_level_codes(signature)
        for index, wanted in self.args.items():
            if index >= len(body) or codes[index] != "s" or body[index] != wanted:
                return False
        for index, wanted in self.arg_paths.items():
            if index >= len(body) or codes[index] not in "so":
                return False
            value = str(body[index])
            if not (value == wanted or (wanted.endswith("/") and value.startswith(wanted))
                    or (value.endswith("/") and wanted.startswith(value))):
                return False
        if self.arg0_namespace is not None:
            if not body or codes[0] != "s" or not _in_namespace(body[0], self.arg0_namespace, "."):
                return False
        return True

    @property
    def may_select_driver_signals(self) -> bool:
        """Whether the bus driver's signals (NameOwnerChanged and kin, made from kdbus's
        notifications) can match: the kernel notifications must then be asked for."""
        return ((self.type is None or self.type == MessageType.SIGNAL)
                and self.sender in (None, DRIVER) and self.interface in (None, DRIVER)
                and self.member in (None, "NameOwnerChanged") and self.path in (None, DRIVER_PATH)
                and (self.path_namespace is None or _in_namespace(DRIVER_PATH, self.path_namespace, "/")))

    @property
    def may_select_peer_signals(self) -> bool:
        """Whether signals of other connections can match (not only the driver's)."""
        return self.sender != DRIVER and self.type in (None, MessageType.SIGNAL)


def _in_namespace(value: str | None, namespace: str, separator: str) -> bool:
    if value is None:
        return False
    if separator == "/" and namespace == "/":
        return True
    return value == namespace or value.startswith(namespace + separator)


def _top_level_codes(signature: str) -> list[str]:
    """The first character of each complete type of `signature` ('a' for arrays, '(' structs)."""
    return [kind.code for kind in parse_signature(signature)]


# -- parsing ----------------------------------------------------------------------------------

def _split(text: str) -> list[tuple[str, str]]:
    """key='value' pairs; an apostrophe inside a value is written '\\'' (close, escape, reopen)."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    length = len(text)
    while pos < length:
        while pos < length and text[pos].isspace():
            pos += 1
        if pos >= length:
            break
        equals = text.find("=", pos)
        if equals < 0:
            raise InvalidRule(f"'{text[pos:]}' has no '='")
        key = text[pos:equals].strip()
        pos = equals + 1
        value: list[str] = []
        quoted = False
        while pos < length:
            char = text[pos]
            if quoted:
                if char == "'":
                    quoted = False
                else:
                    value.append(char)
            elif char == "'":
                quoted = True
            elif char == "\\" and pos + 1 < length and text[pos + 1] == "'":
                value.append("'")
                pos += 1
            elif char == ",":
                break
            else:
                value.append(char)
            pos += 1
        if quoted:
            raise InvalidRule("unbalanced quotes")
        pairs.append((key, "".join(value)))
        pos += 1  # the comma
    return pairs


def parse(text: str) -> MatchRule:
    """The rule in `text`; InvalidRule says what is wrong with it."""
    values: dict[str, Any] = {}
    args: dict[int, str] = {}
    arg_paths: dict[int, str] = {}
    seen: set[str] = set()
    for key, value in _split(text):
        if key in seen:
            raise InvalidRule(f"key '{key}' given twice")
        seen.add(key)
        if key == "type":
            if value not in _TYPES:
                raise InvalidRule(f"unknown message type '{value}'")
            values["type"] = _TYPES[value]
        elif key in ("sender", "destination"):
            if not is_bus_name(value):
                raise InvalidRule(f"{key} '{value}' is not a bus name")
            values[key] = value
        elif key == "interface":
            if not is_interface_name(value):
                raise InvalidRule(f"interface '{value}' is not valid")
            values[key] = value
        elif key == "member":
            if not is_member_name(value):
                raise InvalidRule(f"member '{value}' is not valid")
            values[key] = value
        elif key in ("path", "path_namespace"):
            if not is_object_path(value):
                raise InvalidRule(f"{key} '{value}' is not an object path")
            values[key] = value
        elif key == "eavesdrop":
            if value not in ("true", "false"):
                raise InvalidRule(f"eavesdrop='{value}'")
            values[key] = value == "true"
        elif key == "arg0namespace":
            if not value or value.startswith(".") or value.endswith(".") or ".." in value:
                raise InvalidRule(f"arg0namespace '{value}' is not a namespace")
            values["arg0_namespace"] = value
        elif key.startswith("arg"):
            _arg(key, value, args, arg_paths)
        else:
            raise InvalidRule(f"unknown key '{key}'")
    if "path" in values and "path_namespace" in values:
        raise InvalidRule("path and path_namespace cannot be combined")
    if 0 in args and "arg0_namespace" in values:
        raise InvalidRule("arg0 and arg0namespace cannot be combined")
    return MatchRule(text, args=args, arg_paths=arg_paths, **values)


def _arg(key: str, value: str, args: dict[int, str], arg_paths: dict[int, str]) -> None:
    digits = key[3:]
    is_path = digits.endswith("path")
    if is_path:
        digits = digits[:-4]
    # ASCII digits only, as dbus-daemon reads them ("arg²" and "arg٣" are unknown keys, not 2 or 3),
    # and no more of them than MAX_ARG has before int() (which refuses thousands of digits).
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(MAX_ARG)) or \
            (len(digits) > 1 and digits[0] == "0") or int(digits) > MAX_ARG:
        raise InvalidRule(f"unknown key '{key}'")
    index = int(digits)
    if index in args or index in arg_paths:
        raise InvalidRule(f"argument {index} given twice")
    (arg_paths if is_path else args)[index] = value


# -- bloom filters ----------------------------------------------------------------------------

def signal_mask(rule: MatchRule, size: int, n_hash: int) -> BloomFilter:
    """The BLOOM_MASK for the rule (fewer bits than sd-bus where the bloom cannot be exact)."""
    mask = BloomFilter(size, n_hash)
    mask.add_pair("message-type", "signal")
    if rule.interface is not None:
        mask.add_pair("interface", rule.interface)
    if rule.member is not None:
        mask.add_pair("member", rule.member)
    if rule.path is not None:
        mask.add_pair("path", rule.path)
    if rule.path_namespace is not None and rule.path_namespace != "/":
        mask.add_pair("path-slash-prefix", rule.path_namespace)
    if 0 in rule.args:
        mask.add_pair("arg0", rule.args[0])
    if rule.arg0_namespace is not None:
        mask.add_pair("arg0-dot-prefix", rule.arg0_namespace)
    return mask


def signal_filter(message: DBusMessage, size: int, n_hash: int,
                  budget: int | None = limits.CLASSIC_BLOOM_HASH_BUDGET) -> BloomFilter:
    """The BLOOM_FILTER a signal carries: sd-bus's elements for its header fields and string
    arguments (string arrays as "argN-has"), every string argument included, not only the leading
    ones, so that any argument a mask names is there. Hashing stops once every bit is set, and a
    signal that would hash more than `budget` bytes gets every bit (see limits.py)."""
    bloom = BloomFilter(size, n_hash, budget=budget)
    bloom.add_pair("message-type", "signal")
    if message.interface is not None:
        bloom.add_pair("interface", message.interface)
    if message.member is not None:
        bloom.add_pair("member", message.member)
    if message.path is not None:
        bloom.add_pair("path", message.path)
        bloom.add_prefixes("path-slash-prefix", message.path, "/")
    codes = [kind.signature for kind in message.body_types]
    for index, (code, value) in enumerate(zip(codes, message.body, strict=False)):
        if index > MAX_ARG or bloom.saturated:
            break
        if code in ("s", "o", "g"):
            _add_argument(bloom, f"arg{index}", str(value))
        elif code in ("as", "ao", "ag"):
            for element in value:
                if bloom.saturated:
                    break
                _add_argument(bloom, f"arg{index}-has", str(element))
    return bloom


def _add_argument(bloom: BloomFilter, key: str, value: str) -> None:
    bloom.add_pair(key, value)
    bloom.add_prefixes(f"{key}-dot-prefix", value, ".")
    bloom.add_prefixes(f"{key}-slash-prefix", value, "/")
