"""Hostile input, generated: every command struct, message and item stream is either executed or
refused with a KdbusError carrying an errno; nothing else happens (no other exception escapes, the
model stays usable). The same invariant as h11's fuzzing, over kdbusfs's command frame."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

from helpers import (
    BASE,
    CREATOR,
    Conn,
    FakeCaller,
    bus_make_cmd,
    cmd_bytes,
    connect,
    hello_cmd,
    make_bus,
    run,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    HELLO_ACTIVATOR,
    HELLO_MONITOR,
    HELLO_POLICY_HOLDER,
    PAYLOAD_DBUS,
    RECV_DROP,
    Cmd,
    Item,
)
from kdbusfs.abi.items import item, string_item
from kdbusfs.abi.structs import Layout
from kdbusfs.abi.walk import PAYLOAD_RULES, ItemSpec, walk_items
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.message import stage_user
from kdbusfs.errors import KdbusError
from kdbusfs.fuse.codec import ProtocolError, parse_request
from kdbusfs.handle import COMMANDS as COMMAND_TABLE
from kdbusfs.handle import MSG_NEGOTIABLE, Control, Handle, HandleType

ITEM_TYPES = [int(t) for t in Item] + [0, 17, 0x100E, 0x2001, 0x8007, 2**64 - 1]
COMMANDS = [c for c in Cmd if c not in (Cmd.BUS_MAKE, Cmd.HELLO, Cmd.ENDPOINT_MAKE)]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Payload sizes worth trying: every size up to past the largest payload struct (CREDS, 64 bytes) and the
# longest sysname (63 characters and a NUL).
PAYLOAD_SIZES = range(81)
# Sizes around each type's real one, where off-by-some parsers break.
EDGE_SIZES = sorted({max(0, n + d) for rule in PAYLOAD_RULES.values()
                     for n in (rule.exact or 0, rule.minimum) for d in (-8, -2, -1, 0, 1, 2, 8)})


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from(EDGE_SIZES) | st.integers(0, 80))
    fill = draw(st.sampled_from([b"\0", b"\xff", b"a", None]))
    return fill * size if fill is not None else draw(st.binary(min_size=size, max_size=size))


@st.composite
def items(draw: st.DrawFn) -> bytes:
    """A stream of plausible and implausible items: sizes that lie, odd types, random payloads."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        payload = draw(payloads() | st.binary(max_size=48))
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


# -- every item type at every payload size, for every command that takes items ------------------

def plausible(item_type: int, size: int) -> bytes:
    """A payload that looks like the real thing, cut or extended to `size` bytes."""
    if item_type == Item.MAKE_NAME or item_type == Item.CONN_DESCRIPTION:
        text = b"1000-fuzz" + b"x" * 80
    else:
        text = b"org.fuzz." + b"x" * 80
    if PAYLOAD_RULES.get(item_type) is not None and PAYLOAD_RULES[item_type].check is not None:
        return (text[: max(0, size - 1)] + b"\0")[:size]
    # Small non-zero numbers: sizes, ids, fds and flags that parse and then have to be acted on.
    return (struct.pack("<Q", 1) * 11)[:size]


def fills(item_type: int, size: int) -> list[bytes]:
    return [bytes(size), b"\xff" * size, plausible(item_type, size)]


class Sweep:
    """One bus with the handles every command needs, kept usable across thousands of ioctls."""

    def __init__(self) -> None:
        self.domain = Domain()
        self.owner = make_bus(self.domain)
        self.bus = self.domain.buses["1000-test"]
        self.a = connect(self.bus)
        self.b = connect(self.bus)
        self.endpoint_owner = Handle(self.bus.default_endpoint, CREATOR)
        self.endpoint_caller = FakeCaller(CREATOR)
        run(self.endpoint_owner, self.endpoint_caller, Cmd.ENDPOINT_MAKE,
            cmd_bytes(structs.CMD, string_item(Item.MAKE_NAME, "1000-fuzzep")))

    def sender(self) -> Conn:
        """Connection a, made again when a command (BYEBYE) ended it."""
        conn = self.a.handle.conn
        if conn is None or not conn.active:
            self.a = connect(self.bus)
        return self.a

    def drain(self) -> None:
        queue = self.b.handle.conn.queue if self.b.handle.conn else ()
        while queue:
            run(self.b.handle, self.b.caller, Cmd.RECV, cmd_bytes(structs.CMD_RECV, flags=RECV_DROP))


