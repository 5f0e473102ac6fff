"""kdbusfs.handle.ioctl() against KDBUS-SPEC.md §1.5, §2.2-2.12 and §3, driven through a fake caller."""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest
from helpers import (
    BASE,
    BUS_NAME,
    POOL_SIZE,
    STRANGER,
    U64,
    Conn,
    FakeCaller,
    bloom_item,
    bus_make_cmd,
    cmd_bytes,
    connect,
    control,
    hello_cmd,
    hello_handle,
    make_bus,
    negotiate_item,
    raises_errno,
    run,
)

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    ATTACH_ALL,
    ATTACH_ANY,
    FLAG_NEGOTIATE,
    HELLO_ACCEPT_FD,
    HELLO_ACTIVATOR,
    HELLO_MONITOR,
    HELLO_POLICY_HOLDER,
    LIST_NAMES,
    LIST_UNIQUE,
    MAKE_ACCESS_GROUP,
    MAKE_ACCESS_WORLD,
    Attach,
    Cmd,
    Item,
)
from kdbusfs.abi.items import item, string_item, u64_item
from kdbusfs.abi.structs import Layout
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.connection import Kind
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.metadata import Creds
from kdbusfs.errors import KdbusError
from kdbusfs.handle import HandleType, ioctl
from kdbusfs.limits import USER_MAX_BUSES, USER_MAX_CONN

GARBAGE = 0x5A5A_5A5A_5A5A_5A5A
RETURN_FLAGS_AT = BASE + 16
FLAGS_AT = BASE + 8


@pytest.fixture
def domain() -> Domain:
    return Domain()


@pytest.fixture
def bus(domain: Domain) -> Bus:
    owner = make_bus(domain)
    assert owner.bus is not None
    return owner.bus


# -- BUS_MAKE (§2.3) ----------------------------------------------------------------------------

def test_bus_make_creates_bus_and_owner_handle(domain: Domain) -> None:
    handle, caller = control(domain)
    out = run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd())
    assert out == b""
    assert handle.type is HandleType.BUS_OWNER
    assert domain.buses[BUS_NAME] is handle.bus
    bus = domain.buses[BUS_NAME]
    assert (bus.name, bus.uid, bus.gid, bus.bloom_size, bus.bloom_n_hash) == (BUS_NAME, 1000, 1000, 64, 1)
    assert list(bus.endpoints) == ["bus"]


def test_bus_make_default_modes(bus: Bus) -> None:
    assert bus.mode == 0o500
    assert bus.default_endpoint.mode == 0o600


def test_bus_make_access_world_modes(domain: Domain) -> None:
    bus = make_bus(domain, flags=MAKE_ACCESS_WORLD).bus
    assert bus is not None
    assert bus.mode == 0o555
    assert bus.default_endpoint.mode == 0o666


def test_bus_make_access_group_modes(domain: Domain) -> None:
    bus = make_bus(domain, flags=MAKE_ACCESS_GROUP).bus
    assert bus is not None
    assert bus.mode == 0o550
    assert bus.default_endpoint.mode == 0o660


def test_bus_flags_are_the_ioctl_flags(domain: Domain) -> None:
    bus = make_bus(domain, flags=MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD).bus
    assert bus is not None
    assert bus.bus_flags == MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD


@pytest.mark.parametrize("name", ["test", "1001-test", "1000test", "10000-test", "0-test"])
def test_bus_name_without_euid_prefix_is_einval(domain: Domain, name: str) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(name))
    assert domain.buses == {}
    assert handle.type is HandleType.NONE


def test_bus_name_with_bad_character_is_einval(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd("1000-blah-"))


def test_bus_name_of_64_chars_is_enametoolong(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.ENAMETOOLONG):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd("1000-" + "x" * 59))


@pytest.mark.parametrize("bloom_size", [0, 7, 12, 4097, 4104])
def test_bad_bloom_size_is_einval(domain: Domain, bloom_size: int) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(bloom_size=bloom_size))
    assert domain.buses == {}


@pytest.mark.parametrize("bloom_size", [8, 4096])
def test_bloom_size_bounds_are_accepted(domain: Domain, bloom_size: int) -> None:
    handle, caller = control(domain)
    run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(bloom_size=bloom_size))
    assert domain.buses[BUS_NAME].bloom_size == bloom_size


def test_bloom_n_hash_zero_is_einval(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(n_hash=0))


def test_missing_make_name_is_einval(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(name=None))
    assert handle.type is HandleType.NONE


def test_missing_bloom_parameter_is_einval(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(with_bloom=False))
    assert domain.buses == {}


def test_duplicate_make_name_is_einval(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(extra=string_item(Item.MAKE_NAME, "1000-other")))


def test_unaccepted_item_is_einval(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(extra=string_item(Item.NAME, "a.b")))


def test_same_bus_name_twice_is_eexist(domain: Domain) -> None:
    make_bus(domain)
    handle, caller = control(domain)
    with raises_errno(errno.EEXIST):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd())
    assert handle.type is HandleType.NONE


def test_seventeenth_bus_of_one_uid_is_emfile(domain: Domain) -> None:
    for i in range(USER_MAX_BUSES):
        make_bus(domain, name=f"1000-bus{i}")
    handle, caller = control(domain)
    with raises_errno(errno.EMFILE):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd("1000-one-too-many"))
    assert len(domain.buses) == 16


