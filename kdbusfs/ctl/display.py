"""How `monitor` shows a message: busctl's layout (a header line, the addresses, the sender's
metadata, the body as a tree) plus kdbus's own view of it, or one JSON object."""

from __future__ import annotations

from typing import Any

from ..abi.constants import MSG_EXPECT_REPLY, MSG_NO_AUTO_START, MSG_SIGNAL
from ..client import IdChange, Message, NameChange, ReplyLost
from ..dbus import notation, wire
from .render import id_text, metadata_json, metadata_pairs
from .traffic import Observed

# Text payloads longer than this are cut (JSON keeps them whole).
HEXDUMP_LIMIT = 4096
_KDBUS_FLAGS = ((MSG_EXPECT_REPLY, "expect-reply"), (MSG_NO_AUTO_START, "no-auto-start"),
                (MSG_SIGNAL, "signal"))


def kdbus_flag_names(flags: int) -> list[str]:
    return [name for bit, name in _KDBUS_FLAGS if flags & bit]


def hexdump(data: bytes, indent: str = "  ", limit: int = HEXDUMP_LIMIT) -> list[str]:
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        text = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{indent}{offset:08x}  {chunk.hex(' '):<47}  |{text}|")
    if len(data) > limit:
        lines.append(f"{indent}... {len(data) - limit} more bytes")
    return lines


def _terse(pairs: list[tuple[str, str]], indent: str = "  ", width: int = 100) -> list[str]:
    """Key=value pairs, several to a line."""
    lines: list[str] = []
    line = ""
    for key, value in pairs:
        item = f"{key}={value}"
        if line and len(line) + 2 + len(item) > width:
            lines.append(indent + line)
            line = ""
        line = f"{line}  {item}" if line else item
    if line:
        lines.append(indent + line)
    return lines


def _notification_json(message: Message) -> dict[str, Any]:
    note = message.notification
    if isinstance(note, NameChange):
        return {"kind": note.kind.name.lower(), "name": note.name, "old_id": note.old_id,
                "old_flags": note.old_flags, "new_id": note.new_id, "new_flags": note.new_flags}
    if isinstance(note, IdChange):
        return {"kind": note.kind.name.lower(), "id": note.id, "flags": note.flags}
    assert isinstance(note, ReplyLost)
    return {"kind": note.kind.name.lower(), "cookie": note.cookie}


def kdbus_json(message: Message) -> dict[str, Any]:
    return {"src_id": message.src_id, "dst_id": message.dst_id, "dst_name": message.dst_name,
            "cookie": message.cookie, "cookie_reply": message.cookie_reply,
            "flags": kdbus_flag_names(message.flags), "priority": message.priority,
            "timeout_ns": message.timeout_ns, "payload_type": message.payload_type,
            "payload_size": len(message.payload)}


def message_json(observed: Observed) -> dict[str, Any]:
    """One JSON object for a message: the D-Bus view, kdbus's view, the metadata."""
    message, dbus = observed.kdbus, observed.dbus
    record: dict[str, Any] = {
        "type": "notification" if message.notification is not None else dbus.type.label,
        "dbus_type": dbus.type.label, "decoded": observed.decoded, "serial": dbus.serial,
        "reply_serial": dbus.reply_serial, "flags": dbus.flags, "sender": dbus.sender,
        "destination": dbus.destination, "path": dbus.path, "interface": dbus.interface,
        "member": dbus.member, "error_name": dbus.error_name, "kdbus": kdbus_json(message),
        "metadata": metadata_json(message.metadata),
    }
    if observed.decoded:
        record["version"] = message.payload[3]
    if message.notification is not None:
        record["notification"] = _notification_json(message)
    if observed.undecodable is None:
        record["body"] = notation.to_json(dbus.signature, dbus.body)
    else:
        record["payload_hex"] = message.payload.hex()
        record["undecodable"] = observed.undecodable
    if message.dropped:
        record["lost_before"] = message.dropped
    return record


def message_lines(observed: Observed) -> list[str]:
    """The text `monitor` prints for a message, ending with an empty line."""
    message, dbus = observed.kdbus, observed.dbus
    lines = []
    if message.dropped:
        lines.append(f"‣ {message.dropped} messages lost before this one (the monitor's pool or quota "
                     "was full)")
    head = [("Type", dbus.type.label)]
    if observed.decoded:
        head += [("Endian", chr(message.payload[0])), ("Flags", str(dbus.flags)),
                 ("Version", str(message.payload[3]))]
    elif message.notification is not None:
        head.append(("Notification", observed.notification_name or "?"))
    head += [("Cookie", str(message.cookie))]
    if message.cookie_reply:
        head.append(("ReplyCookie", str(message.cookie_reply)))
    head.append(("Priority", str(message.priority)))
    lines.append("‣ " + "  ".join(f"{key}={value}" for key, value in head))
    addresses = [(key, value) for key, value in (
        ("Sender", dbus.sender), ("Destination", dbus.destination), ("Path", dbus.path),
        ("Interface", dbus.interface), ("Member", dbus.member), ("ErrorName", dbus.error_name))
        if value is not None]
    # The addresses stay on one line, as busctl prints them.
    lines += _terse([(key, str(value)) for key, value in addresses], width=1 << 16)
    kdbus = [("SrcId", str(message.src_id)), ("DstId", id_text(message.dst_id))]
    if message.dst_name is not None:
        kdbus.append(("DstName", message.dst_name))
    kdbus += [("KdbusFlags", ",".join(kdbus_flag_names(message.flags)) or "-"),
              ("PayloadType", f"{message.payload_type:#x}"), ("PayloadSize", str(len(message.payload)))]
    lines += _terse(kdbus + metadata_pairs(message.metadata, capability_masks=True))
    if dbus.error_text is not None:
        lines.append(f"  ErrorMessage={notation.quote(dbus.error_text)}")
    if observed.undecodable is not None:
        lines.append(f"  PAYLOAD {len(message.payload)} bytes ({observed.undecodable}) {{")
        lines += hexdump(message.payload, "          ")
        lines.append("  };")
    else:
        lines += notation.format_tree(dbus.signature, dbus.body, "  ")
    lines.append("")
    return lines


def reply_text(payload: bytes) -> tuple[str, dict[str, Any]]:
    """What `call` prints of a reply's payload: its values in the argument notation (or a hexdump
    of a payload that is no D-Bus message), and the same as JSON."""
    if wire.looks_like_message(payload):
        try:
            reply = wire.decode(payload)
        except ValueError:
            pass
        else:
            return (notation.format_arguments(reply.signature, reply.body),
                    notation.to_json(reply.signature, reply.body))
    return "\n".join(hexdump(payload, "")), {"payload_hex": payload.hex()}