def _with(base: list[bytes], fuzzed: bytes, fuzzed_type: int) -> bytes:
    """The fuzzed item among the valid base items of a command, none of the same type."""
    kept = [b for b in base if struct.unpack_from("<Q", b, 8)[0] != fuzzed_type]
    return b"".join(kept) + fuzzed


def _setup(sweep: Sweep, handle: Handle, caller: FakeCaller, cmd: Cmd, data: bytes) -> None:
    """A setup command on a fresh handle, undone when it succeeded (bus and connection limits)."""
    try:
        run(handle, caller, cmd, data)
    finally:
        if handle.type is not HandleType.NONE:
            handle.release()


Target = Callable[[Sweep, bytes, int], None]


def _bus_make(sweep: Sweep, fuzzed: bytes, fuzzed_type: int) -> None:
    base = [item(Item.BLOOM_PARAMETER, structs.BLOOM_PARAMETER.pack(64, 1)),
            string_item(Item.MAKE_NAME, "1000-fuzzbus")]
    handle, caller = Handle(Control(sweep.domain), CREATOR), FakeCaller(CREATOR)
    _setup(sweep, handle, caller, Cmd.BUS_MAKE, cmd_bytes(structs.CMD, _with(base, fuzzed, fuzzed_type)))


def _endpoint_make(sweep: Sweep, fuzzed: bytes, fuzzed_type: int) -> None:
    base = [string_item(Item.MAKE_NAME, "1000-fuzzep2")]
    handle, caller = Handle(sweep.bus.default_endpoint, CREATOR), FakeCaller(CREATOR)
    _setup(sweep, handle, caller, Cmd.ENDPOINT_MAKE, cmd_bytes(structs.CMD, _with(base, fuzzed, fuzzed_type)))


def _hello(flags: int, base: list[bytes]) -> Target:
    def target(sweep: Sweep, fuzzed: bytes, fuzzed_type: int) -> None:
        handle, caller = Handle(sweep.bus.default_endpoint, CREATOR), FakeCaller(CREATOR)
        _setup(sweep, handle, caller, Cmd.HELLO,
               hello_cmd(flags=flags, items=_with(base, fuzzed, fuzzed_type)))
    return target


def _endpoint_update(sweep: Sweep, fuzzed: bytes, fuzzed_type: int) -> None:
    base = [string_item(Item.NAME, "org.fuzz.ep")]
    run(sweep.endpoint_owner, sweep.endpoint_caller, Cmd.ENDPOINT_UPDATE,
        cmd_bytes(structs.CMD, _with(base, fuzzed, fuzzed_type)))


def _on_connection(cmd: Cmd, layout: Layout, base: list[bytes], **fields: int) -> Target:
    def target(sweep: Sweep, fuzzed: bytes, fuzzed_type: int) -> None:
        a = sweep.sender()
        run(a.handle, a.caller, cmd, cmd_bytes(layout, _with(base, fuzzed, fuzzed_type), **fields))
    return target


def _in_message(sweep: Sweep, fuzzed: bytes, fuzzed_type: int) -> None:
    """The item inside the kdbus_msg of a SEND to b (message items have their own walker)."""
    a = sweep.sender()
    data = structs.MSG.pack(64 + len(fuzzed), 0, 0, sweep.b.id, 0, PAYLOAD_DBUS, 1, 0) + fuzzed
    address = a.caller.place(data, 4096)
    try:
        run(a.handle, a.caller, Cmd.SEND, structs.CMD_SEND.pack(56, 0, 0, address, 0, 0, 0))
    finally:
        sweep.drain()


