"""kdbusfs.client's pure parts: messages built by the client are what the bus's model accepts, and
slices the model renders parse back into the client's objects; info records, match rules, policy
uploads and errors."""

from __future__ import annotations

import ctypes
import errno
import struct
from dataclasses import replace

import pytest

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    DST_ID_BROADCAST,
    MSG_EXPECT_REPLY,
    MSG_SIGNAL,
    NAME_PRIMARY,
    PAYLOAD_DBUS,
    POLICY_ACCESS_USER,
    POLICY_ACCESS_WORLD,
    POLICY_OWN,
    POLICY_TALK,
    Attach,
    Cmd,
    Item,
)
from kdbusfs.abi.items import item, string_item
from kdbusfs.abi.structs import align8
from kdbusfs.abi.walk import ItemSpec, walk_items
from kdbusfs.bus import layout as slices
from kdbusfs.bus import message as model
from kdbusfs.bus.match import MatchDb
from kdbusfs.bus.policy import parse_upload
from kdbusfs.client import match
from kdbusfs.client.bloom import BloomFilter
from kdbusfs.client.errors import CommandError, command_error
from kdbusfs.client.info import parse_bus_creator_info, parse_connection_info, parse_list
from kdbusfs.client.ioctl import Pinned, command
from kdbusfs.client.message import (
    Bloom,
    IdChange,
    Message,
    NameChange,
    ReplyLost,
    parse_message,
)
from kdbusfs.client.metadata import Audit, Caps, Creds, Metadata, OwnedName, Pids, Timestamp
from kdbusfs.client.outgoing import Outgoing, build
from kdbusfs.client.policy import PolicyAccess, policy_items

BLOOM_SIZE = 64


def read_own_memory(address: int, size: int, buffer: bytearray, offset: int) -> None:
    """The model's view of the sender's memory: here, this process's."""
    buffer[offset : offset + size] = ctypes.string_at(address, size)


def deliver(outgoing: Outgoing, meta: bytes = b"", cmd_flags: int = 0) -> bytes:
    """What a receiver's slice holds for `outgoing` (the model stages and renders it, reading the
    payload from this process while `outgoing` keeps it pinned)."""
    staged = model.stage_user(outgoing.message.read(), cmd_flags, BLOOM_SIZE)
    staged.read_into = read_own_memory
    last_pad = 0
    if meta:
        last_size = struct.unpack_from("<Q", meta, _last_item_offset(meta))[0]
        last_pad = align8(last_size) - last_size
    layout = slices.layout_size(staged, meta, last_pad)
    slice_ = bytearray(layout[2])
    slices.render(staged, slice_, 0, meta, layout)
    return bytes(slice_)


def _last_item_offset(items: bytes) -> int:
    pos = last = 0
    while pos < len(items):
        last = pos
        pos += align8(struct.unpack_from("<Q", items, pos)[0])
    return last


def test_a_call_by_name_with_vectors_round_trips_through_the_model() -> None:
    outgoing = build("org.example.Echo", [b"hello, ", b"", b"world"], flags=MSG_EXPECT_REPLY, cookie=7,
                     timeout_or_reply=123_456, priority=-3)
    data = outgoing.message.read()
    header = structs.MSG.unpack(data)
    # The header as kdbus wants it: the destination by name, the deadline in the union.
    assert (header.size, header.flags, header.priority, header.dst_id, header.src_id) == (
        len(data), MSG_EXPECT_REPLY, -3, 0, 0)
    assert (header.payload_type, header.cookie, header.timeout_ns) == (PAYLOAD_DBUS, 7, 123_456)
    message = parse_message(deliver(outgoing), return_flags=1, dropped=2)
    # The empty part made no vector (kdbus refuses empty ones).
    assert message.parts == (b"hello, ", b"world") and message.payload == b"hello, world"
    assert (message.dst_id, message.dst_name) == (0, "org.example.Echo")
    assert (message.cookie, message.priority) == (7, -3)
    assert message.expects_reply and message.timeout_ns == 123_456 and message.cookie_reply == 0
    assert (message.return_flags, message.dropped) == (1, 2)
    assert message.metadata == Metadata() and message.notification is None