def test_bus_limit_is_per_uid(domain: Domain) -> None:
    for i in range(USER_MAX_BUSES):
        make_bus(domain, name=f"1000-bus{i}")
    make_bus(domain, STRANGER, name="1001-mine")
    assert "1001-mine" in domain.buses


def test_bus_limit_counts_the_real_uid(domain: Domain) -> None:
    # Real uid 1000 acting with euid 1002: its buses carry the euid prefix but count for uid 1000.
    setuid = Creds(4242, 4242, 1, 1000, 1002, 1002, 1002, 1000, 1000, 1000, 1000)
    for i in range(USER_MAX_BUSES):
        make_bus(domain, setuid, name=f"1002-bus{i}")
    handle, caller = control(domain)
    with raises_errno(errno.EMFILE):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd())
    assert domain.buses["1002-bus0"].uid == 1002


def test_bus_make_on_shut_down_domain_is_eshutdown(domain: Domain) -> None:
    handle, caller = control(domain)
    domain.shutdown()
    with raises_errno(errno.ESHUTDOWN):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd())


def test_bus_id128_is_a_random_v4_uuid(domain: Domain) -> None:
    first, second = make_bus(domain).bus, make_bus(domain, name="1000-two").bus
    assert first is not None and second is not None
    assert first.id128 != second.id128
    for bus in (first, second):
        assert len(bus.id128) == 16
        assert bus.id128[6] >> 4 == 4           # version 4
        assert bus.id128[8] & 0xC0 == 0x80      # RFC 4122 variant


def test_closing_a_bus_frees_its_slot(domain: Domain) -> None:
    owners = [make_bus(domain, name=f"1000-bus{i}") for i in range(USER_MAX_BUSES)]
    owners[0].release()
    make_bus(domain, name="1000-again")
    assert "1000-again" in domain.buses


def test_second_bus_make_on_same_handle_is_ebadfd(domain: Domain) -> None:
    handle, caller = control(domain)
    run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd())
    with raises_errno(errno.EBADFD):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd("1000-second"))
    assert list(domain.buses) == [BUS_NAME]


def test_bus_make_on_endpoint_handle_is_ebadfd(bus: Bus) -> None:
    handle, caller = hello_handle(bus)
    with raises_errno(errno.EBADFD):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd("1000-other"))


def test_hello_on_control_handle_is_ebadfd(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EBADFD):
        run(handle, caller, Cmd.HELLO, hello_cmd())


def test_bus_make_with_fuse_in_data_reads_items_from_memory(domain: Domain) -> None:
    # A restricted FUSE ioctl delivers _IOC_SIZE (24) bytes; the items come from caller memory.
    handle, caller = control(domain)
    data = bus_make_cmd()
    address = caller.place(data)
    ioctl(handle, Cmd.BUS_MAKE, address, data[:24], caller)
    assert handle.type is HandleType.BUS_OWNER


def test_bus_make_owner_attach_mask(domain: Domain) -> None:
    handle, caller = control(domain)
    run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(extra=u64_item(Item.ATTACH_FLAGS_SEND, ATTACH_ANY)))
    assert domain.buses[BUS_NAME].creator_attach == ATTACH_ALL


def test_bus_make_bad_owner_attach_mask_is_einval(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(extra=u64_item(Item.ATTACH_FLAGS_SEND, 1 << 14)))


# -- the generic frame (§2.2) -------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [0xDEADBEEF, 0x40189599, 0, Cmd.BUS_MAKE | 1 << 16])
def test_unknown_ioctl_is_enotty(domain: Domain, cmd: int) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.ENOTTY):
        run(handle, caller, cmd, bus_make_cmd())


@pytest.mark.parametrize("misalign", [1, 4, 7])
def test_unaligned_address_is_efault(domain: Domain, misalign: int) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EFAULT):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(), offset=misalign)
    assert domain.buses == {}


def test_unmapped_address_is_efault(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EFAULT):
        ioctl(handle, Cmd.BUS_MAKE, BASE - 4096, b"", caller)


def test_items_past_mapped_memory_are_efault(domain: Domain) -> None:
    handle, caller = control(domain)
    data = bus_make_cmd()
    offset = len(caller.memory) - 24  # only the fixed part is mapped
    with raises_errno(errno.EFAULT):
        run(handle, caller, Cmd.BUS_MAKE, data[:24], offset=offset)


@pytest.mark.parametrize("size", [0, 8, 16, 23])
def test_size_below_fixed_part_is_einval(domain: Domain, size: int) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, struct.pack("<QQQ", size, 0, 0))


@pytest.mark.parametrize("size", [32769, 40000, 1 << 40])
def test_size_above_32k_is_emsgsize(domain: Domain, size: int) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EMSGSIZE):
        run(handle, caller, Cmd.BUS_MAKE, struct.pack("<QQQ", size, 0, 0))


def test_size_of_exactly_32k_is_accepted(domain: Domain) -> None:
    handle, caller = control(domain)
    items = bloom_item() + string_item(Item.MAKE_NAME, BUS_NAME)
    filler = (32768 - 24 - len(items) - 16) // 8
    data = cmd_bytes(structs.CMD, items + negotiate_item(*[0] * filler))
    assert len(data) == 32768
    run(handle, caller, Cmd.BUS_MAKE, data)
    assert BUS_NAME in domain.buses


