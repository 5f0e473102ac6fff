"""The item walker and per-type checks of KDBUS-SPEC.md §2.2 rules 5-7 (and the sysname rule of §1.3)."""

from __future__ import annotations

import errno
import struct

import pytest
from helpers import raises_errno

from kdbusfs.abi.constants import Item
from kdbusfs.abi.items import item, join_items, string_item, u64_item
from kdbusfs.abi.walk import (
    PAYLOAD_RULES,
    ItemSpec,
    ParsedItem,
    validate_item,
    validate_sysname,
    walk_items,
    walk_message,
)

FIXED = bytes(24)  # a kdbus_cmd fixed part in front of the items


def header(size: int, item_type: int) -> bytes:
    return struct.pack("<QQ", size, item_type)


def accept(*types: int, multiple: tuple[int, ...] = ()) -> dict[int, ItemSpec]:
    return {t: ItemSpec(t, multiple=t in multiple) for t in (*types, *multiple)}


ANY_ID = accept(Item.ID, Item.DST_ID, Item.NAME)


def walk(items: bytes, accepted: dict[int, ItemSpec] = ANY_ID) -> dict[int, list[ParsedItem]]:
    return walk_items(FIXED + items, len(FIXED), accepted)


# -- builders -----------------------------------------------------------------------------------

def test_item_size_field_is_unpadded_bytes_are_padded() -> None:
    raw = item(Item.NAME, b"abc\0")
    assert raw == header(20, Item.NAME) + b"abc\0" + bytes(4)
    assert len(raw) == 24


def test_item_with_aligned_payload_has_no_padding() -> None:
    assert item(Item.ID, struct.pack("<Q", 9)) == header(24, Item.ID) + struct.pack("<Q", 9)


def test_item_with_empty_payload_is_bare_header() -> None:
    assert item(Item.REPLY_DEAD, b"") == header(16, Item.REPLY_DEAD)


def test_string_item_appends_nul() -> None:
    assert string_item(Item.MAKE_NAME, "1000-test") == header(26, Item.MAKE_NAME) + b"1000-test\0" + bytes(6)


def test_string_item_accepts_bytes() -> None:
    assert string_item(Item.NAME, b"a.b") == string_item(Item.NAME, "a.b")


def test_u64_item() -> None:
    expected = header(24, Item.ATTACH_FLAGS_SEND) + struct.pack("<Q", 0x3FFF)
    assert u64_item(Item.ATTACH_FLAGS_SEND, 0x3FFF) == expected


def test_join_items() -> None:
    a, b = u64_item(Item.ID, 1), string_item(Item.NAME, "x.y")
    assert join_items([a, b]) == a + b


# -- the walk (rule 5) --------------------------------------------------------------------------

def test_empty_item_area_is_valid() -> None:
    assert walk(b"") == {}


def test_walk_returns_items_by_type_with_offsets_from_command_start() -> None:
    found = walk(u64_item(Item.ID, 5) + string_item(Item.NAME, "a.b"))
    assert [(p.type, p.offset, p.payload) for p in found[Item.ID]] == [(Item.ID, 24, struct.pack("<Q", 5))]
    assert [(p.offset, p.payload) for p in found[Item.NAME]] == [(48, b"a.b\0")]
    assert found[Item.ID][0].u64 == 5
    assert found[Item.NAME][0].string == "a.b"


@pytest.mark.parametrize("size", [0, 1, 8, 15])
def test_item_size_below_header_is_einval(size: int) -> None:
    with raises_errno(errno.EINVAL):
        walk(header(size, Item.ID) + bytes(8))


def test_item_past_the_end_is_einval() -> None:
    with raises_errno(errno.EINVAL):
        walk(header(32, Item.ID) + bytes(8))


def test_truncated_item_header_is_einval() -> None:
    with raises_errno(errno.EINVAL):
        walk(u64_item(Item.ID, 1) + bytes(8))


def test_trailing_garbage_after_last_item_is_einval() -> None:
    with raises_errno(errno.EINVAL):
        walk(u64_item(Item.ID, 1) + b"\xff" * 16)