def test_a_reply_carries_the_cookie_it_answers_in_the_union() -> None:
    message = parse_message(deliver(build(9, b"pong", cookie=8, timeout_or_reply=7)))
    assert message.is_reply and message.cookie_reply == 7 and message.timeout_ns == 0
    assert message.dst_id == 9 and message.payload == b"pong"


def test_a_broadcast_keeps_its_bloom_filter() -> None:
    bloom = BloomFilter.for_signal(interface="org.example.Clock", member="Tick")
    message = parse_message(deliver(build(DST_ID_BROADCAST, b"tick", flags=MSG_SIGNAL, bloom=bloom)))
    assert message.is_broadcast and message.is_signal
    assert message.bloom == Bloom(0, bytes(bloom))
    raw = build(DST_ID_BROADCAST, flags=MSG_SIGNAL, bloom=bytes(range(64)))
    assert parse_message(deliver(raw)).bloom == Bloom(0, bytes(range(64)))


def test_payload_larger_than_kdbus_allows_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="at most"):
        build(5, [bytes(2 << 20), b"x"])


def test_fds_travel_as_one_item_the_model_accepts() -> None:
    data = build(5, b"x", fds=(3, 4)).message.read()
    found = walk_items(data, structs.MSG.size, {t: ItemSpec(t, multiple=True) for t in (
        Item.PAYLOAD_VEC, Item.FDS)})
    assert found[Item.FDS][0].payload == struct.pack("<ii", 3, 4)


METADATA = [
    item(Item.CREDS, structs.CREDS.pack(1, 2, 3, 4, 5, 6, 7, 8)),
    item(Item.PIDS, structs.PIDS.pack(100, 101, 1)),
    item(Item.AUXGROUPS, struct.pack("<QQ", 27, 1000)),
    string_item(Item.TID_COMM, "worker"),
    string_item(Item.PID_COMM, "server"),
    string_item(Item.EXE, "/usr/bin/server"),
    string_item(Item.CMDLINE, "server\0--verbose"),
    string_item(Item.CGROUP, "/system.slice/server.service"),
    # last_cap 40, then inheritable, permitted, effective, bounding, two u32 words each.
    item(Item.CAPS, struct.pack("<I", 40) + struct.pack("<QQQQ", 0, 1 << 21, 1 << 21 | 1, (1 << 41) - 1)),
    string_item(Item.SECLABEL, "unconfined"),
    item(Item.AUDIT, structs.AUDIT.pack(3, 1000)),
    item(Item.OWNED_NAME, structs.NAME.pack(NAME_PRIMARY) + b"org.example.A\0"),
    item(Item.OWNED_NAME, structs.NAME.pack(NAME_PRIMARY) + b"org.example.B\0"),
    string_item(Item.CONN_DESCRIPTION, "server"),
    item(Item.TIMESTAMP, structs.TIMESTAMP.pack(42, 1_000, 2_000)),
]
EXPECTED_METADATA = Metadata(
    timestamp=Timestamp(42, 1_000, 2_000), creds=Creds(1, 2, 3, 4, 5, 6, 7, 8), pids=Pids(100, 101, 1),
    auxgroups=(27, 1000),
    owned_names=(OwnedName("org.example.A", NAME_PRIMARY), OwnedName("org.example.B", NAME_PRIMARY)),
    tid_comm="worker", pid_comm="server", exe="/usr/bin/server", cmdline=("server", "--verbose"),
    cgroup="/system.slice/server.service", caps=Caps(40, 0, 1 << 21, 1 << 21 | 1, (1 << 41) - 1),
    seclabel="unconfined", audit=Audit(3, 1000), description="server")


def test_every_metadata_item_parses_into_its_field() -> None:
    message = parse_message(deliver(build(5, b"payload after the metadata"), b"".join(METADATA)))
    assert message.metadata == EXPECTED_METADATA
    assert message.metadata.caps is not None and message.metadata.caps.has(21)
    assert message.payload == b"payload after the metadata"


