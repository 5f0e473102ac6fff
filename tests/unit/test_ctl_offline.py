"""kdbusctl's pieces that need no bus: kdbus messages seen as D-Bus messages, MATCH rules, the
pcapng file, and finding a bus from the options."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import pytest

from kdbusfs.abi.constants import DST_ID_BROADCAST, MSG_EXPECT_REPLY, MSG_SIGNAL, Item
from kdbusfs.client import IdChange, Message, NameChange, ReplyLost
from kdbusfs.ctl.display import message_json, message_lines
from kdbusfs.ctl.matching import parse_match, selects
from kdbusfs.ctl.pcapng import LINKTYPE_DBUS, PcapngWriter
from kdbusfs.ctl.stats import read_stats, render, show
from kdbusfs.ctl.target import CtlError, find_bus
from kdbusfs.ctl.traffic import RAW_INTERFACE, SYNTHETIC_SERIAL, as_dbus1, observe
from kdbusfs.dbus import DBusMessage, MessageType, wire


def kdbus_message(payload: bytes = b"", *, src: int = 5, dst: int = 6, cookie: int = 1, flags: int = 0,
                  cookie_reply: int = 0, **extra: object) -> Message:
    return Message(src_id=src, dst_id=dst, cookie=cookie, flags=flags, priority=0, payload_type=0,
                   timeout_ns=0, cookie_reply=cookie_reply, payload=payload, **extra)  # type: ignore[arg-type]


CALL = DBusMessage.method_call("org.x.Echo", "/a", "org.x.Echo", "Ping", "s", ("hi",), serial=1)


def test_a_gvariant_payload_is_decoded_and_addressed_from_the_kdbus_header() -> None:
    seen = observe(kdbus_message(wire.encode_gvariant(CALL), flags=MSG_EXPECT_REPLY))
    assert seen.decoded and seen.undecodable is None
    assert seen.dbus == CALL.replace(sender=":1.5")
    assert wire.decode(as_dbus1(seen)) == CALL.replace(sender=":1.5")


@pytest.mark.parametrize(("flags", "dst", "cookie_reply", "kind"), [
    (MSG_EXPECT_REPLY, 6, 0, MessageType.METHOD_CALL),
    (0, 6, 0, MessageType.METHOD_CALL),
    (0, 6, 3, MessageType.METHOD_RETURN),
    (MSG_SIGNAL, DST_ID_BROADCAST, 0, MessageType.SIGNAL),
])
def test_raw_payloads_are_wrapped_in_a_synthesized_message(flags: int, dst: int, cookie_reply: int,
                                                            kind: MessageType) -> None:
    seen = observe(kdbus_message(b"ping", dst=dst, flags=flags, cookie=2**32 + 7, cookie_reply=cookie_reply))
    assert not seen.decoded and seen.undecodable == "not a D-Bus message"
    message = seen.dbus
    assert (message.type, message.serial, message.signature, message.body) == (kind, 7, "ay", (b"ping",))
    assert message.sender == ":1.5"
    assert message.destination == (None if dst == DST_ID_BROADCAST else ":1.6")
    if kind == MessageType.METHOD_RETURN:
        assert message.reply_serial == 3
    else:
        assert message.interface == RAW_INTERFACE
    assert wire.decode(as_dbus1(seen)).body == (b"ping",)
    assert any("PAYLOAD 4 bytes" in line for line in message_lines(seen))
    assert message_json(seen)["payload_hex"] == b"ping".hex()


def test_notifications_become_what_sd_bus_made_of_them() -> None:
    added = observe(kdbus_message(src=0, dst=DST_ID_BROADCAST, flags=MSG_SIGNAL,
                                  notification=NameChange(Item.NAME_ADD, "org.x.Y", 0, 0, 9, 0)))
    assert added.dbus.member == "NameOwnerChanged" and added.dbus.body == ("org.x.Y", "", ":1.9")
    assert added.dbus.sender == "org.freedesktop.DBus" and added.dbus.serial == SYNTHETIC_SERIAL
    gone = observe(kdbus_message(src=0, notification=IdChange(Item.ID_REMOVE, 4, 0)))
    assert gone.dbus.body == (":1.4", ":1.4", "")
    lost = observe(kdbus_message(src=0, dst=3, notification=ReplyLost(Item.REPLY_TIMEOUT, 11)))
    assert lost.dbus.type == MessageType.ERROR and lost.dbus.reply_serial == 11
    assert lost.dbus.error_name == "org.freedesktop.DBus.Error.Timeout" and lost.dbus.destination == ":1.3"
    for seen in (added, gone, lost):
        assert wire.decode(as_dbus1(seen)) == seen.dbus
        assert message_json(seen)["type"] == "notification"


def test_match_rules() -> None:
    seen = observe(kdbus_message(wire.encode_gvariant(CALL), flags=MSG_EXPECT_REPLY))
    assert selects([], seen)
    assert selects([parse_match("type='method_call',member='Ping'")], seen)
    assert selects([parse_match("interface=org.x.Echo,arg0='hi'")], seen)
    assert selects([parse_match("path_namespace='/'")], seen)
    assert not selects([parse_match("type='signal'"), parse_match("arg0='ho'")], seen)
    assert selects([parse_match(":1.5")], seen) and selects([parse_match("org.x.Echo")], seen)
    assert not selects([parse_match("org.x.Other")], seen)
    for bad, why in (("foo=1", "unknown match key"), ("type=x", "unknown message type"),
                     ("not a name", "neither a match rule"), ("type='sig", "bad match rule")):
        with pytest.raises(CtlError, match=why):
            parse_match(bad)


def _blocks(data: bytes) -> list[tuple[int, bytes]]:
    blocks = []
    while data:
        kind, total = struct.unpack_from("<II", data)
        assert struct.unpack_from("<I", data, total - 4)[0] == total and total % 4 == 0
        blocks.append((kind, data[8 : total - 4]))
        data = data[total:]
    return blocks


def test_pcapng_layout() -> None:
    stream = io.BytesIO()
    writer = PcapngWriter(stream, "/bus", "test")
    writer.packet(b"abcde", 0x1_0000_0002, "note")
    (shb, section), (idb, interface), (epb, packet) = _blocks(stream.getvalue())
    assert (shb, idb, epb) == (0x0A0D0D0A, 1, 6)
    assert struct.unpack_from("<IHHq", section) == (0x1A2B3C4D, 1, 0, -1)
    assert struct.unpack_from("<HH", interface)[0] == LINKTYPE_DBUS
    assert struct.unpack_from("<IIIII", packet) == (0, 1, 2, 5, 5)
    assert packet[20:25] == b"abcde" and b"note" in packet[28:]


def test_finding_a_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "control").touch()
    (tmp_path / "1000-demo").mkdir()
    (tmp_path / "1000-demo" / "bus").touch()
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    bus = tmp_path / "1000-demo" / "bus"
    assert find_bus(str(bus)) == bus
    assert find_bus(str(bus.parent)) == bus
    assert find_bus("demo", str(tmp_path)) == bus
    assert find_bus("1000-demo", str(tmp_path)) == bus
    with pytest.raises(CtlError, match=r"no bus 'x' in .* \(buses there: 1000-demo\)"):
        find_bus("x", str(tmp_path))
    with pytest.raises(CtlError, match="is a kdbus domain, not a bus"):
        find_bus(str(tmp_path))
    with pytest.raises(CtlError, match="no bus at"):
        find_bus(str(tmp_path / "nothing"))
    with pytest.raises(CtlError, match="not a kdbus domain"):
        find_bus("demo", str(tmp_path / "1000-demo"))


STATS = {
    "format": 1,
    "bus": {"name": "1000-x", "id": 1, "connections": 1, "names": 1, "kernel_notifications": 2,
            "messages_sent": 3, "bytes_sent": 24, "messages_received": 3, "bytes_received": 24,
            "messages_dropped": 0},
    "connections": [{"id": 2, "kind": "ordinary", "description": None, "uid": 1000, "pid": 42,
                     "comm": "peer", "names": ["org.x.A"], "match_entries": 0, "queued_messages": 1,
                     "pool_size": 4096, "pool_queued_bytes": 96, "pool_queue_limit": 2048,
                     "pending_replies": 0, "awaited_replies": 0, "messages_sent": 3, "bytes_sent": 24,
                     "messages_received": 3, "bytes_received": 24, "messages_dropped": 0,
                     "quota_by_sender": {}}],
}


def test_stats_render_totals_then_a_line_per_connection(tmp_path: Path) -> None:
    (tmp_path / "bus").touch()
    (tmp_path / "stats").write_text(json.dumps(STATS))
    assert read_stats(tmp_path / "bus") == STATS
    lines = render(STATS)
    assert lines[0].startswith("bus 1000-x (id 1): 1 connections") and "dropped 0" in lines[1]
    assert lines[3].split()[:4] == ["ID", "DESCRIPTION", "PID", "COMM"]
    assert lines[4].split() == [":1.2", "-", "42", "peer", "3", "24", "3", "24", "0", "1", "96/2048", "0"]
    out = io.StringIO()
    assert show(tmp_path / "bus", True, None, out) == 0 and json.loads(out.getvalue()) == STATS
    (tmp_path / "stats").write_text(json.dumps({**STATS, "format": 99}))
    with pytest.raises(CtlError, match="format 99"):
        read_stats(tmp_path / "bus")
    (tmp_path / "stats").write_text("not json")
    with pytest.raises(CtlError, match="not a kdbusfs statistics file"):
        read_stats(tmp_path / "bus")
    with pytest.raises(CtlError, match="does not exist"):
        read_stats(tmp_path / "gone" / "bus")


# -- a reply whose body came in a memfd (review: kdbusctl call of a large classic reply) ----------------
def _memfd_reply(fd: int, size: int) -> tuple[Message, bytes]:
    from kdbusfs.abi.constants import PAYLOAD_DBUS
    from kdbusfs.client.message import Memfd

    reply = DBusMessage.method_return(DBusMessage.method_call(":1.1", "/", "a.b", "C", serial=4), "ay",
                                      (b"x" * size,), serial=9)
    whole = wire.encode_gvariant(reply)
    body_start = whole.index(b"x" * size)
    parts = (whole[:body_start], whole[body_start + size:])
    if fd >= 0:
        os.pwrite(fd, whole[body_start:body_start + size], 0)
    message = Message(src_id=1, dst_id=2, cookie=9, flags=0, priority=0, payload_type=PAYLOAD_DBUS,
                      timeout_ns=0, cookie_reply=4, payload=b"".join(parts), parts=parts,
                      memfds=(Memfd(fd, 0, size),))
    return message, whole


def test_kdbusctl_call_reads_a_reply_s_memfd_body() -> None:
    """A classic service's reply of 512 KiB or more reaches a native caller with its body in a memfd;
    kdbusctl call printed the header's bytes in hex instead of the answer."""
    from kdbusfs.ctl.calls import _whole_payload

    fd = os.memfd_create("body")
    message, whole = _memfd_reply(fd, 4096)
    assert _whole_payload(message) == whole
    with pytest.raises(OSError):
        os.fstat(fd)  # closed once read
    unread, _ = _memfd_reply(-1, 4096)
    with pytest.raises(CtlError, match="kdbusfs run"):
        _whole_payload(unread)