def test_trailing_zero_block_is_einval() -> None:
    # A zeroed 16-byte block is an item of size 0.
    with raises_errno(errno.EINVAL):
        walk(u64_item(Item.ID, 1) + bytes(16))


def test_bytes_past_the_final_padding_are_einval() -> None:
    with raises_errno(errno.EINVAL):
        walk(string_item(Item.NAME, "a.b") + b"\0")


def test_final_item_may_omit_its_padding() -> None:
    raw = string_item(Item.NAME, "a.b")  # size 20, padded to 24
    found = walk(raw[:20])
    assert found[Item.NAME][0].payload == b"a.b\0"


@pytest.mark.parametrize("keep", [20, 21, 22, 23, 24])
def test_final_item_may_carry_part_of_its_padding(keep: int) -> None:
    assert Item.NAME in walk(string_item(Item.NAME, "a.b")[:keep])


def test_missing_inter_item_padding_is_einval() -> None:
    first = string_item(Item.NAME, "a.b")[:20]  # unpadded, then the next item follows at 20
    with raises_errno(errno.EINVAL):
        walk(first + u64_item(Item.ID, 1), accept(Item.NAME, Item.ID))


def test_inter_item_padding_makes_the_same_items_valid() -> None:
    found = walk(string_item(Item.NAME, "a.b") + u64_item(Item.ID, 1), accept(Item.NAME, Item.ID))
    assert set(found) == {Item.NAME, Item.ID}


# -- accepted types (rule 6) --------------------------------------------------------------------

def test_unaccepted_type_is_einval() -> None:
    with raises_errno(errno.EINVAL):
        walk(u64_item(Item.ATTACH_FLAGS_SEND, 0), accept(Item.ID))


def test_unknown_type_is_einval() -> None:
    with raises_errno(errno.EINVAL):
        walk(item(0x7777, bytes(8)), accept(Item.ID))


def test_duplicate_non_multiple_type_is_einval() -> None:
    with raises_errno(errno.EINVAL):
        walk(u64_item(Item.ID, 1) + u64_item(Item.ID, 2), accept(Item.ID))


def test_multiple_type_may_repeat_in_order() -> None:
    found = walk(u64_item(Item.ID, 1) + u64_item(Item.ID, 2), accept(multiple=(Item.ID,)))
    assert [p.u64 for p in found[Item.ID]] == [1, 2]


def test_walker_applies_per_type_checks() -> None:
    memfd = struct.pack("<QQiI", 0, 4096, -1, 0)
    with raises_errno(errno.EBADF):
        walk(item(Item.PAYLOAD_MEMFD, memfd), accept(Item.PAYLOAD_MEMFD))


# -- sysnames (§1.3; MAKE_NAME and CONN_DESCRIPTION) --------------------------------------------

SYSNAME_ITEMS = [Item.MAKE_NAME, Item.CONN_DESCRIPTION]


@pytest.mark.parametrize("item_type", SYSNAME_ITEMS)
@pytest.mark.parametrize("name", ["a", "Z", "_", "9", "1000-test", "1000-a.b-c_d", "x" * 63, "a-b", "a.b"])
def test_valid_sysnames(item_type: int, name: str) -> None:
    validate_item(item_type, name.encode() + b"\0")


@pytest.mark.parametrize("item_type", SYSNAME_ITEMS)
def test_sysname_of_64_chars_is_enametoolong(item_type: int) -> None:
    with raises_errno(errno.ENAMETOOLONG):
        validate_item(item_type, b"x" * 64 + b"\0")


@pytest.mark.parametrize("item_type", SYSNAME_ITEMS)
def test_sysname_of_63_chars_is_fine(item_type: int) -> None:
    validate_item(item_type, b"x" * 63 + b"\0")


@pytest.mark.parametrize("item_type", SYSNAME_ITEMS)
@pytest.mark.parametrize("name", ["-abc", "abc-", ".abc", "abc.", "-", ".", "1000-blah-", "1000-blah@123",
                                  "a b", "a/b", "caf\xe9"])
def test_invalid_sysname_is_einval(item_type: int, name: str) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(item_type, name.encode() + b"\0")


