"""Hostile input, generated: every command struct, message and item stream is either executed or
refused with a KdbusError carrying an errno; nothing else happens (no other exception escapes, the
model stays usable). The same invariant as h11's fuzzing, over kdbusfs's command frame."""

from __future__ import annotations

import struct

from helpers import BASE, Conn, connect, make_bus, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdbusfs.abi import structs
from kdbusfs.abi.constants import PAYLOAD_DBUS, Cmd, Item
from kdbusfs.abi.items import ItemSpec, walk_items
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.errors import KdbusError
from kdbusfs.bus.message import stage_user
from kdbusfs.fuse.codec import ProtocolError, parse_request

ITEM_TYPES = [int(t) for t in Item] + [0, 17, 0x100E, 0x2001, 0x8007, 2**64 - 1]
COMMANDS = [c for c in Cmd if c not in (Cmd.BUS_MAKE, Cmd.HELLO, Cmd.ENDPOINT_MAKE)]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def items(draw: st.DrawFn) -> bytes:
    """A stream of plausible and implausible items: sizes that lie, odd types, random payloads."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        payload = draw(st.binary(max_size=48))
        kind = draw(st.sampled_from(ITEM_TYPES))
        size = draw(st.one_of(st.just(16 + len(payload)), st.integers(0, 2**64 - 1)))
        item = struct.pack("<QQ", size, kind) + payload
        out += item + b"\0" * (-len(item) % 8)
    return out


def fresh() -> tuple[Domain, Bus, Conn, Conn]:
    domain = Domain()
    make_bus(domain)
    bus = domain.buses["1000-test"]
    return domain, bus, connect(bus), connect(bus)


@FUZZ
@given(cmd=st.sampled_from(COMMANDS), flags=st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2, 4]),
       fixed=st.binary(min_size=64, max_size=64), tail=items(), size_delta=st.integers(-40, 40))
def test_connection_commands_execute_or_refuse_with_an_errno(
    cmd: Cmd, flags: int, fixed: bytes, tail: bytes, size_delta: int,
) -> None:
    _, bus, a, b = fresh()
    layout = {Cmd.UPDATE: structs.CMD, Cmd.BYEBYE: structs.CMD, Cmd.FREE: structs.CMD_FREE,
              Cmd.CONN_INFO: structs.CMD_INFO, Cmd.BUS_CREATOR_INFO: structs.CMD_INFO,
              Cmd.LIST: structs.CMD_LIST, Cmd.SEND: structs.CMD_SEND, Cmd.RECV: structs.CMD_RECV,
              Cmd.NAME_ACQUIRE: structs.CMD, Cmd.NAME_RELEASE: structs.CMD,
              Cmd.MATCH_ADD: structs.CMD_MATCH, Cmd.MATCH_REMOVE: structs.CMD_MATCH,
              Cmd.ENDPOINT_UPDATE: structs.CMD}[cmd]
    body = fixed[: layout.size - 24] + tail
    size = max(0, 24 + len(body) + size_delta)
    data = struct.pack("<QQQ", size, flags, 0) + body
    try:
        run(a.handle, a.caller, cmd, data)
    except KdbusError as exc:
        assert exc.errno > 0
    # Whatever happened, the bus still works for the other connection.
    run(b.handle, b.caller, Cmd.BUS_CREATOR_INFO, structs.CMD_INFO.pack(56, 0, 0, 0, 0, 0, 0))


@FUZZ
@given(header=st.tuples(*(st.integers(0, 2**64 - 1) for _ in range(8))), tail=items(),
       dst_self=st.booleans(), flags=st.sampled_from([0, 1, 2, 4, 5, 7, 8]))
def test_messages_are_staged_or_refused_with_an_errno(
    header: tuple[int, ...], tail: bytes, dst_self: bool, flags: int,
) -> None:
    _, bus, a, _ = fresh()
    size, _, priority, dst, src, ptype, cookie, timeout = header
    dst = a.id if dst_self else dst
    data = struct.pack("<QQqQQQQQ", 64 + len(tail), flags, priority - 2**63, dst, src,
                       ptype or PAYLOAD_DBUS, cookie, timeout) + tail
    msg_address = a.caller.place(data, 4096)
    send = structs.CMD_SEND.pack(56, 0, 0, msg_address, 0, 0, 0)
    try:
        stage_user(data, 0, bus.bloom_size, a.caller.files)
        run(a.handle, a.caller, Cmd.SEND, send)
    except KdbusError as exc:
        assert exc.errno > 0


@FUZZ
@given(data=st.binary(max_size=256), start=st.integers(0, 64))
def test_item_walks_accept_or_refuse_with_an_errno(data: bytes, start: int) -> None:
    accepted = {t: ItemSpec(t, multiple=True)
                for t in ITEM_TYPES[:20]}
    try:
        walk_items(data, min(start, len(data)), accepted)
    except KdbusError as exc:
        assert exc.errno > 0


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuse_requests_parse_or_raise_protocol_error(data: bytes) -> None:
    try:
        parse_request(data)
    except ProtocolError:
        pass


def test_fuzz_targets_reach_the_model() -> None:
    # A control: the generated SEND path does run messages through to a receiver sometimes.
    _, bus, a, b = fresh()
    vec = struct.pack("<QQQQ", 32, Item.PAYLOAD_VEC, 4, BASE + 8192)
    data = struct.pack("<QQqQQQQQ", 64 + 32, 0, 0, b.id, 0, PAYLOAD_DBUS, 1, 0) + vec
    a.caller.place(b"ping", 8192)
    address = a.caller.place(data, 4096)
    run(a.handle, a.caller, Cmd.SEND, structs.CMD_SEND.pack(56, 0, 0, address, 0, 0, 0))
    assert len(b.handle.conn.queue) == 1  # type: ignore[union-attr]
