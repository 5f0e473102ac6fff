"""The kdbus ABI: struct layouts against their construct declarations and KDBUS-SPEC.md §2.1,
ioctl numbers (§2.1) and item/flag values (Appendix B)."""

from __future__ import annotations

import re
import struct

import pytest

from kdbusfs.abi import constants as k
from kdbusfs.abi import structs
from kdbusfs.abi.constants import Attach, Cmd, Item, ioc_dir, ioc_size
from kdbusfs.abi.structs import Layout

# (layout, size in bytes, {field: offset}) — sizes and offsets as KDBUS-SPEC.md §2.1 lists them.
LAYOUTS = [
    (structs.CMD, 24, {"size": 0, "flags": 8, "return_flags": 16}),
    (structs.CMD_HELLO, 96, {
        "size": 0, "flags": 8, "return_flags": 16, "attach_flags_send": 24, "attach_flags_recv": 32,
        "bus_flags": 40, "id": 48, "pool_size": 56, "offset": 64, "items_size": 72, "id128": 80}),
    (structs.CMD_FREE, 32, {"offset": 24}),
    (structs.CMD_INFO, 56, {"id": 24, "attach_flags": 32, "offset": 40, "info_size": 48}),
    (structs.CMD_LIST, 40, {"offset": 24, "list_size": 32}),
    (structs.CMD_SEND, 56, {"msg_address": 24, "reply_offset": 32, "reply_msg_size": 40,
                            "reply_return_flags": 48}),
    (structs.CMD_RECV, 64, {"priority": 24, "dropped_msgs": 32, "msg_offset": 40, "msg_msg_size": 48,
                            "msg_return_flags": 56}),
    (structs.CMD_MATCH, 32, {"cookie": 24}),
    (structs.MSG, 64, {"size": 0, "flags": 8, "priority": 16, "dst_id": 24, "src_id": 32,
                       "payload_type": 40, "cookie": 48, "timeout_ns": 56}),
    (structs.INFO, 24, {"size": 0, "id": 8, "flags": 16}),
    (structs.ITEM_HEADER, 16, {"size": 0, "type": 8}),
    (structs.VEC, 16, {"size": 0, "address": 8}),
    (structs.MEMFD, 24, {"start": 0, "size": 8, "fd": 16, "pad": 20}),
    (structs.CREDS, 64, {"uid": 0, "euid": 8, "suid": 16, "fsuid": 24, "gid": 32, "egid": 40,
                         "sgid": 48, "fsgid": 56}),
    (structs.PIDS, 24, {"pid": 0, "tid": 8, "ppid": 16}),
    (structs.TIMESTAMP, 24, {"seqnum": 0, "monotonic_ns": 8, "realtime_ns": 16}),
    (structs.BLOOM_PARAMETER, 16, {"size": 0, "n_hash": 8}),
    (structs.NOTIFY_ID_CHANGE, 16, {"id": 0, "flags": 8}),
    (structs.POLICY_ACCESS, 24, {"type": 0, "access": 8, "id": 16}),
    (structs.AUDIT, 8, {"sessionid": 0, "loginuid": 4}),
]
LAYOUT_IDS = [layout.name for layout, _, _ in LAYOUTS]


def field_codes(layout: Layout) -> dict[str, str]:
    """Each field's struct code ("Q", "q", "I", "i" or "16s"), from the layout's format."""
    codes = re.findall(r"\d*[a-zA-Z]", layout.struct.format.lstrip("<"))
    assert len(codes) == len(layout.tuple._fields)
    return dict(zip(layout.tuple._fields, codes, strict=True))


def sample_values(layout: Layout) -> dict[str, int | bytes]:
    """Distinct, recognisable values for every field (negative where the field is signed)."""
    values: dict[str, int | bytes] = {}
    for n, (name, code) in enumerate(field_codes(layout).items(), start=1):
        if code.endswith("s"):
            values[name] = bytes(range(n, n + int(code[:-1])))
        elif code in "qi":
            values[name] = -n
        elif code == "Q":
            values[name] = 0x0102_0304_0000_0000 | n
        else:
            values[name] = 0x0100_0000 | n
    return values


@pytest.mark.parametrize(("layout", "size", "offsets"), LAYOUTS, ids=LAYOUT_IDS)
def test_layout_size_matches_declaration_and_spec(layout: Layout, size: int, offsets: dict[str, int]) -> None:
    assert layout.size == layout.declaration.sizeof() == size


@pytest.mark.parametrize(("layout", "size", "offsets"), LAYOUTS, ids=LAYOUT_IDS)
def test_layout_field_offsets(layout: Layout, size: int, offsets: dict[str, int]) -> None:
    values = sample_values(layout)
    raw = layout.pack(*values.values())
    for name, offset in offsets.items():
        value = values[name]
        if isinstance(value, bytes):
            assert raw[offset : offset + len(value)] == value, name
        else:
            code = field_codes(layout)[name]
            assert struct.unpack_from("<" + code, raw, offset)[0] == value, name