@pytest.mark.parametrize("flag", [1 << 2, 1 << 31, 1 << 62])
def test_unknown_flag_is_einval(domain: Domain, flag: int) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(flags=flag))
    assert domain.buses == {}


def test_negotiate_flag_writes_allowed_flags_and_makes_nothing(domain: Domain) -> None:
    handle, caller = control(domain)
    out = run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(flags=FLAG_NEGOTIATE))
    assert out == b""
    assert caller.u64(FLAGS_AT) == MAKE_ACCESS_GROUP | MAKE_ACCESS_WORLD
    assert domain.buses == {}
    assert handle.type is HandleType.NONE


def test_negotiate_skips_mandatory_items(domain: Domain) -> None:
    handle, caller = control(domain)
    run(handle, caller, Cmd.BUS_MAKE, cmd_bytes(structs.CMD, flags=FLAG_NEGOTIATE))
    assert caller.u64(FLAGS_AT) == 0x3


def test_handle_stays_usable_after_negotiation(domain: Domain) -> None:
    handle, caller = control(domain)
    run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(flags=FLAG_NEGOTIATE))
    run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd())
    assert handle.type is HandleType.BUS_OWNER


def test_negotiation_still_validates_items(domain: Domain) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(flags=FLAG_NEGOTIATE, bloom_size=8,
                                                       extra=item(Item.NEGOTIATE, bytes(4))))


NEGOTIATED = [Item.MAKE_NAME, Item.PAYLOAD_VEC, Item.BLOOM_PARAMETER, 0x7777, Item.ATTACH_FLAGS_SEND,
              Item.CREDS, Item.NEGOTIATE]
SUPPORTED = [Item.MAKE_NAME, 0, Item.BLOOM_PARAMETER, 0, Item.ATTACH_FLAGS_SEND, 0, Item.NEGOTIATE]


def negotiated_types(caller: FakeCaller, data: bytes) -> list[int]:
    start = data.index(negotiate_item(*NEGOTIATED)) + 16
    return [caller.u64(BASE + start + 8 * i) for i in range(len(NEGOTIATED))]


def test_negotiate_item_zeroes_unsupported_types(domain: Domain) -> None:
    handle, caller = control(domain)
    data = cmd_bytes(structs.CMD, negotiate_item(*NEGOTIATED), flags=FLAG_NEGOTIATE)
    run(handle, caller, Cmd.BUS_MAKE, data)
    assert negotiated_types(caller, data) == SUPPORTED
    assert handle.type is HandleType.NONE


def test_negotiate_item_without_flag_answers_and_runs(domain: Domain) -> None:
    handle, caller = control(domain)
    data = bus_make_cmd(extra=negotiate_item(*NEGOTIATED))
    run(handle, caller, Cmd.BUS_MAKE, data)
    assert negotiated_types(caller, data) == SUPPORTED
    assert handle.type is HandleType.BUS_OWNER


def test_return_flags_zeroed_after_success(domain: Domain) -> None:
    handle, caller = control(domain)
    run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(return_flags=GARBAGE))
    assert caller.u64(RETURN_FLAGS_AT) == 0


@pytest.mark.parametrize("bad", [
    {"bloom_size": 7},                                # fails in the command
    {"flags": 1 << 5},                                # fails on flags
    {"extra": item(Item.NAME, b"no-nul")},            # fails on items
    {"name": None},                                   # fails on a missing item
    {"name": "1001-test"},                            # fails on the name prefix
], ids=["bloom", "flags", "items", "mandatory", "prefix"])
def test_return_flags_zeroed_after_failure(domain: Domain, bad: dict[str, Any]) -> None:
    handle, caller = control(domain)
    with pytest.raises(KdbusError):
        run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(return_flags=GARBAGE, **bad))
    assert caller.u64(RETURN_FLAGS_AT) == 0


def test_return_flags_left_alone_on_negotiation(domain: Domain) -> None:
    handle, caller = control(domain)
    run(handle, caller, Cmd.BUS_MAKE, bus_make_cmd(flags=FLAG_NEGOTIATE, return_flags=GARBAGE))
    assert caller.u64(RETURN_FLAGS_AT) == GARBAGE


# -- HELLO (§2.6, §3) ---------------------------------------------------------------------------

def test_ids_come_from_the_domain_wide_counter(domain: Domain) -> None:
    bus = make_bus(domain).bus
    assert bus is not None and bus.id == 1
    first = connect(bus)
    second = connect(bus)
    other_bus = make_bus(domain, name="1000-other").bus
    assert other_bus is not None
    third = connect(other_bus)
    assert (first.id, second.id, other_bus.id, third.id) == (2, 3, 4, 5)


def test_hello_sets_up_a_connection_handle(bus: Bus) -> None:
    conn = connect(bus, flags=HELLO_ACCEPT_FD)
    handle = conn.handle
    assert handle.type is HandleType.CONNECTED
    assert handle.conn is not None
    assert handle.conn.id == conn.id
    assert handle.conn.kind is Kind.ORDINARY
    assert bus.default_endpoint.connections[conn.id] is handle.conn
    assert handle.conn.pool.size == POOL_SIZE


