"""D-Bus messages as values: the type, flags, serial, header fields and the body, independent of
the wire format (`wire.py` frames them as dbus1 or as sd-bus's GVariant messages).

    call = DBusMessage.method_call("org.example.Clock", "/clock", "org.example.Clock", "Set",
                                   "s", ("noon",), serial=1)
    reply = DBusMessage.method_return(call, "b", (True,), serial=7)
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclasses_fields
from typing import Any

from .names import (
    is_bus_name,
    is_error_name,
    is_interface_name,
    is_member_name,
    is_object_path,
    is_signature,
)
from .signature import DBusType, parse_signature


class MessageType(enum.IntEnum):
    METHOD_CALL = 1
    METHOD_RETURN = 2
    ERROR = 3
    SIGNAL = 4

    @property
    def label(self) -> str:
        """The name busctl and dbus-monitor print: "method_call", "signal", ..."""
        return self.name.lower()


class MessageFlags(enum.IntFlag):
    NO_REPLY_EXPECTED = 1
    NO_AUTO_START = 2
    ALLOW_INTERACTIVE_AUTHORIZATION = 4


class HeaderField(enum.IntEnum):
    PATH = 1
    INTERFACE = 2
    MEMBER = 3
    ERROR_NAME = 4
    REPLY_SERIAL = 5
    DESTINATION = 6
    SENDER = 7
    SIGNATURE = 8
    UNIX_FDS = 9


# The header fields each message type must have (D-Bus specification, Message Types).
REQUIRED_FIELDS: dict[MessageType, tuple[str, ...]] = {
    MessageType.METHOD_CALL: ("path", "member"),
    MessageType.METHOD_RETURN: ("reply_serial",),
    MessageType.ERROR: ("error_name", "reply_serial"),
    MessageType.SIGNAL: ("path", "interface", "member"),
}
_NAME_RULES = {
    "path": (is_object_path, "object path"),
    "interface": (is_interface_name, "interface name"),
    "member": (is_member_name, "member name"),
    "error_name": (is_error_name, "error name"),
    "destination": (is_bus_name, "bus name"),
    "sender": (is_bus_name, "bus name"),
    "signature": (is_signature, "signature"),
}


@dataclass(frozen=True, slots=True)
class DBusMessage:
    """A D-Bus message. `serial` is the sender's serial (sd-bus's "cookie": 64 bits in the GVariant
    framing, 32 in dbus1); `body` holds one value per complete type of `signature`."""

    type: MessageType
    serial: int
    flags: int = 0
    path: str | None = None
    interface: str | None = None
    member: str | None = None
    error_name: str | None = None
    reply_serial: int | None = None
    destination: str | None = None
    sender: str | None = None
    signature: str = ""
    body: tuple[Any, ...] = ()
    unix_fds: int | None = None
    # Set by problem() once it found nothing: the fields are immutable, so the verdict stands (a
    # replace() starts without it and earns it by checking only what it changed).
    _valid: bool = field(default=False, init=False, repr=False, compare=False)

    @classmethod
    def method_call(cls, destination: str | None, path: str, interface: str | None, member: str,
                    signature: str = "", body: Sequence[Any] = (), *, serial: int,
                    flags: int = 0) -> DBusMessage:
        return cls(MessageType.METHOD_CALL, serial, flags, path=path, interface=interface, member=member,
                   destination=destination, signature=signature, body=tuple(body))

    @classmethod
    def signal(cls, path: str, interface: str, member: str, signature: str = "",
               body: Sequence[Any] = (), *, serial: int, destination: str | None = None) -> DBusMessage:
        return cls(MessageType.SIGNAL, serial, MessageFlags.NO_REPLY_EXPECTED, path=path,
                   interface=interface, member=member, destination=destination, signature=signature,
                   body=tuple(body))

    @classmethod
    def method_return(cls, call: DBusMessage, signature: str = "", body: Sequence[Any] = (), *,
                      serial: int) -> DBusMessage:
        return cls(MessageType.METHOD_RETURN, serial, MessageFlags.NO_REPLY_EXPECTED,
                   reply_serial=call.serial, destination=call.sender, signature=signature,
                   body=tuple(body))

    @classmethod
    def error(cls, call: DBusMessage, name: str, text: str | None = None, *, serial: int) -> DBusMessage:
        return cls(MessageType.ERROR, serial, MessageFlags.NO_REPLY_EXPECTED, error_name=name,
                   reply_serial=call.serial, destination=call.sender,
                   signature="" if text is None else "s", body=() if text is None else (text,))

    @property
    def body_types(self) -> tuple[DBusType, ...]:
        return parse_signature(self.signature)

    @property
    def error_text(self) -> str | None:
        """An error's message: its first argument when that is a string."""
        if self.type == MessageType.ERROR and self.signature.startswith("s") and self.body:
            return str(self.body[0])
        return None

    def replace(self, **changes: Any) -> DBusMessage:
        """This message with `changes`. A copy of a valid message (one problem() passed) whose
        changes are header fields that each pass their own rule (or that no rule reads: flags,
        body, UNIX_FDS) is valid without checking the rest again: so the endpoint's copies with the
        sender (or destination) it set cost no second validation."""
        values = dict(zip(_INIT_FIELDS, _init_values(self), strict=True))
        if not changes.keys() <= values.keys():
            raise TypeError(f"DBusMessage has no field {sorted(changes.keys() - values.keys())[0]!r}")
        values.update(changes)
        copy = DBusMessage(**values)
        if self._valid:
            for name in changes:
                if name not in _UNCHECKED and (name not in _CHECKED_VALUES
                                               or copy._field_problem(name) is not None):
                    break
            else:
                object.__setattr__(copy, "_valid", True)
        return copy

    def problem(self) -> str | None:
        """What makes this message invalid D-Bus, or None (kept: asking again costs nothing)."""
        if self._valid:
            return None
        if self.serial <= 0:
            return "the serial must not be 0"
        for name in REQUIRED_FIELDS[self.type]:
            found = self._missing(name)
            if found is not None:
                return found
        for name in _CHECKED_VALUES:
            found = self._invalid(name)
            if found is not None:
                return found
        object.__setattr__(self, "_valid", True)
        return None

    def _field_problem(self, name: str) -> str | None:
        """What problem() would find wrong with the header field `name` alone, or None."""
        return self._missing(name) or self._invalid(name)

    def _missing(self, name: str) -> str | None:
        if getattr(self, name) is None and name in REQUIRED_FIELDS[self.type]:
            return f"a {self.type.label} needs the header field {name.upper()}"
        return None

    def _invalid(self, name: str) -> str | None:
        value = getattr(self, name)
        if value is None:
            return None
        if name == "reply_serial":
            return "REPLY_SERIAL must not be 0" if value <= 0 else None
        valid, what = _NAME_RULES[name]
        return None if valid(value) else f"{name.upper()} '{value}' is not a valid {what}"


# The fields a message is made of, for replace().
_INIT_FIELDS = tuple(f.name for f in dataclasses_fields(DBusMessage) if f.init)
_init_values = operator.attrgetter(*_INIT_FIELDS)
# The fields whose values problem() checks, in the order it reports them: the names, then the
# reply serial; a replace() of a valid message that changes only these checks only those it changed.
_CHECKED_VALUES = (*_NAME_RULES, "reply_serial")
# The fields problem() does not look at: changing them leaves a valid message valid.
_UNCHECKED = frozenset(("flags", "body", "unix_fds"))