@pytest.mark.parametrize(("layout", "size", "offsets"), LAYOUTS, ids=LAYOUT_IDS)
def test_construct_and_layout_build_identical_bytes(
    layout: Layout, size: int, offsets: dict[str, int]
) -> None:
    values = sample_values(layout)
    assert layout.declaration.build(values) == layout.pack(*values.values())


@pytest.mark.parametrize(("layout", "size", "offsets"), LAYOUTS, ids=LAYOUT_IDS)
def test_construct_and_layout_parse_each_others_bytes(
    layout: Layout, size: int, offsets: dict[str, int]
) -> None:
    values = sample_values(layout)
    built = layout.declaration.build(values)
    assert layout.unpack(built)._asdict() == values
    parsed = layout.declaration.parse(layout.pack(*values.values()))
    assert {name: parsed[name] for name in values} == values


def test_layout_unpack_at_offset() -> None:
    raw = b"\xff" * 8 + structs.INFO.pack(24, 7, 3)
    assert structs.INFO.unpack(raw, 8) == structs.INFO.tuple(size=24, id=7, flags=3)


def test_msg_info_declaration_is_24_bytes() -> None:
    assert structs.MSG_INFO.declaration.sizeof() == 24


def test_item_header_size_constant() -> None:
    assert structs.ITEM_HEADER_SIZE == 16


@pytest.mark.parametrize(("n", "aligned"), [(0, 0), (1, 8), (7, 8), (8, 8), (9, 16), (31, 32), (32, 32)])
def test_align8(n: int, aligned: int) -> None:
    assert structs.align8(n) == aligned


# -- ioctl numbers (spec §2.1) ------------------------------------------------------------------

# command: (value, nr, direction bits (W=1, R=2), struct size)
IOCTLS = {
    "BUS_MAKE": (0x40189500, 0x00, 1, 24),
    "ENDPOINT_MAKE": (0x40189510, 0x10, 1, 24),
    "ENDPOINT_UPDATE": (0x40189511, 0x11, 1, 24),
    "HELLO": (0xC0609580, 0x80, 3, 96),
    "UPDATE": (0x40189581, 0x81, 1, 24),
    "BYEBYE": (0x40189582, 0x82, 1, 24),
    "FREE": (0x40209583, 0x83, 1, 32),
    "CONN_INFO": (0x80389584, 0x84, 2, 56),
    "BUS_CREATOR_INFO": (0x80389585, 0x85, 2, 56),
    "LIST": (0x80289586, 0x86, 2, 40),
    "SEND": (0x40389590, 0x90, 1, 56),
    "RECV": (0x80409591, 0x91, 2, 64),
    "NAME_ACQUIRE": (0x401895A0, 0xA0, 1, 24),
    "NAME_RELEASE": (0x401895A1, 0xA1, 1, 24),
    "MATCH_ADD": (0x402095B0, 0xB0, 1, 32),
    "MATCH_REMOVE": (0x402095B1, 0xB1, 1, 32),
}


def test_all_sixteen_commands_exist() -> None:
    assert len(Cmd) == 16
    assert {c.name for c in Cmd} == set(IOCTLS)


@pytest.mark.parametrize("name", IOCTLS)
def test_ioctl_number(name: str) -> None:
    value, nr, direction, size = IOCTLS[name]
    cmd = Cmd[name]
    assert cmd == value
    assert cmd & 0xFF == nr
    assert (cmd >> 8) & 0xFF == k.IOCTL_MAGIC == 0x95
    assert ioc_dir(cmd) == direction
    assert ioc_size(cmd) == size


# -- item types and flags (Appendix B, §8.1) -----------------------------------------------------

ITEM_TYPES = {
    "NEGOTIATE": 1, "PAYLOAD_VEC": 2, "PAYLOAD_OFF": 3, "PAYLOAD_MEMFD": 4, "FDS": 5, "CANCEL_FD": 6,
    "BLOOM_PARAMETER": 7, "BLOOM_FILTER": 8, "BLOOM_MASK": 9, "DST_NAME": 10, "MAKE_NAME": 11,
    "ATTACH_FLAGS_SEND": 12, "ATTACH_FLAGS_RECV": 13, "ID": 14, "NAME": 15, "DST_ID": 16,
    "TIMESTAMP": 0x1000, "CREDS": 0x1001, "PIDS": 0x1002, "AUXGROUPS": 0x1003, "OWNED_NAME": 0x1004,
    "TID_COMM": 0x1005, "PID_COMM": 0x1006, "EXE": 0x1007, "CMDLINE": 0x1008, "CGROUP": 0x1009,
    "CAPS": 0x100A, "SECLABEL": 0x100B, "AUDIT": 0x100C, "CONN_DESCRIPTION": 0x100D,
    "POLICY_ACCESS": 0x2000,
    "NAME_ADD": 0x8000, "NAME_REMOVE": 0x8001, "NAME_CHANGE": 0x8002, "ID_ADD": 0x8003, "ID_REMOVE": 0x8004,
    "REPLY_TIMEOUT": 0x8005, "REPLY_DEAD": 0x8006,
}