def test_hello_returns_the_whole_96_byte_struct(domain: Domain) -> None:
    bus = make_bus(domain, flags=MAKE_ACCESS_WORLD).bus
    assert bus is not None
    handle, caller = hello_handle(bus)
    out = run(handle, caller, Cmd.HELLO, hello_cmd(flags=HELLO_ACCEPT_FD, attach_send=3, attach_recv=5,
                                                   return_flags=GARBAGE))
    assert len(out) == 96
    reply = structs.CMD_HELLO.unpack(out)
    assert reply.size == 96
    assert reply.flags == HELLO_ACCEPT_FD
    assert reply.return_flags == 0
    assert (reply.attach_flags_send, reply.attach_flags_recv) == (3, 5)
    assert reply.bus_flags == MAKE_ACCESS_WORLD
    assert reply.id == 2
    assert reply.pool_size == POOL_SIZE
    assert reply.id128 == bus.id128
    assert len(bus.id128) == 16


def test_hello_publishes_bloom_parameter_item_in_pool(bus: Bus) -> None:
    conn = connect(bus)
    assert conn.handle.conn is not None
    pool = conn.handle.conn.pool
    offset, size = conn.reply.offset, conn.reply.items_size
    assert size == 32
    assert pool.buffer[offset : offset + size] == b"".join([
        struct.pack("<Q", 32),                          # item size
        struct.pack("<Q", Item.BLOOM_PARAMETER),        # item type
        struct.pack("<Q", 64),                          # bloom size
        struct.pack("<Q", 1),                           # n_hash
    ])


def test_hello_bloom_slice_must_be_freed(bus: Bus) -> None:
    conn = connect(bus)
    run(conn.handle, conn.caller, Cmd.FREE, cmd_bytes(structs.CMD_FREE, offset=conn.reply.offset))
    with raises_errno(errno.ENXIO):
        run(conn.handle, conn.caller, Cmd.FREE, cmd_bytes(structs.CMD_FREE, offset=conn.reply.offset))


@pytest.mark.parametrize("pool_size", [0, 8, 4095, 4097, 4096 * 3 + 512])
def test_bad_pool_size_is_einval(bus: Bus, pool_size: int) -> None:
    handle, caller = hello_handle(bus)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.HELLO, hello_cmd(pool_size=pool_size))
    assert handle.type is HandleType.NONE
    assert bus.default_endpoint.connections == {}


def test_pool_of_one_page_is_accepted(bus: Bus) -> None:
    assert connect(bus, pool_size=4096).reply.pool_size == 4096


@pytest.mark.parametrize("field", ["attach_send", "attach_recv"])
@pytest.mark.parametrize("value", [1 << 14, 1 << 63, ATTACH_ALL | 1 << 20])
def test_unknown_attach_flags_are_einval(bus: Bus, field: str, value: int) -> None:
    handle, caller = hello_handle(bus)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.HELLO, hello_cmd(**{field: value}))


def test_attach_flags_all_ones_mean_all(bus: Bus) -> None:
    conn = connect(bus, attach_send=ATTACH_ANY, attach_recv=ATTACH_ANY)
    assert conn.handle.conn is not None
    assert conn.handle.conn.attach_flags_send == ATTACH_ALL
    assert conn.handle.conn.attach_flags_recv == ATTACH_ALL


@pytest.mark.parametrize("flags", [1 << 4, 1 << 40])
def test_unknown_hello_flag_is_einval(bus: Bus, flags: int) -> None:
    handle, caller = hello_handle(bus)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.HELLO, hello_cmd(flags=flags))


NAME = string_item(Item.NAME, "org.example.service")


@pytest.mark.parametrize(("flags", "items"), [
    (HELLO_MONITOR, b""),
    (HELLO_ACTIVATOR, NAME),
    (HELLO_POLICY_HOLDER, NAME),
], ids=["monitor", "activator", "policy-holder"])
def test_special_connection_by_non_owner_is_eperm(bus: Bus, flags: int, items: bytes) -> None:
    handle, caller = hello_handle(bus, STRANGER)
    with raises_errno(errno.EPERM):
        run(handle, caller, Cmd.HELLO, hello_cmd(flags=flags, items=items))
    assert handle.type is HandleType.NONE


def test_monitor_by_bus_owner_is_allowed(bus: Bus) -> None:
    conn = connect(bus, flags=HELLO_MONITOR)
    assert conn.handle.conn is not None
    assert conn.handle.conn.kind is Kind.MONITOR


@pytest.mark.parametrize("flags", [
    HELLO_MONITOR | HELLO_ACTIVATOR,
    HELLO_MONITOR | HELLO_POLICY_HOLDER,
    HELLO_ACTIVATOR | HELLO_POLICY_HOLDER,
    HELLO_MONITOR | HELLO_ACTIVATOR | HELLO_POLICY_HOLDER,
])
def test_two_special_kinds_are_einval(bus: Bus, flags: int) -> None:
    handle, caller = hello_handle(bus)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.HELLO, hello_cmd(flags=flags, items=NAME))


@pytest.mark.parametrize("flags", [0, HELLO_ACCEPT_FD, HELLO_MONITOR])
def test_name_on_ordinary_or_monitor_connection_is_einval(bus: Bus, flags: int) -> None:
    handle, caller = hello_handle(bus)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.HELLO, hello_cmd(flags=flags, items=NAME))


@pytest.mark.parametrize("flags", [HELLO_ACTIVATOR, HELLO_POLICY_HOLDER])
def test_activator_and_policy_holder_need_a_name(bus: Bus, flags: int) -> None:
    handle, caller = hello_handle(bus)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.HELLO, hello_cmd(flags=flags))


