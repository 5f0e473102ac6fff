"""Which messages `monitor` and `capture` keep. A kdbus monitor receives everything, so the
selection is made here, on the D-Bus view of each message.

A MATCH is a D-Bus match rule ("type='signal',interface='org.example.Clock'": keys type, sender,
destination, path, path_namespace, interface, member, argN) or, as for busctl monitor, a bus name
alone, which selects the messages it sends or receives. A message is kept if any MATCH selects it
(all messages without one). A sender or destination named by a well-known name is compared with the
names the sender owns, as the bus attached them to the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..dbus.names import is_bus_name
from .target import CtlError
from .traffic import Observed

_KEYS = {"type", "sender", "destination", "path", "path_namespace", "interface", "member"}
_ARG = re.compile(r"arg([0-9]|[1-5][0-9]|6[0-3])")
_TYPES = {"method_call", "method_return", "error", "signal"}


@dataclass(frozen=True, slots=True)
class Match:
    """One MATCH: every condition must hold."""

    conditions: tuple[tuple[str, str], ...]

    def selects(self, observed: Observed) -> bool:
        return all(_holds(key, value, observed) for key, value in self.conditions)


def _names_of_sender(observed: Observed) -> set[str]:
    names = {owned.name for owned in observed.kdbus.metadata.owned_names}
    return names | ({observed.dbus.sender} if observed.dbus.sender else set())


def _holds(key: str, value: str, observed: Observed) -> bool:
    dbus = observed.dbus
    if key == "type":
        return dbus.type.label == value
    if key == "sender":
        return value in _names_of_sender(observed)
    if key == "destination":
        return dbus.destination == value
    if key == "path":
        return dbus.path == value
    if key == "path_namespace":
        path = dbus.path or ""
        return value == "/" or path == value or path.startswith(value + "/")
    if key == "interface":
        return dbus.interface == value
    if key == "member":
        return dbus.member == value
    if key == "peer":
        return value in _names_of_sender(observed) or dbus.destination == value
    index = int(key[3:])
    return index < len(dbus.body) and isinstance(dbus.body[index], str) and dbus.body[index] == value


def _split(rule: str) -> list[tuple[str, str]]:
    """key='value' pairs separated by commas; quotes optional, \\' inside quotes is a quote."""
    pairs = []
    position = 0
    pattern = re.compile(r"\s*([a-z_0-9]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|([^,']*))\s*(?:,|$)")
    while position < len(rule):
        matched = pattern.match(rule, position)
        if matched is None or matched.end() == position:
            raise CtlError(f"bad match rule '{rule}': want key='value',... at '{rule[position:]}'")
        quoted, bare = matched.group(2), matched.group(3)
        value = quoted.replace("\\'", "'") if quoted is not None else (bare or "").strip()
        pairs.append((matched.group(1), value))
        position = matched.end()
    return pairs


def parse_match(text: str) -> Match:
    if "=" not in text:
        if not is_bus_name(text):
            raise CtlError(f"'{text}' is neither a match rule (key='value',...) nor a bus name")
        return Match((("peer", text),))
    conditions = _split(text)
    for key, value in conditions:
        if key not in _KEYS and not _ARG.fullmatch(key):
            raise CtlError(f"unknown match key '{key}' (known: {', '.join(sorted(_KEYS))}, arg0..arg63)")
        if key == "type" and value not in _TYPES:
            raise CtlError(f"unknown message type '{value}' (known: {', '.join(sorted(_TYPES))})")
    return Match(tuple(conditions))


def selects(matches: list[Match], observed: Observed) -> bool:
    return not matches or any(match.selects(observed) for match in matches)
