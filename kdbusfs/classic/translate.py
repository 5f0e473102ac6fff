"""Classic D-Bus messages to kdbus messages and back; no I/O.

On kdbus a D-Bus message is the payload of a kdbus message (payload type "DBusDBus"), framed as the
kdbus-era libraries framed it: sd-bus's GVariant layout (kdbusfs/dbus/wire.py). The kdbus header
carries what the bus itself acts on: the destination (a connection id for a unique name ":1.N", a
DST_NAME for a well-known one, BROADCAST for a signal without destination), EXPECT_REPLY with a
deadline for a call that wants a reply, NO_AUTO_START, SIGNAL, the cookie (the D-Bus serial) and,
for a reply, the cookie it answers (the REPLY_SERIAL). The sender's unique name is the kdbus
sender id, so what a receiver reads as SENDER is always made from src_id, never believed from the
payload. Unique names are ":1.<id>", as sd-bus printed kdbus ids.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from .. import limits
from ..abi.constants import (
    DST_ID_BROADCAST,
    MSG_EXPECT_REPLY,
    MSG_NO_AUTO_START,
    MSG_SIGNAL,
    PAYLOAD_DBUS,
)
from ..client.message import Message
from ..dbus import DBusMessage, MessageFlags, MessageType, wire
from ..dbus.errors import DecodeError, EncodeError
from . import fastwire

_UNIQUE = re.compile(r":1\.([1-9][0-9]*)")
_SERIAL_MAX = 0xFFFF_FFFF
# The header flags as plain ints: an IntFlag operand makes every message's test enum arithmetic.
_NO_REPLY_EXPECTED = int(MessageFlags.NO_REPLY_EXPECTED)
_NO_AUTO_START = int(MessageFlags.NO_AUTO_START)

# D-Bus errors a classic client gets for a call the bus refused (kdbus errno -> name).
ERRORS_BY_ERRNO = {
    errno.ESRCH: "org.freedesktop.DBus.Error.ServiceUnknown",
    errno.ENXIO: "org.freedesktop.DBus.Error.ServiceUnknown",
    errno.EADDRNOTAVAIL: "org.freedesktop.DBus.Error.ServiceUnknown",
    errno.ECONNRESET: "org.freedesktop.DBus.Error.ServiceUnknown",
    errno.EPERM: "org.freedesktop.DBus.Error.AccessDenied",
    errno.EACCES: "org.freedesktop.DBus.Error.AccessDenied",
    errno.EXFULL: "org.freedesktop.DBus.Error.LimitsExceeded",
    errno.ENOBUFS: "org.freedesktop.DBus.Error.LimitsExceeded",
    errno.EMFILE: "org.freedesktop.DBus.Error.LimitsExceeded",
    errno.EMSGSIZE: "org.freedesktop.DBus.Error.LimitsExceeded",
    # The caller has as many calls awaiting replies as kdbus allows (128, the system bus's
    # max_replies_per_connection too).
    errno.EMLINK: "org.freedesktop.DBus.Error.LimitsExceeded",
    errno.E2BIG: "org.freedesktop.DBus.Error.LimitsExceeded",
    errno.ECOMM: "org.freedesktop.DBus.Error.NotSupported",
    errno.EOPNOTSUPP: "org.freedesktop.DBus.Error.NotSupported",
}
FAILED = "org.freedesktop.DBus.Error.Failed"
NO_REPLY = "org.freedesktop.DBus.Error.NoReply"
# Reserved by the D-Bus specification for messages a library makes up for its own connection (its
# Disconnected signal): one that arrived from the bus would make GDBus or libdbus drop the
# connection, so dbus-daemon refuses them as invalid, and so does the endpoint (`reserved_local`).
LOCAL_PATH = "/org/freedesktop/DBus/Local"
LOCAL_INTERFACE = "org.freedesktop.DBus.Local"


def reserved_local(message: DBusMessage) -> str | None:
    """Why `message` may not travel between connections (it uses the reserved local path or
    interface), or None: the one rule for both directions."""
    if message.path == LOCAL_PATH:
        return f"the path {LOCAL_PATH} is reserved"
    if message.interface == LOCAL_INTERFACE:
        return f"the interface {LOCAL_INTERFACE} is reserved"
    return None


def unique_name(conn_id: int) -> str:
    return f":1.{conn_id}"


def connection_id(name: str) -> int | None:
    """The kdbus id a unique name stands for; None for names no kdbus connection can have."""
    matched = _UNIQUE.fullmatch(name)
    return int(matched.group(1)) if matched else None


def error_for(code: int, destination: str | None) -> tuple[str, str]:
    """(error name, text) a classic client gets when the bus refuses its call with `code`."""
    name = ERRORS_BY_ERRNO.get(code, FAILED)
    if name.endswith("ServiceUnknown"):
        return name, f"The name {destination} was not provided by any .service files"
    if name.endswith("AccessDenied"):
        return name, f"Rejected send message: the bus policy forbids talking to {destination}"
    if code == errno.EMLINK:
        return name, "The maximum number of pending replies per connection has been reached"
    return name, f"Could not send the message to {destination}: {errno.errorcode.get(code, code)}"


@dataclass(frozen=True, slots=True)
class Outbound:
    """A classic message as the kdbus SEND that carries it."""

    destination: int | str
    flags: int
    cookie: int
    reply_cookie: int
    # The GVariant message in parts laid out back to back (header, body, footer: a large body
    # travels in a memfd of its own, as sd-bus sent it).
    payload: tuple[bytes, ...]
    expects_reply: bool

    @property
    def timeout_or_reply(self) -> int:
        """kdbus_msg.timeout_ns: for a call expecting a reply its deadline, which is never reached
        (CLASSIC_CALL_DEADLINE_NS: dbus-daemon times no call out; the client's own timeout
        decides), else the cookie a reply answers."""
        return limits.CLASSIC_CALL_DEADLINE_NS if self.expects_reply else self.reply_cookie


class Untranslatable(ValueError):
    """A message that cannot be put on kdbus (or taken off it) as D-Bus."""


def to_kdbus(message: DBusMessage, sender_id: int) -> Outbound:
    """The kdbus message for a classic client's `message` (its destination is not the driver)."""
    kind = message.type
    destination: int | str
    if message.destination is None:
        if kind != MessageType.SIGNAL:
            raise Untranslatable(f"a {kind.label} without a destination")
        destination = DST_ID_BROADCAST
    elif message.destination.startswith(":"):
        found = connection_id(message.destination)
        if found is None:
            raise Untranslatable(f"no connection is called {message.destination}")
        destination = found
    else:
        destination = message.destination
    flags = 0
    expects_reply = kind == MessageType.METHOD_CALL and not message.flags & _NO_REPLY_EXPECTED
    if expects_reply:
        flags |= MSG_EXPECT_REPLY
    if message.flags & _NO_AUTO_START:
        flags |= MSG_NO_AUTO_START
    if kind == MessageType.SIGNAL:
        flags |= MSG_SIGNAL
    reply_cookie = 0
    if kind in (MessageType.METHOD_RETURN, MessageType.ERROR):
        reply_cookie = message.reply_serial or 0
    sender = unique_name(sender_id)
    if message.sender != sender:
        message = message.replace(sender=sender)
    try:
        payload = fastwire.gvariant_parts(message)
    except EncodeError as exc:
        raise Untranslatable(str(exc)) from None
    return Outbound(destination, flags, message.serial, reply_cookie, payload, expects_reply)


