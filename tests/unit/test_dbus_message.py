"""Messages and their framing: a dbus1 message GLib wrote, sd-bus's GVariant framing byte for
byte, round trips through both, and the specification's rules for messages."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_values import same, signatures, values_of
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbusfs.dbus import (
    DBusMessage,
    DecodeError,
    EncodeError,
    MessageFlags,
    MessageType,
    Variant,
    dbus1,
    parse_signature,
    parse_type,
    wire,
)
from kdbusfs.dbus import message as message_module

# GDBusMessage.to_blob() of a call to org.example.Echo.Ping("hi", 7), serial 5 (GLib orders the
# header fields its own way).
GLIB_CALL = bytes.fromhex(
    "6c0100010c000000050000006d00000001016f000c0000002f6f72672f6578616d706c650000000002017300100000006f"
    "72672e6578616d706c652e4563686f000000000000000006017300100000006f72672e6578616d706c652e4563686f0000"
    "00000000000008016700027375000301730004000000" "50696e6700000000020000006869000007000000")
CALL = DBusMessage.method_call("org.example.Echo", "/org/example", "org.example.Echo", "Ping", "su",
                               ("hi", 7), serial=5)


def test_a_dbus1_message_glib_wrote() -> None:
    assert wire.decode(GLIB_CALL) == CALL
    assert wire.decode(wire.encode_dbus1(CALL)) == CALL
    big = wire.encode_dbus1(CALL, big_endian=True)
    assert big[:4] == b"B\x01\x00\x01" and wire.decode(big) == CALL


def test_sd_bus_gvariant_framing() -> None:
    reply = DBusMessage(MessageType.METHOD_RETURN, 9, MessageFlags.NO_REPLY_EXPECTED, reply_serial=7,
                        destination=":1.5")
    data = wire.encode_gvariant(reply)
    assert data == bytes.fromhex(
        # 'l', METHOD_RETURN, NO_REPLY_EXPECTED, version 2, reserved 0, cookie 9
        "6c 02 01 02 00000000 0900000000000000"
        # a(tv): (5, <uint64 7>) then, 8-aligned, (6, <':1.5'>), then the elements' ends 0x12, 0x27
        "0500000000000000 0700000000000000 00 74 000000000000"
        "0600000000000000 3a312e3500 00 73 12 27"
        # padding to 8, the empty body (the unit type: one NUL), NUL, "()", where the fields end (57)
        "00000000000000 00 00 2829 39".replace(" ", ""))
    assert wire.decode(data) == reply


def test_a_gvariant_call_carries_its_signature_after_the_body() -> None:
    data = wire.encode_gvariant(CALL)
    assert data[:4] == b"l\x01\x00\x02" and data.endswith(b"\0(su)" + data[-1:])
    # The last byte is where the header fields end (the struct's one framing offset).
    assert data[-1] <= len(data) and wire.decode(data) == CALL


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_round_trip_through_both_framings(data: st.DataObject) -> None:
    signature = data.draw(signatures)
    body = tuple(data.draw(values_of(kind)) for kind in parse_signature(signature))
    kind = data.draw(st.sampled_from(list(MessageType)))
    fields_of: dict[MessageType, dict[str, Any]] = {
        MessageType.METHOD_CALL: {"path": "/a/b", "member": "M", "interface": "org.x.Y"},
        MessageType.METHOD_RETURN: {"reply_serial": 3},
        MessageType.ERROR: {"error_name": "org.x.Error.Failed", "reply_serial": 3},
        MessageType.SIGNAL: {"path": "/", "interface": "org.x.Y", "member": "S"},
    }
    fields = fields_of[kind]
    message = DBusMessage(kind, data.draw(st.integers(1, 2**32 - 1)), data.draw(st.integers(0, 7)),
                          sender=":1.9", destination="org.x.Z", signature=signature, body=body, **fields)
    for encoded in (wire.encode_gvariant(message), wire.encode_dbus1(message),
                    wire.encode_dbus1(message, big_endian=True)):
        decoded = wire.decode(encoded)
        assert same(decoded.body, message.body) and decoded.replace(body=()) == message.replace(body=())


@pytest.mark.parametrize(("message", "why"), [
    (DBusMessage(MessageType.METHOD_CALL, 1, member="M"), "needs the header field PATH"),
    (DBusMessage(MessageType.SIGNAL, 1, path="/", member="M"), "needs the header field INTERFACE"),
    (DBusMessage(MessageType.ERROR, 1, reply_serial=1), "needs the header field ERROR_NAME"),
    (DBusMessage(MessageType.METHOD_RETURN, 1), "needs the header field REPLY_SERIAL"),
    (DBusMessage(MessageType.METHOD_RETURN, 0, reply_serial=1), "serial must not be 0"),
    (CALL.replace(path="x"), "not a valid object path"),
    (CALL.replace(interface="x"), "not a valid interface name"),
    (CALL.replace(member="a.b"), "not a valid member name"),
    (CALL.replace(destination="no"), "not a valid bus name"),
    (CALL.replace(signature="a{"), "not a valid signature"),
])
def test_invalid_messages_are_not_encoded(message: DBusMessage, why: str) -> None:
    with pytest.raises(EncodeError, match=why):
        wire.encode_gvariant(message)
    with pytest.raises(EncodeError, match=why):
        wire.encode_dbus1(message)


def test_a_copy_of_a_valid_message_checks_only_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    valid = DBusMessage.method_call("org.example.Echo", "/org/example", "org.example.Echo", "Ping",
                                    serial=5)
    assert valid.problem() is None
    # Whatever a copy changes is checked, with the words problem() has for it.
    assert "SENDER 'no' is not a valid bus name" in str(valid.replace(sender="no").problem())
    assert "needs the header field MEMBER" in str(valid.replace(member=None).problem())
    assert "REPLY_SERIAL must not be 0" in str(valid.replace(reply_serial=0).problem())
    signal = valid.replace(type=MessageType.SIGNAL, member=None)
    assert "needs the header field MEMBER" in str(signal.problem())
    assert "serial must not be 0" in str(valid.replace(serial=0).problem())
    with pytest.raises(TypeError, match="no field 'senderr'"):
        valid.replace(senderr=":1.2")
    # What it does not change is not checked again: the path's rule is not asked (and would refuse).
    paths: list[str] = []
    monkeypatch.setitem(message_module._NAME_RULES, "path", (lambda text: bool(paths.append(text)),
                                                              "object path"))
    copy = valid.replace(sender=":1.7", destination=":1.8", flags=MessageFlags.NO_AUTO_START, unix_fds=1)
    assert copy.problem() is None and copy.sender == ":1.7" and copy.unix_fds == 1 and paths == []
    assert copy == DBusMessage.method_call(":1.8", "/org/example", "org.example.Echo", "Ping", serial=5,
                                           flags=MessageFlags.NO_AUTO_START).replace(sender=":1.7",
                                                                                    unix_fds=1)
    # A copy of another type is checked whole.
    retyped = copy.replace(type=MessageType.SIGNAL)
    assert "PATH '/org/example' is not a valid object path" in str(retyped.problem())


def test_dbus1_serials_are_32_bits() -> None:
    assert wire.decode(wire.encode_gvariant(CALL.replace(serial=2**40))).serial == 2**40
    with pytest.raises(EncodeError, match="32 bits"):
        wire.encode_dbus1(CALL.replace(serial=2**40))


def test_body_and_signature_must_agree() -> None:
    with pytest.raises(EncodeError, match="2 values wanted"):
        wire.encode_gvariant(CALL.replace(body=("hi",)))
    with pytest.raises(EncodeError, match="wants an integer"):
        wire.encode_dbus1(CALL.replace(body=("hi", "7")))


@pytest.mark.parametrize(("mangle", "why"), [
    (lambda d: d[:10], "at least 16 bytes"),
    (lambda d: d[:4] + b"\1" + d[5:], "reserved header word"),
    (lambda d: d[:8] + bytes(8) + d[16:], "cookie 0"),
    (lambda d: d[:-1] + b"\xff", "out of bounds"),
    (lambda d: d.replace(b"(su)", b"(sx)"), "wants|takes|bytes|out of bounds"),
    (lambda d: d.replace(b"(su)", b"su)("), "does not hold a struct"),
    (lambda d: d[:1] + b"\x09" + d[2:], "unknown message type"),
    (lambda d: b"X" + d[1:], "endianness"),
])
def test_malformed_gvariant_messages_are_refused(mangle: Any, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        wire.decode(mangle(wire.encode_gvariant(CALL)))


@pytest.mark.parametrize(("mangle", "why"), [
    (lambda d: d + b"\0", "header says"),
    (lambda d: d[:-1], "header says"),
    (lambda d: d.replace(b"\x01\x01o\x00", b"\x01\x01s\x00"), "PATH of type 's'"),
    (lambda d: d[:8] + bytes(4) + d[12:], "serial must not be 0"),
])
def test_malformed_dbus1_messages_are_refused(mangle: Any, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        wire.decode(mangle(GLIB_CALL))


def test_unknown_header_fields_are_ignored() -> None:
    # A dbus1 call with a header field (200) a later specification might define.
    writer = dbus1.Writer()
    for byte in (ord("l"), MessageType.METHOD_CALL, 0, 1):
        writer.write(parse_type("y"), byte)
    body = dbus1.encode_values(parse_signature("su"), ("hi", 7))
    writer.u32(len(body))
    writer.u32(5)
    writer.write(parse_type("a(yv)"), [(1, Variant("o", "/org/example")), (3, Variant("s", "Ping")),
                                        (200, Variant("as", ["future"])), (8, Variant("g", "su"))])
    writer.pad(8)
    data = bytes(writer.buffer) + body
    assert wire.looks_like_message(data) and not wire.looks_like_message(b"hello, world, this is no message")
    assert wire.decode(data) == DBusMessage.method_call(None, "/org/example", None, "Ping", "su", ("hi", 7),
                                                        serial=5)


def test_constructors_answer_the_call() -> None:
    call = CALL.replace(sender=":1.4")
    reply = DBusMessage.method_return(call, "b", (True,), serial=8)
    assert (reply.reply_serial, reply.destination, reply.flags) == (5, ":1.4", MessageFlags.NO_REPLY_EXPECTED)
    error = DBusMessage.error(call, "org.x.Error.Nope", "no", serial=9)
    assert error.error_text == "no" and wire.decode(wire.encode_gvariant(error)) == error
    assert reply.error_text is None
    signal = DBusMessage.signal("/a", "org.x.Y", "S", "v", (Variant("s", "x"),), serial=1)
    assert wire.decode(wire.encode_dbus1(signal)) == signal


def test_messages_are_at_most_128_mib() -> None:
    # bytes(n) is calloc'd: no page of it is touched before the size is refused.
    with pytest.raises(DecodeError, match="D-Bus allows 134217728"):
        wire.decode(bytes(wire.MAX_MESSAGE_SIZE + 1))