def test_item_types_are_exactly_appendix_b() -> None:
    assert {i.name: i.value for i in Item} == ITEM_TYPES


# metadata item → attach flag bit (§8.1: flag bit = type - 0x1000; OWNED_NAME goes with NAMES)
METADATA = {
    "TIMESTAMP": "TIMESTAMP", "CREDS": "CREDS", "PIDS": "PIDS", "AUXGROUPS": "AUXGROUPS",
    "OWNED_NAME": "NAMES", "TID_COMM": "TID_COMM", "PID_COMM": "PID_COMM", "EXE": "EXE",
    "CMDLINE": "CMDLINE", "CGROUP": "CGROUP", "CAPS": "CAPS", "SECLABEL": "SECLABEL", "AUDIT": "AUDIT",
    "CONN_DESCRIPTION": "CONN_DESCRIPTION",
}


@pytest.mark.parametrize("item_name", METADATA)
def test_attach_flag_bit_is_item_type_minus_0x1000(item_name: str) -> None:
    assert Attach[METADATA[item_name]] == 1 << (Item[item_name] - 0x1000)


def test_attach_all_and_any() -> None:
    assert k.ATTACH_ALL == 0x3FFF == sum(Attach)
    assert k.ATTACH_ANY == 0xFFFF_FFFF_FFFF_FFFF


def test_ids_and_magic_values() -> None:
    assert k.SRC_ID_KERNEL == 0
    assert k.DST_ID_NAME == 0
    assert k.DST_ID_BROADCAST == k.MATCH_ID_ANY == 2**64 - 1
    assert k.FLAG_NEGOTIATE == 1 << 63
    assert k.PAYLOAD_KERNEL == 0
    assert k.PAYLOAD_DBUS == 0x4442757344427573
    assert k.PAYLOAD_DBUS.to_bytes(8, "big") == b"DBusDBus"
    assert k.SUPER_MAGIC == 0x4442757


FLAGS = {
    "MAKE_ACCESS_GROUP": 1, "MAKE_ACCESS_WORLD": 2,
    "HELLO_ACCEPT_FD": 1, "HELLO_ACTIVATOR": 2, "HELLO_POLICY_HOLDER": 4, "HELLO_MONITOR": 8,
    "MSG_EXPECT_REPLY": 1, "MSG_NO_AUTO_START": 2, "MSG_SIGNAL": 4,
    "SEND_SYNC_REPLY": 1,
    "RECV_PEEK": 1, "RECV_DROP": 2, "RECV_USE_PRIORITY": 4,
    "RECV_RETURN_INCOMPLETE_FDS": 1, "RECV_RETURN_DROPPED_MSGS": 2,
    "LIST_UNIQUE": 1, "LIST_NAMES": 2, "LIST_ACTIVATORS": 4, "LIST_QUEUED": 8,
    "MATCH_REPLACE": 1,
    "NAME_REPLACE_EXISTING": 1, "NAME_ALLOW_REPLACEMENT": 2, "NAME_QUEUE": 4, "NAME_IN_QUEUE": 8,
    "NAME_ACTIVATOR": 16, "NAME_PRIMARY": 32, "NAME_ACQUIRED": 64,
    "POLICY_ACCESS_USER": 1, "POLICY_ACCESS_GROUP": 2, "POLICY_ACCESS_WORLD": 3,
    "POLICY_SEE": 0, "POLICY_TALK": 1, "POLICY_OWN": 2,
}


@pytest.mark.parametrize("name", FLAGS)
def test_flag_value(name: str) -> None:
    assert getattr(k, name) == FLAGS[name]


@pytest.mark.parametrize("layout", [
    structs.CMD, structs.CMD_HELLO, structs.CMD_FREE, structs.CMD_INFO, structs.CMD_LIST, structs.CMD_SEND,
    structs.CMD_RECV, structs.CMD_MATCH,
], ids=lambda layout: layout.name)
def test_every_command_struct_starts_with_kdbus_cmd(layout: Layout) -> None:
    assert layout.tuple._fields[:3] == ("size", "flags", "return_flags")
    assert layout.struct.format.lstrip("<").startswith("QQQ")
