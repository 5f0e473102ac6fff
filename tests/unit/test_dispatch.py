"""The compiled command frame (kdbusfs/dispatch.pyx, bus/args.pyx, abi/walk.pyx): what it adds to the
rules test_handle.py and test_items.py check through it. A command's struct goes back to the
caller only when its body changed it, the fields are read from the copied bytes, and the compiled
classes behave as the dataclasses they replaced."""

from __future__ import annotations

from typing import Any

import pytest
from bus_helpers import conn_of, connect_on
from helpers import BASE, FakeCaller, cmd_bytes

from kdbusfs.abi import structs
from kdbusfs.abi.constants import Cmd, Item
from kdbusfs.abi.walk import PAYLOAD_RULES, ItemSpec, ParsedItem, PayloadRule
from kdbusfs.bus.args import Args, copy_in
from kdbusfs.bus.bus import Bus
from kdbusfs.compiled import built
from kdbusfs.handle import COMMANDS, ioctl


class CountingCaller(FakeCaller):
    """A caller that records every write the frame makes into its memory."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, bytes]] = []

    def write(self, address: int, data: bytes) -> None:
        self.writes.append((address, bytes(data)))
        super().write(address, data)



@pytest.mark.parametrize("name", ["kdbusfs.dispatch", "kdbusfs.bus.args", "kdbusfs.abi.walk"])
def test_the_frame_modules_are_the_compiled_ones(name: str) -> None:
    assert dict(built())[name].endswith(".so")


def test_a_command_that_changes_nothing_writes_nothing_back(bus: Bus) -> None:
    conn = connect_on(bus.default_endpoint)
    caller = CountingCaller()
    pool_size = conn_of(conn).pool.size
    free = cmd_bytes(structs.CMD_FREE, offset=pool_size)
    assert ioctl(conn.handle, Cmd.FREE, caller.place(free), free, caller) == b""
    assert caller.writes == []


def test_return_flags_the_caller_left_set_are_zeroed_in_its_struct(bus: Bus) -> None:
    conn = connect_on(bus.default_endpoint)
    caller = CountingCaller()
    free = cmd_bytes(structs.CMD_FREE, offset=conn_of(conn).pool.size, return_flags=7)
    ioctl(conn.handle, Cmd.FREE, caller.place(free), free, caller)
    assert caller.writes == [(BASE, cmd_bytes(structs.CMD_FREE, offset=conn_of(conn).pool.size))]


def test_args_reads_its_header_and_fields_from_the_copied_bytes() -> None:
    data = cmd_bytes(structs.CMD_FREE, flags=1 << 63, return_flags=3, offset=4096)
    args: Args[structs.CmdFree] = Args(BASE, data, structs.CMD_FREE, {})
    assert args.negotiate
    assert args.fields == structs.CMD_FREE.unpack(data)
    assert args.out is args.fields
    args.out = args.out._replace(return_flags=0)
    assert args.fixed() == cmd_bytes(structs.CMD_FREE, flags=1 << 63, offset=4096)
    assert args.fields.return_flags == 3


def test_args_refuses_bytes_shorter_than_the_command_header() -> None:
    with pytest.raises(ValueError):
        Args(BASE, bytes(16), structs.CMD, {})


def test_args_is_subscriptable_at_run_time() -> None:
    # Annotations such as Args[structs.CmdSend] evaluated by tools or aliases at run time.
    alias: Any = Args[structs.CmdSend]
    assert alias is not None


def test_copy_in_takes_fuse_in_data_and_reads_only_the_rest() -> None:
    caller = CountingCaller()
    data = cmd_bytes(structs.CMD, b"x" * 16)
    address = caller.place(data)
    assert copy_in(caller, address, structs.CMD, data[:24]) == data
    assert copy_in(caller, address, structs.CMD, b"") == data


def test_the_table_has_every_command() -> None:
    assert set(COMMANDS) == set(Cmd)
    assert COMMANDS[Cmd.HELLO].returns_struct and not COMMANDS[Cmd.FREE].returns_struct
    assert COMMANDS[Cmd.BUS_MAKE].mandatory == (Item.MAKE_NAME, Item.BLOOM_PARAMETER)


def test_item_classes_compare_by_value() -> None:
    assert ItemSpec(Item.NAME, multiple=True) == ItemSpec(Item.NAME, multiple=True)
    assert ItemSpec(Item.NAME) != ItemSpec(Item.NAME, mandatory=True)
    assert ParsedItem(Item.NAME, 24, b"a\0") == ParsedItem(Item.NAME, 24, b"a\0")
    assert ParsedItem(Item.NAME, 24, b"a\0") != ParsedItem(Item.NAME, 32, b"a\0")
    assert ParsedItem(Item.NAME, 24, b"a\0").string == "a"
    assert ParsedItem(Item.ID, 24, (5).to_bytes(8, "little")).u64 == 5
    assert "ParsedItem(" in repr(ParsedItem(Item.NAME, 24, b"a\0"))


def test_payload_rules_say_exact_none_when_only_bounded() -> None:
    assert PAYLOAD_RULES[Item.NAME].exact is None
    assert PAYLOAD_RULES[Item.ID].exact == 8
    assert PayloadRule(minimum=8, multiple=8).minimum == 8