_NAME = [string_item(Item.NAME, "org.fuzz.name")]
TARGETS: dict[str, tuple[Target, frozenset[int]]] = {
    "BUS_MAKE": (_bus_make, frozenset(COMMAND_TABLE[Cmd.BUS_MAKE].items)),
    "ENDPOINT_MAKE": (_endpoint_make, frozenset(COMMAND_TABLE[Cmd.ENDPOINT_MAKE].items)),
    "ENDPOINT_UPDATE": (_endpoint_update, frozenset(COMMAND_TABLE[Cmd.ENDPOINT_UPDATE].items)),
    "HELLO": (_hello(0, []), frozenset(COMMAND_TABLE[Cmd.HELLO].items)),
    "HELLO activator": (_hello(HELLO_ACTIVATOR, _NAME), frozenset(COMMAND_TABLE[Cmd.HELLO].items)),
    "HELLO policy holder": (_hello(HELLO_POLICY_HOLDER, _NAME), frozenset(COMMAND_TABLE[Cmd.HELLO].items)),
    "HELLO monitor": (_hello(HELLO_MONITOR, []), frozenset(COMMAND_TABLE[Cmd.HELLO].items)),
    "SEND message": (_in_message, frozenset(MSG_NEGOTIABLE) - {Item.NEGOTIATE}),
    **{cmd.name: (_on_connection(cmd, COMMAND_TABLE[cmd].layout, base, **fields),
                  frozenset(COMMAND_TABLE[cmd].items))
       for cmd, base, fields in (
           (Cmd.UPDATE, [], {}), (Cmd.CONN_INFO, [], {}), (Cmd.NAME_ACQUIRE, _NAME, {}),
           (Cmd.NAME_RELEASE, _NAME, {}), (Cmd.MATCH_ADD, [], {"cookie": 1}),
           (Cmd.MATCH_REMOVE, [], {"cookie": 1}), (Cmd.SEND, [], {}), (Cmd.LIST, [], {}),
           (Cmd.RECV, [], {}), (Cmd.FREE, [], {}), (Cmd.BUS_CREATOR_INFO, [], {}), (Cmd.BYEBYE, [], {}))},
}
# Every command is reached (through one target or another).
assert {name.split()[0] for name in TARGETS} >= {c.name for c in Cmd}, "a command has no fuzz target"


def _wrong_size(item_type: int, size: int) -> bool:
    rule = PAYLOAD_RULES.get(item_type)
    if rule is None:
        return False
    if rule.exact is not None:
        return size != rule.exact
    return size < rule.minimum or size % rule.multiple != 0


def test_every_item_at_every_payload_size_is_executed_or_refused_with_an_errno() -> None:
    """Every command x every item type x payload sizes 0..80 (three fills each): the command runs or
    fails with a KdbusError; an accepted type at a size its rule refuses fails with EINVAL."""
    sweep = Sweep()
    outcomes: dict[str, int] = {}
    for name, (target, accepted) in TARGETS.items():
        for item_type in ITEM_TYPES:
            for size in PAYLOAD_SIZES:
                for payload in fills(item_type, size):
                    fuzzed = struct.pack("<QQ", 16 + size, item_type) + payload
                    fuzzed += bytes(-len(fuzzed) % 8)
                    try:
                        target(sweep, fuzzed, item_type)
                        outcome = "ok"
                    except KdbusError as exc:
                        assert exc.errno in errno.errorcode, (name, item_type, size, exc)
                        if item_type in accepted and _wrong_size(item_type, size):
                            assert exc.errno == errno.EINVAL, (name, Item(item_type).name, size, exc)
                        outcome = errno.errorcode[exc.errno]
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # The bus still serves an uninvolved connection after each command's sweep.
        run(sweep.b.handle, sweep.b.caller, Cmd.BUS_CREATOR_INFO, cmd_bytes(structs.CMD_INFO))
    # A control that the sweep went past the item checks: some commands ran, for every target.
    assert outcomes.get("ok", 0) > len(TARGETS) and outcomes["EINVAL"] > 0, outcomes


@FUZZ
@given(cmd=st.sampled_from([Cmd.BUS_MAKE, Cmd.ENDPOINT_MAKE, Cmd.HELLO]),
       flags=st.sampled_from([0, 1, 2, 4, 8, 3, 2**63]) | st.integers(0, 2**64 - 1), tail=items(),
       with_base=st.booleans())
def test_setup_commands_execute_or_refuse_with_an_errno(
    cmd: Cmd, flags: int, tail: bytes, with_base: bool,
) -> None:
    domain = Domain()
    make_bus(domain)
    bus = domain.buses["1000-test"]
    caller = FakeCaller(CREATOR)
    if cmd == Cmd.BUS_MAKE:
        handle = Handle(Control(domain), CREATOR)
        data = bus_make_cmd("1000-fuzz" if with_base else None, flags=flags, with_bloom=with_base, extra=tail)
    elif cmd == Cmd.ENDPOINT_MAKE:
        handle = Handle(bus.default_endpoint, CREATOR)
        base = string_item(Item.MAKE_NAME, "1000-fuzzep") if with_base else b""
        data = cmd_bytes(structs.CMD, base + tail, flags=flags)
    else:
        handle = Handle(bus.default_endpoint, CREATOR)
        data = hello_cmd(flags=flags, items=(string_item(Item.NAME, "org.fuzz") if with_base else b"") + tail)
    try:
        run(handle, caller, cmd, data)
    except KdbusError as exc:
        assert exc.errno > 0
    # Whatever happened, the bus still takes a connection.
    connect(bus)