@pytest.mark.parametrize(("kind", "payload", "notification"), [
    (Item.ID_ADD, structs.NOTIFY_ID_CHANGE.pack(5, 0), IdChange(Item.ID_ADD, 5, 0)),
    (Item.ID_REMOVE, structs.NOTIFY_ID_CHANGE.pack(6, 8), IdChange(Item.ID_REMOVE, 6, 8)),
    (Item.NAME_ADD, structs.NOTIFY_NAME_CHANGE.pack(0, 0, 5, NAME_PRIMARY) + b"a.b\0",
     NameChange(Item.NAME_ADD, "a.b", 0, 0, 5, NAME_PRIMARY)),
    (Item.NAME_CHANGE, structs.NOTIFY_NAME_CHANGE.pack(5, 1, 6, 2) + b"a.b\0",
     NameChange(Item.NAME_CHANGE, "a.b", 5, 1, 6, 2)),
])
def test_broadcast_notifications(kind: Item, payload: bytes, notification: object) -> None:
    staged = model.stage_kernel(DST_ID_BROADCAST, 0, kind, payload)
    meta = item(Item.TIMESTAMP, structs.TIMESTAMP.pack(9, 1, 2))
    layout = slices.layout_size(staged, meta, 0)
    slice_ = bytearray(layout[2])
    slices.render(staged, slice_, 0, meta, layout)
    message = parse_message(bytes(slice_))
    assert message.is_kernel and message.is_broadcast and message.notification == notification
    assert message.metadata == Metadata(timestamp=Timestamp(9, 1, 2)) and message.payload == b""


@pytest.mark.parametrize("kind", [Item.REPLY_TIMEOUT, Item.REPLY_DEAD])
def test_lost_replies_name_the_cookie_of_the_call(kind: Item) -> None:
    staged = model.stage_kernel(5, 77, kind)
    layout = slices.layout_size(staged, b"", 0)
    slice_ = bytearray(layout[2])
    slices.render(staged, slice_, 0, b"", layout)
    message: Message = parse_message(bytes(slice_))
    assert message.notification == ReplyLost(kind, 77) and message.cookie_reply == 77


def test_zero_vectors_read_as_zeros() -> None:
    header = structs.MSG.pack(structs.MSG.size + 64, 0, 0, 5, 4, PAYLOAD_DBUS, 1, 0)
    zeros = item(Item.PAYLOAD_OFF, structs.VEC.pack(3, (1 << 64) - 1))
    data = header + zeros + item(Item.PAYLOAD_OFF, structs.VEC.pack(2, 128)) + b"ok" + bytes(6)
    assert parse_message(data).parts == (b"\0\0\0", b"ok")


def info_record(record_id: int, flags: int, *items: bytes) -> bytes:
    body = b"".join(items)
    return structs.INFO.pack(structs.INFO.size + len(body), record_id, flags) + body


def test_conn_info_and_bus_creator_info_records() -> None:
    info = parse_connection_info(info_record(5, 0, *METADATA[:-1]))
    assert info.id == 5 and info.flags == 0
    assert info.metadata == replace(EXPECTED_METADATA, timestamp=None)
    creator = parse_bus_creator_info(info_record(1, 2, string_item(Item.MAKE_NAME, "0-test"), METADATA[0]))
    assert (creator.id, creator.flags, creator.name) == (1, 2, "0-test")
    assert creator.metadata == Metadata(creds=Creds(1, 2, 3, 4, 5, 6, 7, 8))


def test_list_records_are_packed_at_8_byte_steps() -> None:
    named = info_record(5, 0, item(Item.OWNED_NAME, structs.NAME.pack(NAME_PRIMARY) + b"a.bcd\0"))
    data = info_record(3, 0) + named + bytes(align8(len(named)) - len(named)) + info_record(7, 2)
    entries = parse_list(data)
    assert [(e.id, e.flags, e.name) for e in entries] == [
        (3, 0, None), (5, 0, OwnedName("a.bcd", NAME_PRIMARY)), (7, 2, None)]
    assert parse_list(b"") == []


def walked(rules: list[match.Rule]) -> list:  # type: ignore[type-arg]
    items = b"".join(rule.item for rule in rules)
    accepted = {t: ItemSpec(t, multiple=True) for t in (
        Item.BLOOM_MASK, Item.NAME, Item.ID, Item.DST_ID, Item.NAME_ADD, Item.NAME_REMOVE,
        Item.NAME_CHANGE, Item.ID_ADD, Item.ID_REMOVE)}
    found = walk_items(bytes(8) + items, 8, accepted)
    return sorted((p for group in found.values() for p in group), key=lambda p: p.offset)