@pytest.mark.parametrize("item_type", SYSNAME_ITEMS)
@pytest.mark.parametrize("payload", [b"", b"\0"])
def test_empty_sysname_is_einval(item_type: int, payload: bytes) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(item_type, payload)


@pytest.mark.parametrize("payload", [b"abc", b"ab\0c\0", b"abc\0\0"])
def test_sysname_must_be_one_nul_terminated_string(payload: bytes) -> None:
    with raises_errno(errno.EINVAL):
        validate_sysname(payload)


def test_sysname_rule_applies_through_the_walker() -> None:
    with raises_errno(errno.ENAMETOOLONG):
        walk(string_item(Item.MAKE_NAME, "1000-" + "x" * 60), accept(Item.MAKE_NAME))


# -- string items -------------------------------------------------------------------------------

STRING_ITEMS = [Item.NAME, Item.DST_NAME, Item.PID_COMM, Item.TID_COMM, Item.EXE, Item.CMDLINE, Item.CGROUP,
                Item.SECLABEL]


@pytest.mark.parametrize("item_type", STRING_ITEMS)
@pytest.mark.parametrize("payload", [b"org.example.x\0", b"\0", b"x" * 300 + b"\0"])
def test_string_item_with_one_final_nul_is_valid(item_type: int, payload: bytes) -> None:
    validate_item(item_type, payload)


@pytest.mark.parametrize("item_type", STRING_ITEMS)
@pytest.mark.parametrize("payload", [b"", b"abc", b"a\0bc\0", b"abc\0\0", b"abc\0\0\0\0\0"],
                         ids=["empty", "no-nul", "embedded-nul", "extra-nul", "padding-counted"])
def test_malformed_string_item_is_einval(item_type: int, payload: bytes) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(item_type, payload)


# -- payload items ------------------------------------------------------------------------------

def memfd(start: int = 0, size: int = 4096, fd: int = 3) -> bytes:
    return struct.pack("<QQiI", start, size, fd, 0)


def test_memfd_item_is_valid() -> None:
    validate_item(Item.PAYLOAD_MEMFD, memfd())


def test_memfd_fd_zero_is_valid() -> None:
    validate_item(Item.PAYLOAD_MEMFD, memfd(fd=0))


@pytest.mark.parametrize("fd", [-1, -100])
def test_memfd_negative_fd_is_ebadf(fd: int) -> None:
    with raises_errno(errno.EBADF):
        validate_item(Item.PAYLOAD_MEMFD, memfd(fd=fd))


def test_memfd_size_zero_is_einval() -> None:
    with raises_errno(errno.EINVAL):
        validate_item(Item.PAYLOAD_MEMFD, memfd(size=0))


