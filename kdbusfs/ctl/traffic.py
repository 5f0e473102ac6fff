"""kdbus messages seen as D-Bus messages, for monitor and capture.

A payload that is a D-Bus message (sd-bus's GVariant framing, or dbus1) is decoded; the sender and
destination it lacks (kdbus addresses messages by connection id, so sd-bus left them out) come from
the kdbus header. Kernel notifications become the signals and errors sd-bus made of them:
NameOwnerChanged from org.freedesktop.DBus for NAME_* and ID_* notifications, Error.Timeout and
Error.NoReply for lost replies. Any other payload is shown as a message kdbusctl synthesizes from the
kdbus header (serial = cookie, REPLY_SERIAL = the cookie a reply answers, the type from the signal
flag and the reply cookie) whose body, of type "ay", is the payload itself; it carries the
placeholders path "/", interface org.kdbusfs.Raw and member Payload, which D-Bus requires.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..abi.constants import MSG_NO_AUTO_START, Item
from ..client import IdChange, Message, NameChange, ReplyLost
from ..dbus import DBusMessage, DecodeError, MessageFlags, MessageType, wire
from .render import unique_name

BUS_NAME = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
RAW_PATH = "/"
RAW_INTERFACE = "org.kdbusfs.Raw"
RAW_MEMBER = "Payload"
# sd-bus's serial for messages the bus itself made.
SYNTHETIC_SERIAL = 0xFFFF_FFFF
_NOTIFICATION_NAMES = {
    Item.NAME_ADD: "NameAdd", Item.NAME_REMOVE: "NameRemove", Item.NAME_CHANGE: "NameChange",
    Item.ID_ADD: "IdAdd", Item.ID_REMOVE: "IdRemove", Item.REPLY_TIMEOUT: "ReplyTimeout",
    Item.REPLY_DEAD: "ReplyDead",
}


@dataclass(frozen=True, slots=True)
class Observed:
    """A received kdbus message and the D-Bus message it is (`decoded` is False when kdbusctl
    made `dbus` up: a notification's translation or a raw payload's wrapper)."""

    kdbus: Message
    dbus: DBusMessage
    decoded: bool
    # Why the payload is not a D-Bus message (None if it is, or for notifications).
    undecodable: str | None = None

    @property
    def notification_name(self) -> str | None:
        note = self.kdbus.notification
        return None if note is None else _NOTIFICATION_NAMES[note.kind]


def fit_serial(value: int) -> int:
    """A 64-bit kdbus cookie as a dbus1 serial: its low 32 bits (never 0)."""
    return value & 0xFFFF_FFFF or SYNTHETIC_SERIAL


def sender_of(message: Message) -> str:
    return BUS_NAME if message.is_kernel else unique_name(message.src_id)


def destination_of(message: Message) -> str | None:
    if message.dst_name is not None:
        return message.dst_name
    return None if message.is_broadcast else unique_name(message.dst_id)


def _owner(connection_id: int) -> str:
    return unique_name(connection_id) if connection_id else ""


def _notification(message: Message) -> DBusMessage:
    note = message.notification
    if isinstance(note, ReplyLost):
        timed_out = note.kind == Item.REPLY_TIMEOUT
        return DBusMessage(MessageType.ERROR, SYNTHETIC_SERIAL, MessageFlags.NO_REPLY_EXPECTED,
                           error_name=f"{BUS_NAME}.Error.{'Timeout' if timed_out else 'NoReply'}",
                           reply_serial=fit_serial(note.cookie), sender=BUS_NAME,
                           destination=destination_of(message), signature="s",
                           body=("Method call timed out" if timed_out else "Method call peer died",))
    if isinstance(note, NameChange):
        args = (note.name, _owner(note.old_id), _owner(note.new_id))
    else:
        assert isinstance(note, IdChange)
        added = note.kind == Item.ID_ADD
        name = unique_name(note.id)
        args = (name, "" if added else name, name if added else "")
    return DBusMessage.signal(BUS_PATH, BUS_NAME, "NameOwnerChanged", "sss", args,
                              serial=SYNTHETIC_SERIAL).replace(sender=BUS_NAME)


def wrap_payload(message: Message) -> DBusMessage:
    """A D-Bus message whose body (type "ay") is the raw payload."""
    auto_start = MessageFlags.NO_AUTO_START if message.flags & MSG_NO_AUTO_START else 0
    wrapper = DBusMessage(MessageType.METHOD_CALL, fit_serial(message.cookie), sender=sender_of(message),
                          destination=destination_of(message), signature="ay", body=(message.payload,))
    if message.is_reply:
        return wrapper.replace(type=MessageType.METHOD_RETURN, flags=MessageFlags.NO_REPLY_EXPECTED,
                               reply_serial=fit_serial(message.cookie_reply))
    wrapper = wrapper.replace(path=RAW_PATH, interface=RAW_INTERFACE, member=RAW_MEMBER)
    if message.is_signal:
        return wrapper.replace(type=MessageType.SIGNAL, flags=auto_start | MessageFlags.NO_REPLY_EXPECTED)
    no_reply = 0 if message.expects_reply else MessageFlags.NO_REPLY_EXPECTED
    return wrapper.replace(flags=auto_start | no_reply)


def observe(message: Message) -> Observed:
    """What kdbusctl shows of a received message."""
    if message.notification is not None:
        return Observed(message, _notification(message), False)
    if not wire.looks_like_message(message.payload):
        return Observed(message, wrap_payload(message), False, "not a D-Bus message")
    try:
        decoded = wire.decode(message.payload)
    except (DecodeError, ValueError) as exc:
        return Observed(message, wrap_payload(message), False, f"malformed D-Bus message: {exc}")
    # kdbus knows who sent it, and to whom, better than the payload says.
    completed = decoded.replace(sender=sender_of(message),
                                destination=decoded.destination or destination_of(message))
    return Observed(message, completed, True)


def as_dbus1(observed: Observed) -> bytes:
    """The message in the classic framing, as a capture file holds it (serials cut to 32 bits)."""
    message = observed.dbus
    reply_serial = None if message.reply_serial is None else fit_serial(message.reply_serial)
    return wire.encode_dbus1(message.replace(serial=fit_serial(message.serial), reply_serial=reply_serial))