def test_notification_rules_select_what_the_model_says() -> None:
    db = MatchDb()
    db.add(1, walked([match.name_added("org.example.Clock")]), BLOOM_SIZE, False)
    db.add(2, walked([match.id_removed(9)]), BLOOM_SIZE, False)
    added = structs.NOTIFY_NAME_CHANGE.pack(0, 0, 5, NAME_PRIMARY)
    assert db.match_kernel(Item.NAME_ADD, added + b"org.example.Clock\0")
    assert not db.match_kernel(Item.NAME_ADD, added + b"org.example.Other\0")
    assert db.match_kernel(Item.ID_REMOVE, structs.NOTIFY_ID_CHANGE.pack(9, 0))
    assert not db.match_kernel(Item.ID_REMOVE, structs.NOTIFY_ID_CHANGE.pack(8, 0))
    assert not db.match_kernel(Item.ID_ADD, structs.NOTIFY_ID_CHANGE.pack(9, 0))


def test_signal_rules_are_valid_items() -> None:
    mask = BloomFilter.for_match(interface="org.example.Clock")
    parsed = walked([match.bloom_mask(mask, bytes(BLOOM_SIZE)), match.sender_id(5),
                     match.sender_name("org.example.Clock"), match.destination_id(match.ANY)])
    assert [p.type for p in parsed] == [Item.BLOOM_MASK, Item.ID, Item.NAME, Item.DST_ID]
    assert parsed[0].payload == bytes(mask) + bytes(BLOOM_SIZE)
    MatchDb().add(3, parsed, BLOOM_SIZE, False)


def test_policy_uploads_parse_as_the_model_reads_them() -> None:
    upload = policy_items("org.example.Clock", [PolicyAccess.user(1000, "own"), PolicyAccess.world("talk")])
    found = walk_items(bytes(8) + upload, 8, {t: ItemSpec(t, multiple=True) for t in (
        Item.NAME, Item.POLICY_ACCESS)})
    parsed = parse_upload([p for group in found.values() for p in group], allow_wildcards=False)
    records = [(a.type, a.access, a.id) for a in parsed["org.example.Clock"]]
    assert records == [(POLICY_ACCESS_USER, POLICY_OWN, 1000), (POLICY_ACCESS_WORLD, POLICY_TALK, 0)]


def test_errors_name_the_command_the_errno_and_its_kdbus_meaning() -> None:
    exc = command_error(Cmd.SEND, errno.ENXIO)
    assert str(exc) == "KDBUS_CMD_SEND: ENXIO (no such peer)"
    assert exc.errno == errno.ENXIO and exc.command == "KDBUS_CMD_SEND" and type(exc) is CommandError
    assert str(command_error(Cmd.FREE, errno.ENXIO)) == "KDBUS_CMD_FREE: ENXIO (no such slice in the pool)"
    assert str(command_error(Cmd.MATCH_ADD, errno.EOPNOTSUPP)).startswith("KDBUS_CMD_MATCH_ADD: EOPNOTSUPP")
    # Without a kdbus meaning, the system's.
    assert str(command_error(Cmd.LIST, errno.ENOMEM)) == "KDBUS_CMD_LIST: ENOMEM (cannot allocate memory)"
    for code, builtin in [(errno.ETIMEDOUT, TimeoutError), (errno.EAGAIN, BlockingIOError),
                          (errno.EPERM, PermissionError), (errno.ECONNRESET, ConnectionResetError),
                          (errno.EPIPE, BrokenPipeError), (errno.EEXIST, FileExistsError)]:
        exc = command_error(Cmd.SEND, code)
        assert isinstance(exc, builtin) and isinstance(exc, CommandError) and exc.errno == code


def test_command_structs_are_pinned_8_aligned_with_their_size_in_front() -> None:
    struct_ = command(structs.CMD_INFO, 0, 0, 5, int(Attach.CREDS), 0, 0, items=string_item(Item.NAME, "a.b"))
    assert struct_.address % 8 == 0
    fields = struct_.fields(structs.CMD_INFO)
    assert fields.size == structs.CMD_INFO.size + 24 and (fields.id, fields.attach_flags) == (5, Attach.CREDS)
    assert struct_.read(structs.CMD_INFO.size) == string_item(Item.NAME, "a.b")
    odd = Pinned(b"abc")
    assert odd.read() == b"abc" and odd.address % 8 == 0