@pytest.mark.parametrize("size", [0, 16, 32])
def test_memfd_payload_not_24_is_einval(size: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(Item.PAYLOAD_MEMFD, (memfd() + bytes(8))[:size])


@pytest.mark.parametrize("item_type", [Item.PAYLOAD_VEC, Item.PAYLOAD_OFF])
def test_vec_item_is_valid(item_type: int) -> None:
    validate_item(item_type, struct.pack("<QQ", 1, 0x1000))


@pytest.mark.parametrize("item_type", [Item.PAYLOAD_VEC, Item.PAYLOAD_OFF])
def test_vec_size_zero_is_einval(item_type: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(item_type, struct.pack("<QQ", 0, 0x1000))


@pytest.mark.parametrize("item_type", [Item.PAYLOAD_VEC, Item.PAYLOAD_OFF])
@pytest.mark.parametrize("size", [0, 8, 24])
def test_vec_payload_not_16_is_einval(item_type: int, size: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(item_type, (struct.pack("<QQ", 1, 0x1000) + bytes(8))[:size])


@pytest.mark.parametrize("size", [0, 8, 16, 64])
def test_negotiate_payload_multiple_of_8(size: int) -> None:
    validate_item(Item.NEGOTIATE, bytes(size))


@pytest.mark.parametrize("size", [1, 4, 12])
def test_negotiate_payload_not_multiple_of_8_is_einval(size: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(Item.NEGOTIATE, bytes(size))


@pytest.mark.parametrize("item_type", [Item.FDS, Item.AUXGROUPS])
@pytest.mark.parametrize("size", [0, 4, 8, 64])
def test_fds_and_auxgroups_multiple_of_4(item_type: int, size: int) -> None:
    validate_item(item_type, bytes(size))


@pytest.mark.parametrize("item_type", [Item.FDS, Item.AUXGROUPS])
@pytest.mark.parametrize("size", [1, 6, 10])
def test_fds_and_auxgroups_not_multiple_of_4_is_einval(item_type: int, size: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(item_type, bytes(size))


@pytest.mark.parametrize("size", [8, 16, 4096 + 8])
def test_bloom_filter_at_least_8(size: int) -> None:
    validate_item(Item.BLOOM_FILTER, bytes(size))


@pytest.mark.parametrize("size", [0, 4, 7])
def test_bloom_filter_below_8_is_einval(size: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(Item.BLOOM_FILTER, bytes(size))


@pytest.mark.parametrize("size", [0, 3, 8, 100])
def test_bloom_mask_any_size(size: int) -> None:
    validate_item(Item.BLOOM_MASK, bytes(size))


def test_every_item_type_has_a_payload_rule() -> None:
    assert set(PAYLOAD_RULES) == set(Item)


@pytest.mark.parametrize("size", [0, 8, 16, 22, 23, 25, 32, 40])
def test_pids_payload_not_24_is_einval(size: int) -> None:
    # kdbus reads 24 bytes of a PIDS item whatever its size; kdbusfs refuses it as a wrong size.
    with raises_errno(errno.EINVAL):
        validate_item(Item.PIDS, bytes(size))


@pytest.mark.parametrize("payload", [bytes(8), bytes(8) + b"a.b\0"])
def test_owned_name_item_is_valid(payload: bytes) -> None:
    validate_item(Item.OWNED_NAME, payload)


@pytest.mark.parametrize("payload", [bytes(0), bytes(7), bytes(8) + b"a.b", bytes(8) + b"a\0b\0"])
def test_malformed_owned_name_item_is_einval(payload: bytes) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(Item.OWNED_NAME, payload)


EXACT = [
    (Item.CANCEL_FD, 4), (Item.BLOOM_PARAMETER, 16), (Item.ATTACH_FLAGS_SEND, 8), (Item.ATTACH_FLAGS_RECV, 8),
    (Item.ID, 8), (Item.DST_ID, 8), (Item.TIMESTAMP, 24), (Item.CREDS, 64), (Item.PIDS, 24), (Item.AUDIT, 8),
    (Item.POLICY_ACCESS, 24), (Item.ID_ADD, 16), (Item.ID_REMOVE, 16),
    (Item.REPLY_TIMEOUT, 0), (Item.REPLY_DEAD, 0),
]


@pytest.mark.parametrize(("item_type", "size"), EXACT, ids=[t.name for t, _ in EXACT])
def test_exact_payload_size_is_valid(item_type: int, size: int) -> None:
    validate_item(item_type, bytes(size))


WRONG_SIZES = [(t, wrong) for t, size in EXACT for wrong in (size - 4, size + 4, size + 8) if wrong >= 0]


@pytest.mark.parametrize(("item_type", "size"), WRONG_SIZES, ids=[f"{t.name}-{n}" for t, n in WRONG_SIZES])
def test_other_payload_size_is_einval(item_type: int, size: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(item_type, bytes(size))


@pytest.mark.parametrize("item_type", [Item.REPLY_TIMEOUT, Item.REPLY_DEAD])
def test_reply_notifications_must_be_empty(item_type: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(item_type, bytes(1))


# CAPS: {last_cap u32, caps u32[]}; needs 4 + 4 sets * CAP_TO_INDEX(last_cap) * 4 bytes at least.
@pytest.mark.parametrize(("last_cap", "size"), [(0, 4), (31, 4), (37, 20), (37, 36), (63, 20), (64, 36)])
def test_caps_large_enough_for_last_cap(last_cap: int, size: int) -> None:
    validate_item(Item.CAPS, struct.pack("<I", last_cap) + bytes(size - 4))


@pytest.mark.parametrize(("last_cap", "size"), [(37, 16), (37, 8), (64, 32)])
def test_caps_too_short_for_last_cap_is_einval(last_cap: int, size: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(Item.CAPS, struct.pack("<I", last_cap) + bytes(size - 4))


@pytest.mark.parametrize("size", [0, 2, 3])
def test_caps_below_4_is_einval(size: int) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(Item.CAPS, bytes(size))


NAME_CHANGES = [Item.NAME_ADD, Item.NAME_REMOVE, Item.NAME_CHANGE]


@pytest.mark.parametrize("item_type", NAME_CHANGES)
@pytest.mark.parametrize("payload", [bytes(32), bytes(32) + b"a.b\0"])
def test_name_change_item_is_valid(item_type: int, payload: bytes) -> None:
    validate_item(item_type, payload)


@pytest.mark.parametrize("item_type", NAME_CHANGES)
@pytest.mark.parametrize("payload", [
    bytes(0), bytes(24), bytes(31), bytes(32) + b"a.b", bytes(32) + b"a\0b\0",
])
def test_malformed_name_change_item_is_einval(item_type: int, payload: bytes) -> None:
    with raises_errno(errno.EINVAL):
        validate_item(item_type, payload)


# -- a message's items (walk_message) ----------------------------------------------------------

def test_message_walk_gives_type_offset_and_unpadded_size_in_order() -> None:
    items = item(Item.PAYLOAD_VEC, struct.pack("<QQ", 8, 0x1000)) + string_item(Item.DST_NAME, "a.b")
    assert walk_message(FIXED + items, len(FIXED)) == [
        (Item.PAYLOAD_VEC, 24, 32), (Item.DST_NAME, 56, 20)]


def test_message_walk_refuses_an_empty_vec_as_the_payload_rules_do() -> None:
    with raises_errno(errno.EINVAL) as refused:
        walk_message(FIXED + item(Item.PAYLOAD_VEC, struct.pack("<QQ", 0, 0x1000)), len(FIXED))
    assert "PAYLOAD_VEC: empty payload vector" in refused.value.why
    with raises_errno(errno.EINVAL) as refused:
        walk_message(FIXED + item(Item.PAYLOAD_VEC, bytes(8)), len(FIXED))
    assert "PAYLOAD_VEC: payload of 8 bytes" in refused.value.why


def test_message_walk_refuses_a_single_item_given_twice_before_checking_its_payload() -> None:
    items = string_item(Item.DST_NAME, "a.b") + item(Item.DST_NAME, b"no nul")
    with raises_errno(errno.EINVAL) as refused:
        walk_message(FIXED + items, len(FIXED))
    assert "given twice" in refused.value.why


def test_message_walk_takes_any_number_of_vecs_and_memfds() -> None:
    memfd = struct.pack("<QQiI", 0, 8, 3, 0)
    items = item(Item.PAYLOAD_MEMFD, memfd) * 2 + item(Item.PAYLOAD_VEC, struct.pack("<QQ", 1, 0)) * 2
    assert [t for t, _, _ in walk_message(FIXED + items, len(FIXED))] == [Item.PAYLOAD_MEMFD] * 2 + [
        Item.PAYLOAD_VEC] * 2


@pytest.mark.parametrize(("item_type", "reason"), [
    (Item.NEGOTIATE, "NEGOTIATE item in a message that is not negotiating"),
    (Item.NAME, "not accepted in a message"),
])
def test_message_walk_refuses_other_items(item_type: int, reason: str) -> None:
    with raises_errno(errno.EINVAL) as refused:
        walk_message(FIXED + item(item_type, bytes(8)), len(FIXED))
    assert reason in refused.value.why


def test_message_walk_checks_framing_as_walk_items_does() -> None:
    with raises_errno(errno.EINVAL) as refused:
        walk_message(FIXED + bytes(8), len(FIXED))
    assert "truncated item header" in refused.value.why
    with raises_errno(errno.EINVAL) as refused:
        walk_message(FIXED + header(8, Item.PAYLOAD_VEC) + bytes(8), len(FIXED))
    assert "has bad size 8" in refused.value.why