def test_hello_return_flags_zeroed_in_memory_after_failure(bus: Bus) -> None:
    handle, caller = hello_handle(bus)
    with raises_errno(errno.EINVAL):
        run(handle, caller, Cmd.HELLO, hello_cmd(pool_size=0, return_flags=GARBAGE))
    assert caller.u64(RETURN_FLAGS_AT) == 0


def test_second_hello_on_same_handle_is_ebadfd(bus: Bus) -> None:
    conn = connect(bus)
    with raises_errno(errno.EBADFD):
        run(conn.handle, conn.caller, Cmd.HELLO, hello_cmd())


def test_hello_negotiation_returns_allowed_flags_and_connects_nothing(bus: Bus) -> None:
    handle, caller = hello_handle(bus)
    out = run(handle, caller, Cmd.HELLO, hello_cmd(flags=FLAG_NEGOTIATE))
    assert structs.CMD_HELLO.unpack(out).flags == 0xF
    assert caller.u64(FLAGS_AT) == 0xF
    assert handle.type is HandleType.NONE
    assert bus.default_endpoint.connections == {}


def test_hello_description_is_recorded(bus: Bus) -> None:
    conn = connect(bus, items=string_item(Item.CONN_DESCRIPTION, "my-conn"))
    assert conn.handle.conn is not None
    assert conn.handle.conn.description == "my-conn"


# The bus creator as a task with a comm, and another privileged (CAP_IPC_OWNER) task.
REAL = Creds(4242, 4243, 1, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, comm="tester")
CAP_IPC_OWNER_TASK = Creds(5000, 5000, 1, 1001, 1001, 1001, 1001, 1001, 1001, 1001, 1001,
                           cap_effective=1 << 15)
FAKED_CREDS = item(Item.CREDS, structs.CREDS.pack(2000, 2001, 2002, 2003, 3000, 3001, 3002, 3003))
PROCESS_ITEMS = Attach.CREDS | Attach.PIDS | Attach.PID_COMM


def test_faked_metadata_by_non_owner_is_eperm(bus: Bus) -> None:
    handle, caller = hello_handle(bus, STRANGER)
    with raises_errno(errno.EPERM):
        run(handle, caller, Cmd.HELLO, hello_cmd(items=FAKED_CREDS))


def test_conn_info_reports_faked_creds(bus: Bus) -> None:
    asker = connect(bus)
    faker = connect(bus, REAL, attach_send=ATTACH_ANY, items=FAKED_CREDS)
    out = run(asker.handle, asker.caller, Cmd.CONN_INFO, info_cmd(id=faker.id, attach_flags=Attach.CREDS))
    assert published(asker, out) == structs.INFO.pack(24 + len(FAKED_CREDS), faker.id, 0) + FAKED_CREDS


def test_conn_info_shows_real_process_items_without_faking(bus: Bus) -> None:
    asker = connect(bus)
    peer = connect(bus, REAL, attach_send=ATTACH_ANY)
    out = run(asker.handle, asker.caller, Cmd.CONN_INFO, info_cmd(id=peer.id, attach_flags=PROCESS_ITEMS))
    items = published(asker, out)[24:]
    assert item(Item.PIDS, structs.PIDS.pack(4242, 4243, 1)) in items
    assert string_item(Item.PID_COMM, "tester") in items


def test_faked_creds_hide_all_other_process_items(bus: Bus) -> None:
    asker = connect(bus)
    faker = connect(bus, REAL, attach_send=ATTACH_ANY, items=FAKED_CREDS)
    out = run(asker.handle, asker.caller, Cmd.CONN_INFO, info_cmd(id=faker.id, attach_flags=PROCESS_ITEMS))
    assert published(asker, out) == structs.INFO.pack(24 + len(FAKED_CREDS), faker.id, 0) + FAKED_CREDS


def test_faked_pids_hide_real_creds(bus: Bus) -> None:
    asker = connect(bus)
    fake_pids = item(Item.PIDS, structs.PIDS.pack(7, 8, 9))
    faker = connect(bus, REAL, attach_send=ATTACH_ANY, items=fake_pids)
    out = run(asker.handle, asker.caller, Cmd.CONN_INFO, info_cmd(id=faker.id, attach_flags=PROCESS_ITEMS))
    assert published(asker, out) == structs.INFO.pack(24 + len(fake_pids), faker.id, 0) + fake_pids


def test_connection_is_charged_to_the_openers_real_uid(bus: Bus, domain: Domain) -> None:
    connect(bus, STRANGER)
    assert domain.users[1001].connections == 1


def test_privileged_faked_creds_are_charged_to_the_faked_uid(bus: Bus, domain: Domain) -> None:
    connect(bus, CAP_IPC_OWNER_TASK, items=FAKED_CREDS)
    assert domain.user(2000).connections == 1
    assert domain.user(1001).connections == 0


def test_hello_after_bus_close_is_eshutdown(domain: Domain) -> None:
    owner = make_bus(domain)
    assert owner.bus is not None
    handle, caller = hello_handle(owner.bus)
    owner.release()
    with raises_errno(errno.ESHUTDOWN):
        run(handle, caller, Cmd.HELLO, hello_cmd())


# -- connection commands (§2.7-2.12) ------------------------------------------------------------