def from_kdbus(received: Message, receiver_id: int, monitor: bool = False) -> DBusMessage:
    """The classic message for a D-Bus message a classic client's connection received (a
    monitor's: a copy of a message to anyone, its descriptors not passed)."""
    if received.memfds:
        # ClassicConnection.recv leaves them unread only when they would make it too large.
        size = len(received.payload) + sum(memfd.size for memfd in received.memfds)
        raise Untranslatable(f"a message of {size} bytes; classic clients take at most "
                             f"{limits.CLASSIC_MESSAGE_MAX}")
    if received.payload_type != PAYLOAD_DBUS or not wire.looks_like_message(received.payload):
        raise Untranslatable(f"payload type {received.payload_type:#x} is not a D-Bus message")
    try:
        message = fastwire.decode_gvariant(received.payload, limits.CLASSIC_ARRAY_ELEMENTS_MAX)
    except (DecodeError, ValueError) as exc:
        raise Untranslatable(f"undecodable D-Bus payload: {exc}") from None
    reserved = reserved_local(message)
    if reserved is not None:
        raise Untranslatable(reserved)
    if message.serial > _SERIAL_MAX:
        raise Untranslatable(f"serial {message.serial} does not fit dbus1's 32 bits")
    reply_serial = message.reply_serial
    if received.is_reply and reply_serial is None:
        reply_serial = received.cookie_reply
    if reply_serial is not None and reply_serial > _SERIAL_MAX:
        raise Untranslatable(f"reply serial {reply_serial} does not fit dbus1's 32 bits")
    # A broadcast has no destination, whatever its sender wrote in the payload: receivers' rules
    # (destination=...) and libraries (a signal "to" them) would read one.
    destination = None
    if not received.is_broadcast:
        destination = received.dst_name or unique_name(received.dst_id if monitor else receiver_id)
    fds = len(received.fds)
    if monitor:
        fds = 0
    elif fds != (message.unix_fds or 0):
        raise Untranslatable(f"the message declares {message.unix_fds or 0} descriptors and passes {fds}")
    return message.replace(sender=unique_name(received.src_id), destination=destination,
                           reply_serial=reply_serial, unix_fds=fds or None)
