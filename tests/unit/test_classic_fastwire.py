"""The endpoint's direct header codec against the generic one: the same bytes out, the same message
(or the same refusal) in, for any message and any corruption of one."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_values import object_paths, same, signatures, values_of
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbusfs.classic import fastwire
from kdbusfs.dbus import DBusMessage, MessageFlags, MessageType, dbus1, parse_signature, wire
from kdbusfs.dbus.errors import DecodeError, EncodeError

names = st.sampled_from(["org.example.A", ":1.42", "org.freedesktop.DBus", "a.b_c-d.E0"])
interfaces = st.sampled_from(["org.example.A", "org.freedesktop.DBus", "a.b_c.E0"])
members = st.sampled_from(["Ping", "Get_All", "x"])


@st.composite
def messages(draw: st.DrawFn) -> DBusMessage:
    kind = draw(st.sampled_from(list(MessageType)))
    signature = draw(signatures)
    body = tuple(draw(values_of(t)) for t in parse_signature(signature))
    fields: dict[str, Any] = {}
    if kind in (MessageType.METHOD_CALL, MessageType.SIGNAL):
        fields["path"] = draw(object_paths)
        fields["member"] = draw(members)
        fields["interface"] = draw(interfaces if kind == MessageType.SIGNAL else st.none() | interfaces)
    else:
        fields["reply_serial"] = draw(st.integers(1, 2**32 - 1))
        if kind == MessageType.ERROR:
            fields["error_name"] = "org.example.Error.Failed"
    fields["destination"] = draw(st.none() | names)
    fields["sender"] = draw(st.none() | names)
    fields["unix_fds"] = draw(st.none() | st.integers(0, 16))
    return DBusMessage(kind, draw(st.integers(1, 2**32 - 1)), draw(st.sampled_from([0, 1, 2, 3, 7])),
                       signature=signature, body=body, **fields)


@settings(max_examples=300, deadline=None)
@given(messages(), st.booleans())
def test_the_same_bytes_and_the_same_message(message: DBusMessage, big_endian: bool) -> None:
    data = wire.encode_dbus1(message, big_endian=big_endian)
    assert fastwire.encode(message, big_endian=big_endian) == data
    assert _same_message(fastwire.decode(data), wire.decode_dbus1(data))


@settings(max_examples=300, deadline=None)
@given(messages())
def test_the_same_gvariant_bytes_and_the_same_message(message: DBusMessage) -> None:
    data = wire.encode_gvariant(message)
    assert fastwire.encode_gvariant(message) == data
    assert _same_message(fastwire.decode_gvariant(data), wire.decode(data))


@settings(max_examples=500, deadline=None)
@given(messages(), st.data())
def test_the_same_verdict_on_corrupted_gvariant_messages(message: DBusMessage, data: st.DataObject) -> None:
    raw = bytearray(wire.encode_gvariant(message))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    generic, fast = _outcome(wire.decode, bytes(raw)), _outcome(fastwire.decode_gvariant, bytes(raw))
    if isinstance(generic, type):
        assert isinstance(fast, type) and issubclass(fast, ValueError)
    else:
        assert _same_message(fast, generic)


def _same_message(left: DBusMessage, right: DBusMessage) -> bool:
    # Bodies through same() (-0.0 is not 0.0), and where it says no, by their encoding: a NaN a
    # corrupted byte made is not equal to itself, but both decoders must give the same bits.
    if left.replace(body=()) != right.replace(body=()):
        return False
    return same(left.body, right.body) or (
        dbus1.encode_values(left.body_types, left.body) == dbus1.encode_values(right.body_types, right.body))


def _outcome(decoder: Any, data: bytes) -> Any:
    try:
        return decoder(data)
    except (DecodeError, ValueError) as exc:
        return type(exc)


@settings(max_examples=500, deadline=None)
@given(messages(), st.booleans(), st.data())
def test_the_same_verdict_on_corrupted_messages(message: DBusMessage, big_endian: bool,
                                                data: st.DataObject) -> None:
    raw = bytearray(wire.encode_dbus1(message, big_endian=big_endian))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    generic, fast = _outcome(wire.decode_dbus1, bytes(raw)), _outcome(fastwire.decode, bytes(raw))
    if isinstance(generic, type):
        assert fast is generic or (isinstance(fast, type) and issubclass(fast, ValueError))
    else:
        assert _same_message(fast, generic)


def test_encoding_refuses_what_the_generic_encoder_refuses() -> None:
    call = DBusMessage.method_call("org.example.A", "/a", None, "Ping", serial=1)
    with pytest.raises(EncodeError):
        fastwire.encode(call.replace(serial=2**32))
    with pytest.raises(EncodeError):
        fastwire.encode(call.replace(member="not a member"))
    assert fastwire.encode(call.replace(flags=MessageFlags.NO_AUTO_START)) == wire.encode_dbus1(
        call.replace(flags=MessageFlags.NO_AUTO_START))


def _with_field_twice(data: bytes, code: int, text: str) -> bytes:
    """`data` (a little-endian dbus1 message) with one more string field `code` at the end of its
    header fields."""
    fields_length = int.from_bytes(data[12:16], "little")
    end = 16 + fields_length
    extra = (bytes(-end % 8) + bytes([code, 1, ord("s"), 0]) + len(text).to_bytes(4, "little")
             + text.encode() + b"\0")
    fields = data[16:end] + extra
    body = data[end + (-end % 8):]
    head = data[:12] + len(fields).to_bytes(4, "little") + fields
    return head + bytes(-len(head) % 8) + body


@pytest.mark.parametrize(("code", "text"),
                         [(3, "Other"), (6, "org.example.B"), (2, "org.example.B"), (7, ":1.9")])
def test_a_header_field_given_twice_is_refused_as_dbus_daemon_refuses_it(code: int, text: str) -> None:
    """Two MEMBERs (or DESTINATIONs, ...): dbus-daemon closes the sender; the decoders believed the
    last one."""
    call = DBusMessage.method_call("org.example.A", "/a", "org.example.A", "Ping", "s", ("x",), serial=5)
    call = call.replace(sender=":1.5")
    data = _with_field_twice(wire.encode_dbus1(call), code, text)
    with pytest.raises(DecodeError, match="twice"):
        wire.decode_dbus1(data)
    with pytest.raises(DecodeError, match="twice"):
        fastwire.decode(data)
    # The same field once more of a code no specification knows is ignored, as before.
    assert fastwire.decode(_with_field_twice(wire.encode_dbus1(call), 100, "x")) == call


def test_a_repeated_gvariant_header_is_read_once_and_gives_the_same_message() -> None:
    call = DBusMessage.method_call(":1.2", "/a", "org.example.A", "Ping", "s", ("one",), serial=1)
    fastwire.decode_gvariant(wire.encode_gvariant(call))
    hits = fastwire._cached_gvariant_fields.cache_info().hits
    # Another cookie and body, the same header fields: from the cache, and still the message sent.
    again = call.replace(serial=2, body=("two",))
    assert fastwire.decode_gvariant(wire.encode_gvariant(again)) == wire.decode(wire.encode_gvariant(again))
    assert fastwire._cached_gvariant_fields.cache_info().hits == hits + 1
    # A header over the bound is read every time, not kept.
    long_path = "/" + "a" * fastwire.HEADER_CACHE_BYTES
    long_call = call.replace(path=long_path)
    for _ in range(2):
        assert fastwire.decode_gvariant(wire.encode_gvariant(long_call)).path == long_path
    assert fastwire._cached_gvariant_fields.cache_info().hits == hits + 1


def test_a_repeated_dbus1_header_is_read_once_and_gives_the_same_message() -> None:
    call = DBusMessage.method_call(":1.2", "/a", "org.example.A", "Ping", "s", ("one",), serial=1)
    fastwire.decode(wire.encode_dbus1(call))
    hits = fastwire._cached_dbus1_fields.cache_info().hits
    again = wire.encode_dbus1(call.replace(serial=2, body=("two",)))
    assert fastwire.decode(again) == wire.decode_dbus1(again)
    assert fastwire._cached_dbus1_fields.cache_info().hits == hits + 1


def test_a_dbus1_field_whose_length_is_past_the_array_is_refused_as_the_generic_decoder_does() -> None:
    # The array ends right after a field's code and type: its string's length is not there.
    raw = bytearray(wire.encode_dbus1(DBusMessage.method_call(None, "/a", None, "P", serial=1)))
    cut = bytes(raw[:12]) + (4 + 16).to_bytes(4, "little") + bytes(raw[16:32]) + bytes((3, 1, ord("s"), 0))
    message = cut + bytes(4)  # the padding to 8
    assert _outcome(fastwire.decode, message) == _outcome(wire.decode_dbus1, message)