CONNECTION_COMMANDS = {
    Cmd.UPDATE: cmd_bytes(structs.CMD),
    Cmd.BYEBYE: cmd_bytes(structs.CMD),
    Cmd.FREE: cmd_bytes(structs.CMD_FREE, offset=POOL_SIZE),
    Cmd.CONN_INFO: cmd_bytes(structs.CMD_INFO, id=2),
    Cmd.BUS_CREATOR_INFO: cmd_bytes(structs.CMD_INFO),
    Cmd.LIST: cmd_bytes(structs.CMD_LIST, flags=LIST_UNIQUE),
}
COMMAND_IDS = [c.name for c in CONNECTION_COMMANDS]


@pytest.mark.parametrize("cmd", CONNECTION_COMMANDS, ids=COMMAND_IDS)
def test_connection_command_on_fresh_endpoint_handle_is_ebadfd(bus: Bus, cmd: Cmd) -> None:
    handle, caller = hello_handle(bus)
    with raises_errno(errno.EBADFD):
        run(handle, caller, cmd, CONNECTION_COMMANDS[cmd])


@pytest.mark.parametrize("cmd", CONNECTION_COMMANDS, ids=COMMAND_IDS)
def test_connection_command_on_control_handle_is_ebadfd(domain: Domain, cmd: Cmd) -> None:
    handle, caller = control(domain)
    with raises_errno(errno.EBADFD):
        run(handle, caller, cmd, CONNECTION_COMMANDS[cmd])


@pytest.mark.parametrize("cmd", CONNECTION_COMMANDS, ids=COMMAND_IDS)
def test_connection_command_on_bus_owner_handle_is_ebadfd(domain: Domain, cmd: Cmd) -> None:
    owner = make_bus(domain)
    with raises_errno(errno.EBADFD):
        run(owner, FakeCaller(), cmd, CONNECTION_COMMANDS[cmd])


def test_byebye_disconnects(bus: Bus, domain: Domain) -> None:
    conn = connect(bus)
    connection = conn.handle.conn
    assert connection is not None
    run(conn.handle, conn.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    assert not connection.active
    assert connection in domain.woken
    assert conn.id not in bus.default_endpoint.connections


@pytest.mark.parametrize("cmd", CONNECTION_COMMANDS, ids=COMMAND_IDS)
def test_any_command_after_byebye_is_econnreset(bus: Bus, cmd: Cmd) -> None:
    conn = connect(bus)
    run(conn.handle, conn.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    with raises_errno(errno.ECONNRESET):
        run(conn.handle, conn.caller, cmd, CONNECTION_COMMANDS[cmd])


NEGOTIATE_ANSWERS = {Cmd.UPDATE: 0, Cmd.BYEBYE: 0, Cmd.FREE: 0, Cmd.CONN_INFO: 0, Cmd.BUS_CREATOR_INFO: 0,
                     Cmd.LIST: 0xF}


@pytest.mark.parametrize("cmd", CONNECTION_COMMANDS, ids=COMMAND_IDS)
def test_connection_command_negotiation_answers_allowed_flags(bus: Bus, cmd: Cmd) -> None:
    conn = connect(bus)
    data = bytearray(CONNECTION_COMMANDS[cmd])
    U64.pack_into(data, 8, FLAG_NEGOTIATE)
    out = run(conn.handle, conn.caller, cmd, bytes(data))
    assert conn.caller.u64(FLAGS_AT) == NEGOTIATE_ANSWERS[cmd]
    if out:
        assert U64.unpack_from(out, 8)[0] == NEGOTIATE_ANSWERS[cmd]
    assert conn.handle.conn is not None and conn.handle.conn.active


def test_negotiation_does_not_bypass_the_connection_kind_check(bus: Bus) -> None:
    conn = connect(bus, flags=HELLO_MONITOR)
    with raises_errno(errno.EOPNOTSUPP):
        run(conn.handle, conn.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD, flags=FLAG_NEGOTIATE))


def test_second_byebye_is_econnreset(bus: Bus) -> None:
    conn = connect(bus)
    run(conn.handle, conn.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    with raises_errno(errno.ECONNRESET):
        run(conn.handle, conn.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))


def test_connection_limit_per_user_is_emfile(bus: Bus, domain: Domain) -> None:
    conns = [connect(bus, STRANGER, pool_size=4096) for _ in range(USER_MAX_CONN)]
    handle, caller = hello_handle(bus, STRANGER)
    with raises_errno(errno.EMFILE):
        run(handle, caller, Cmd.HELLO, hello_cmd(pool_size=4096))
    run(conns[0].handle, conns[0].caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))
    run(handle, caller, Cmd.HELLO, hello_cmd(pool_size=4096))
    assert domain.users[1001].connections == USER_MAX_CONN


def test_byebye_of_monitor_is_eopnotsupp(bus: Bus) -> None:
    conn = connect(bus, flags=HELLO_MONITOR)
    with raises_errno(errno.EOPNOTSUPP):
        run(conn.handle, conn.caller, Cmd.BYEBYE, cmd_bytes(structs.CMD))


@pytest.mark.parametrize("offset", [8, 24, 4096, POOL_SIZE + 8])
def test_free_of_bad_offset_is_enxio(bus: Bus, offset: int) -> None:
    conn = connect(bus)
    with raises_errno(errno.ENXIO):
        run(conn.handle, conn.caller, Cmd.FREE, cmd_bytes(structs.CMD_FREE, offset=offset))


def test_free_of_pool_size_is_a_noop(bus: Bus) -> None:
    conn = connect(bus)
    assert run(conn.handle, conn.caller, Cmd.FREE, cmd_bytes(structs.CMD_FREE, offset=POOL_SIZE)) == b""


def info_cmd(**fields: int) -> bytes:
    return cmd_bytes(structs.CMD_INFO, **fields)


def test_conn_info_id_zero_is_einval(bus: Bus) -> None:
    conn = connect(bus)
    with raises_errno(errno.EINVAL):
        run(conn.handle, conn.caller, Cmd.CONN_INFO, info_cmd(id=0))


@pytest.mark.parametrize("target", [1, 99, 2**64 - 1])  # 1 is the bus, not a connection
def test_conn_info_unknown_id_is_enxio(bus: Bus, target: int) -> None:
    conn = connect(bus)
    with raises_errno(errno.ENXIO):
        run(conn.handle, conn.caller, Cmd.CONN_INFO, info_cmd(id=target))


def test_conn_info_by_unowned_name_is_esrch(bus: Bus) -> None:
    conn = connect(bus)
    data = cmd_bytes(structs.CMD_INFO, string_item(Item.NAME, "org.example.nobody"))
    with raises_errno(errno.ESRCH):
        run(conn.handle, conn.caller, Cmd.CONN_INFO, data)


def published(conn: Conn, out: bytes, layout: Layout = structs.CMD_INFO) -> bytes:
    """The pool bytes a CONN_INFO / BUS_CREATOR_INFO / LIST reply points at."""
    reply = layout.unpack(out)
    assert conn.handle.conn is not None
    size = reply.list_size if layout is structs.CMD_LIST else reply.info_size
    return bytes(conn.handle.conn.pool.buffer[reply.offset : reply.offset + size])


def test_conn_info_of_peer(bus: Bus) -> None:
    asker = connect(bus)
    peer = connect(bus, flags=HELLO_ACCEPT_FD)
    out = run(asker.handle, asker.caller, Cmd.CONN_INFO, info_cmd(id=peer.id, return_flags=GARBAGE))
    assert len(out) == 56
    reply = structs.CMD_INFO.unpack(out)
    assert reply.return_flags == 0
    assert reply.info_size == 24
    assert published(asker, out) == structs.INFO.pack(24, peer.id, HELLO_ACCEPT_FD)


def test_conn_info_metadata_is_intersected_with_peer_send_mask(bus: Bus) -> None:
    asker = connect(bus)
    peer = connect(bus, attach_send=Attach.CREDS)
    out = run(asker.handle, asker.caller, Cmd.CONN_INFO,
              info_cmd(id=peer.id, attach_flags=Attach.CREDS | Attach.PIDS))
    record = published(asker, out)
    creds = item(Item.CREDS, structs.CREDS.pack(1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000))
    assert record == structs.INFO.pack(24 + len(creds), peer.id, 0) + creds


def test_conn_info_bad_attach_flags_is_einval(bus: Bus) -> None:
    conn = connect(bus)
    with raises_errno(errno.EINVAL):
        run(conn.handle, conn.caller, Cmd.CONN_INFO, info_cmd(id=conn.id, attach_flags=1 << 14))


def test_bus_creator_info(domain: Domain) -> None:
    bus = make_bus(domain, flags=MAKE_ACCESS_WORLD).bus
    assert bus is not None
    conn = connect(bus)
    out = run(conn.handle, conn.caller, Cmd.BUS_CREATOR_INFO, info_cmd(attach_flags=ATTACH_ANY))
    name = string_item(Item.MAKE_NAME, BUS_NAME)
    record = published(conn, out)
    assert record == b"".join([
        struct.pack("<Q", 24 + len(name)),          # kdbus_info.size
        struct.pack("<Q", bus.id),                  # id: the bus id
        struct.pack("<Q", MAKE_ACCESS_WORLD),       # flags: the bus flags
        name,                                       # MAKE_NAME item, no metadata (owner mask is 0)
    ])
    assert structs.CMD_INFO.unpack(out).info_size == len(record)


def list_records(data: bytes) -> list[tuple[int, int, int]]:
    records, pos = [], 0
    while pos < len(data):
        info = structs.INFO.unpack(data, pos)
        records.append((info.size, info.id, info.flags))
        pos += (info.size + 7) & ~7
    return records


def test_list_unique_lists_both_connections(bus: Bus) -> None:
    first = connect(bus)
    second = connect(bus, flags=HELLO_ACCEPT_FD)
    out = run(first.handle, first.caller, Cmd.LIST, cmd_bytes(structs.CMD_LIST, flags=LIST_UNIQUE))
    assert len(out) == 40
    reply = structs.CMD_LIST.unpack(out)
    assert reply.list_size == 48
    records = list_records(published(first, out, structs.CMD_LIST))
    assert sorted(records) == [(24, first.id, 0), (24, second.id, HELLO_ACCEPT_FD)]


def test_list_skips_monitors(bus: Bus) -> None:
    first = connect(bus)
    connect(bus, flags=HELLO_MONITOR)
    out = run(first.handle, first.caller, Cmd.LIST, cmd_bytes(structs.CMD_LIST, flags=LIST_UNIQUE))
    assert list_records(published(first, out, structs.CMD_LIST)) == [(24, first.id, 0)]


def test_empty_list_returns_pool_size_offset(bus: Bus) -> None:
    conn = connect(bus)
    out = run(conn.handle, conn.caller, Cmd.LIST, cmd_bytes(structs.CMD_LIST, flags=LIST_NAMES))
    reply = structs.CMD_LIST.unpack(out)
    assert (reply.offset, reply.list_size) == (POOL_SIZE, 0)


def test_list_negotiation_answers_0xf(bus: Bus) -> None:
    conn = connect(bus)
    out = run(conn.handle, conn.caller, Cmd.LIST, cmd_bytes(structs.CMD_LIST, flags=FLAG_NEGOTIATE))
    assert structs.CMD_LIST.unpack(out).flags == 0xF


def test_conn_info_does_not_see_other_buses(domain: Domain) -> None:
    here = make_bus(domain).bus
    there = make_bus(domain, name="1000-there").bus
    assert here is not None and there is not None
    asker, stranger = connect(here), connect(there)
    with raises_errno(errno.ENXIO):
        run(asker.handle, asker.caller, Cmd.CONN_INFO, info_cmd(id=stranger.id))


def test_conn_info_finds_monitors(bus: Bus) -> None:
    asker = connect(bus)
    monitor = connect(bus, flags=HELLO_MONITOR)
    out = run(asker.handle, asker.caller, Cmd.CONN_INFO, info_cmd(id=monitor.id))
    assert published(asker, out) == structs.INFO.pack(24, monitor.id, HELLO_MONITOR)


def update_cmd(*items: bytes) -> bytes:
    return cmd_bytes(structs.CMD, b"".join(items))


def test_update_changes_attach_flags(bus: Bus) -> None:
    conn = connect(bus)
    run(conn.handle, conn.caller, Cmd.UPDATE, update_cmd(u64_item(Item.ATTACH_FLAGS_SEND, Attach.CREDS),
                                                         u64_item(Item.ATTACH_FLAGS_RECV, ATTACH_ANY)))
    assert conn.handle.conn is not None
    assert conn.handle.conn.attach_flags_send == Attach.CREDS
    assert conn.handle.conn.attach_flags_recv == ATTACH_ALL


def test_update_bad_attach_flags_is_einval_and_changes_nothing(bus: Bus) -> None:
    conn = connect(bus, attach_send=Attach.PIDS)
    with raises_errno(errno.EINVAL):
        run(conn.handle, conn.caller, Cmd.UPDATE, update_cmd(u64_item(Item.ATTACH_FLAGS_SEND, Attach.CREDS),
                                                             u64_item(Item.ATTACH_FLAGS_RECV, 1 << 14)))
    assert conn.handle.conn is not None
    assert conn.handle.conn.attach_flags_send == Attach.PIDS


def test_update_send_flags_of_activator_is_eopnotsupp(bus: Bus) -> None:
    conn = connect(bus, flags=HELLO_ACTIVATOR, items=NAME)
    with raises_errno(errno.EOPNOTSUPP):
        run(conn.handle, conn.caller, Cmd.UPDATE, update_cmd(u64_item(Item.ATTACH_FLAGS_SEND, 0)))


def test_update_policy_on_ordinary_connection_is_eopnotsupp(bus: Bus) -> None:
    conn = connect(bus)
    with raises_errno(errno.EOPNOTSUPP):
        run(conn.handle, conn.caller, Cmd.UPDATE, update_cmd(NAME))


def test_free_on_policy_holder_is_eopnotsupp(bus: Bus) -> None:
    conn = connect(bus, flags=HELLO_POLICY_HOLDER, items=NAME)
    with raises_errno(errno.EOPNOTSUPP):
        run(conn.handle, conn.caller, Cmd.FREE, cmd_bytes(structs.CMD_FREE, offset=POOL_SIZE))


# -- release (§1.5) -----------------------------------------------------------------------------

def test_releasing_bus_owner_removes_bus_and_disconnects(domain: Domain) -> None:
    owner = make_bus(domain)
    bus = owner.bus
    assert bus is not None
    conns = [connect(bus), connect(bus, flags=HELLO_MONITOR)]
    owner.release()
    assert BUS_NAME not in domain.buses
    assert not bus.active
    for conn in conns:
        assert conn.handle.conn is not None
        assert not conn.handle.conn.active
        assert conn.handle.conn in domain.woken


def test_commands_after_bus_close_are_econnreset(domain: Domain) -> None:
    owner = make_bus(domain)
    assert owner.bus is not None
    conn = connect(owner.bus)
    owner.release()
    with raises_errno(errno.ECONNRESET):
        run(conn.handle, conn.caller, Cmd.LIST, cmd_bytes(structs.CMD_LIST, flags=LIST_UNIQUE))


def test_bus_name_is_reusable_after_close(domain: Domain) -> None:
    make_bus(domain).release()
    assert make_bus(domain).bus is domain.buses[BUS_NAME]


def test_releasing_connection_handle_disconnects(bus: Bus, domain: Domain) -> None:
    conn = connect(bus)
    conn.handle.release()
    assert conn.handle.conn is not None
    assert not conn.handle.conn.active
    assert bus.default_endpoint.connections == {}
    assert conn.handle.conn in domain.woken


def test_releasing_fresh_handle_does_nothing(domain: Domain) -> None:
    handle, _ = control(domain)
    handle.release()
    assert domain.buses == {}
