"""The FUSE codec byte for byte: requests built by hand, replies checked at their offsets.

Struct sizes are the facts of include/uapi/linux/fuse.h (protocol 7.38): fuse_in_header 40,
fuse_out_header 16, fuse_attr 88, fuse_entry_out 128, fuse_attr_out 104, fuse_kstatfs 80,
fuse_init_out 64, fuse_ioctl_in 32, fuse_ioctl_out 16, fuse_notify_store_out 24.
"""

from __future__ import annotations

import errno
import struct

import pytest

from kdbusfs.fuse import codec
from kdbusfs.fuse import protocol as p
from kdbusfs.fuse.codec import Attr, InitIn, ProtocolError, parse_init, parse_request

FUSE_IN_HEADER = 40
FUSE_OUT_HEADER = 16
FUSE_ATTR = 88
FUSE_ENTRY_OUT = 128
FUSE_ATTR_OUT = 104
FUSE_KSTATFS = 80
FUSE_INIT_OUT = 64
FUSE_COMPAT_22_INIT_OUT = 24
FUSE_IOCTL_IN = 32
FUSE_IOCTL_OUT = 16
FUSE_NOTIFY_STORE_OUT = 24
FUSE_DIRENT_HEAD = 24

# fuse_attr offsets (fuse.h).
ATTR_INO, ATTR_SIZE, ATTR_BLOCKS, ATTR_ATIME = 0, 8, 16, 24
ATTR_ATIMENSEC, ATTR_MODE, ATTR_NLINK, ATTR_UID, ATTR_GID, ATTR_RDEV, ATTR_BLKSIZE, ATTR_FLAGS = (
    48, 60, 64, 68, 72, 76, 80, 84)

# A LOOKUP of "bus" under the root, by uid/gid 1000, pid 4242.
LOOKUP_REQUEST = b"".join([
    struct.pack("<I", 40 + 4),      # len: header + "bus\0"
    struct.pack("<I", 1),           # opcode: FUSE_LOOKUP
    struct.pack("<Q", 0x1234),      # unique
    struct.pack("<Q", 1),           # nodeid: FUSE_ROOT_ID
    struct.pack("<I", 1000),        # uid
    struct.pack("<I", 1001),        # gid
    struct.pack("<I", 4242),        # pid
    struct.pack("<H", 0),           # total_extlen
    struct.pack("<H", 0),           # padding
    b"bus\0",                       # name
])

# FUSE_INIT from a 7.38 kernel: fuse_init_in is 64 bytes since 7.36.
INIT_REQUEST = b"".join([
    struct.pack("<I", 40 + 64),     # len
    struct.pack("<I", 26),          # opcode: FUSE_INIT
    struct.pack("<Q", 2),           # unique
    struct.pack("<Q", 0),           # nodeid
    struct.pack("<I", 0),           # uid
    struct.pack("<I", 0),           # gid
    struct.pack("<I", 0),           # pid
    struct.pack("<H", 0),           # total_extlen
    struct.pack("<H", 0),           # padding
    struct.pack("<I", 7),           # major
    struct.pack("<I", 38),          # minor
    struct.pack("<I", 0x20000),     # max_readahead
    struct.pack("<I", 0x73FFFFFB),  # flags
    struct.pack("<I", 0x1F),        # flags2
    bytes(44),                      # unused[11]
])

# An OPEN on node 5 carrying 16 bytes of request extensions (total_extlen = 2).
OPEN_WITH_EXTENSIONS = b"".join([
    struct.pack("<I", 40 + 8 + 16),  # len: header + fuse_open_in + extensions
    struct.pack("<I", 14),           # opcode: FUSE_OPEN
    struct.pack("<Q", 77),           # unique
    struct.pack("<Q", 5),            # nodeid
    struct.pack("<I", 0),            # uid
    struct.pack("<I", 0),            # gid
    struct.pack("<I", 99),           # pid
    struct.pack("<H", 2),            # total_extlen: 2 x 8 bytes
    struct.pack("<H", 0),            # padding
    struct.pack("<I", 2),            # flags: O_RDWR
    struct.pack("<I", 0),            # open_flags
    struct.pack("<I", 16),           # extension: fuse_ext_header.size
    struct.pack("<I", 1),            # extension: fuse_ext_header.type
    bytes(8),                        # extension payload
])


# -- layouts ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("layout", "size"), [
    (p.IN_HEADER, FUSE_IN_HEADER),
    (p.OUT_HEADER, FUSE_OUT_HEADER),
    (p.ATTR, FUSE_ATTR),
    (p.ATTR_OUT_HEAD, FUSE_ATTR_OUT - FUSE_ATTR),
    (p.ENTRY_OUT_HEAD, FUSE_ENTRY_OUT - FUSE_ATTR),
    (p.KSTATFS, FUSE_KSTATFS),
    (p.INIT_OUT, FUSE_INIT_OUT),
    (p.IOCTL_IN, FUSE_IOCTL_IN),
    (p.IOCTL_OUT, FUSE_IOCTL_OUT),
    (p.NOTIFY_STORE, FUSE_NOTIFY_STORE_OUT),
    (p.OPEN_OUT, 16),
    (p.POLL_OUT, 8),
    (p.DIRENT_HEAD, FUSE_DIRENT_HEAD),
    (p.NOTIFY_POLL, 8),
    (p.NOTIFY_INVAL_ENTRY, 16),
])
def test_layout_sizes_match_fuse_h(layout: struct.Struct, size: int) -> None:
    assert layout.size == size


def test_notify_codes_match_fuse_h() -> None:
    assert (p.Notify.POLL, p.Notify.INVAL_INODE, p.Notify.INVAL_ENTRY, p.Notify.STORE) == (1, 2, 3, 4)


# -- requests -----------------------------------------------------------------------------------

def test_parse_request_reads_header_fields() -> None:
    request = parse_request(LOOKUP_REQUEST)
    assert request.header == codec.Header(
        length=44, opcode=1, unique=0x1234, nodeid=1, uid=1000, gid=1001, pid=4242)
    assert request.opcode == p.Opcode.LOOKUP
    assert request.unique == 0x1234


def test_parse_request_body_follows_header() -> None:
    assert bytes(parse_request(LOOKUP_REQUEST).body) == b"bus\0"


def test_parse_request_accepts_bytearray_and_memoryview() -> None:
    assert parse_request(bytearray(LOOKUP_REQUEST)).header.unique == 0x1234
    assert bytes(parse_request(memoryview(LOOKUP_REQUEST)).body) == b"bus\0"


def test_parse_request_header_only_has_empty_body() -> None:
    raw = struct.pack("<IIQQIIIHH", 40, 38, 9, 0, 0, 0, 0, 0, 0)  # DESTROY, no body
    request = parse_request(raw)
    assert request.opcode == p.Opcode.DESTROY
    assert bytes(request.body) == b""


def test_parse_request_trims_total_extlen_from_body() -> None:
    request = parse_request(OPEN_WITH_EXTENSIONS)
    assert request.header.length == 64
    assert bytes(request.body) == struct.pack("<II", 2, 0)


@pytest.mark.parametrize("size", [0, 1, 39])
def test_parse_request_shorter_than_header_is_protocol_error(size: int) -> None:
    with pytest.raises(ProtocolError):
        parse_request(LOOKUP_REQUEST[:size])


def test_parse_request_length_above_buffer_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse_request(LOOKUP_REQUEST[:-1])


def test_parse_request_length_below_buffer_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse_request(LOOKUP_REQUEST + b"\0" * 8)


def test_name_arg_stops_at_nul() -> None:
    assert codec.name_arg(memoryview(b"control\0junk")) == b"control"


def test_name_arg_without_nul_is_whole_body() -> None:
    assert codec.name_arg(memoryview(b"bus")) == b"bus"


def test_parse_init_joins_flags2_above_bit_31_when_init_ext_is_set() -> None:
    init = parse_init(parse_request(INIT_REQUEST).body)
    assert init == InitIn(major=7, minor=38, max_readahead=0x20000, flags=0x1F_73FFFFFB)


def test_init_out_asks_for_passthrough_in_flags2_with_a_stack_depth() -> None:
    kernel = InitIn(7, 45, 0x20000, p.PASSTHROUGH | p.INIT_EXT | p.ASYNC_READ)
    out = codec.init_out(kernel, p.PASSTHROUGH | p.ASYNC_READ, max_write=4096)
    flags, flags2, depth = struct.unpack_from("<I", out, 12)[0], *struct.unpack_from("<II", out, 32)
    assert flags == p.INIT_EXT | p.ASYNC_READ
    assert flags2 == p.PASSTHROUGH >> 32
    assert depth == p.PASSTHROUGH_STACK_DEPTH


def test_parse_init_accepts_pre_7_36_body() -> None:
    assert parse_init(memoryview(struct.pack("<IIII", 7, 22, 4096, 3))) == InitIn(7, 22, 4096, 3)


# -- replies ------------------------------------------------------------------------------------

def test_reply_is_header_plus_payload() -> None:
    out = codec.reply(0x1234, b"abcdefgh")
    assert out == struct.pack("<IiQ", 16 + 8, 0, 0x1234) + b"abcdefgh"


def test_reply_without_payload_is_16_bytes() -> None:
    assert codec.reply(5) == struct.pack("<IiQ", 16, 0, 5)


def test_reply_error_carries_negative_errno() -> None:
    out = codec.reply_error(0x1234, errno.ENOENT)
    assert len(out) == FUSE_OUT_HEADER
    assert out == b"".join([
        struct.pack("<I", 16),              # len
        struct.pack("<i", -errno.ENOENT),   # error
        struct.pack("<Q", 0x1234),          # unique
    ])


ATTR = Attr(ino=7, size=0, mode=0o100666, nlink=1, uid=1000, gid=1001, time_ns=1_700_000_000_123_456_789)


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])


def _u64(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0])


def test_attr_pack_fields_at_fuse_attr_offsets() -> None:
    raw = Attr(ino=7, size=12345, mode=0o40555, nlink=2, uid=1000, gid=1001, time_ns=5_000_000_042).pack()
    assert len(raw) == FUSE_ATTR
    assert _u64(raw, ATTR_INO) == 7
    assert _u64(raw, ATTR_SIZE) == 12345
    assert _u64(raw, ATTR_BLOCKS) == 0
    assert [_u64(raw, ATTR_ATIME + 8 * i) for i in range(3)] == [5, 5, 5]
    assert [_u32(raw, ATTR_ATIMENSEC + 4 * i) for i in range(3)] == [42, 42, 42]
    assert _u32(raw, ATTR_MODE) == 0o40555
    assert _u32(raw, ATTR_NLINK) == 2
    assert _u32(raw, ATTR_UID) == 1000
    assert _u32(raw, ATTR_GID) == 1001
    assert _u32(raw, ATTR_RDEV) == 0
    assert _u32(raw, ATTR_BLKSIZE) == 4096
    assert _u32(raw, ATTR_FLAGS) == 0


def test_entry_out_is_128_bytes_with_attr_at_40() -> None:
    raw = codec.entry_out(42, ATTR._replace(size=99), entry_valid_s=3, attr_valid_s=4)
    assert len(raw) == FUSE_ENTRY_OUT
    assert _u64(raw, 0) == 42                   # nodeid
    assert _u64(raw, 8) == 0                    # generation
    assert _u64(raw, 16) == 3                   # entry_valid
    assert _u64(raw, 24) == 4                   # attr_valid
    assert raw[32:40] == bytes(8)               # entry_valid_nsec, attr_valid_nsec
    assert _u64(raw, 40 + ATTR_INO) == 7
    assert _u64(raw, 40 + ATTR_SIZE) == 99
    assert _u32(raw, 40 + ATTR_MODE) == 0o100666
    assert _u32(raw, 40 + ATTR_UID) == 1000
    assert raw[40:] == ATTR._replace(size=99).pack()


def test_attr_out_is_104_bytes_with_attr_at_16() -> None:
    raw = codec.attr_out(ATTR, valid_s=9)
    assert len(raw) == FUSE_ATTR_OUT
    assert raw[:16] == struct.pack("<QII", 9, 0, 0)  # attr_valid, attr_valid_nsec, dummy
    assert _u32(raw, 16 + ATTR_MODE) == 0o100666
    assert raw[16:] == ATTR.pack()


def test_open_out_is_16_bytes() -> None:
    raw = codec.open_out(0xABCDEF, p.FOPEN_DIRECT_IO | p.FOPEN_NONSEEKABLE)
    assert raw == b"".join([
        struct.pack("<Q", 0xABCDEF),   # fh
        struct.pack("<I", 0b101),      # open_flags
        struct.pack("<I", 0),          # backing_id
    ])


def test_ioctl_out_is_16_bytes_then_data() -> None:
    raw = codec.ioctl_out(0, b"\x01\x02\x03")
    assert raw == b"".join([
        struct.pack("<i", 0),   # result
        struct.pack("<I", 0),   # flags
        struct.pack("<I", 0),   # in_iovs
        struct.pack("<I", 0),   # out_iovs
        b"\x01\x02\x03",        # out data
    ])


def test_ioctl_out_result_is_signed() -> None:
    assert codec.ioctl_out(-1)[:4] == struct.pack("<i", -1)
    assert len(codec.ioctl_out(-1)) == FUSE_IOCTL_OUT


def test_statfs_out_is_80_bytes() -> None:
    raw = codec.statfs_out(namelen=255, bsize=4096)
    assert len(raw) == FUSE_KSTATFS
    assert raw[:40] == bytes(40)                 # blocks bfree bavail files ffree
    assert _u32(raw, 40) == 4096                 # bsize
    assert _u32(raw, 44) == 255                  # namelen
    assert _u32(raw, 48) == 4096                 # frsize
    assert raw[52:] == bytes(28)                 # padding, spare[6]


def test_dirent_pads_name_to_8() -> None:
    raw = codec.dirent(3, 1, b"bus", 8)
    assert raw == b"".join([
        struct.pack("<Q", 3),   # ino
        struct.pack("<Q", 1),   # off
        struct.pack("<I", 3),   # namelen
        struct.pack("<I", 8),   # type: DT_REG
        b"bus",                 # name
        b"\0" * 5,              # padding to 32
    ])


def test_dirent_name_of_8_needs_no_padding() -> None:
    raw = codec.dirent(1, 2, b"1000-abc", 4)
    assert len(raw) == 32
    assert raw[24:] == b"1000-abc"


@pytest.mark.parametrize("name_len", range(1, 17))
def test_dirent_length_is_aligned(name_len: int) -> None:
    raw = codec.dirent(1, 2, b"x" * name_len, 4)
    assert len(raw) % 8 == 0
    assert len(raw) - (FUSE_DIRENT_HEAD + name_len) < 8
    assert raw[FUSE_DIRENT_HEAD + name_len:] == bytes(len(raw) - FUSE_DIRENT_HEAD - name_len)


# -- INIT ---------------------------------------------------------------------------------------

KERNEL_38 = InitIn(major=7, minor=38, max_readahead=0x20000, flags=0x0000_00FF)


def test_init_out_is_64_bytes_for_current_kernels() -> None:
    raw = codec.init_out(KERNEL_38, flags=0x0F0F, max_write=0x20000)
    assert len(raw) == FUSE_INIT_OUT
    assert raw == b"".join([
        struct.pack("<I", 7),         # major
        struct.pack("<I", 38),        # minor
        struct.pack("<I", 0x20000),   # max_readahead: the kernel's
        struct.pack("<I", 0x000F),    # flags: ours AND the kernel's
        struct.pack("<H", 0xFFFF),    # max_background: never park a RELEASE
        struct.pack("<H", 0xFFFF),    # congestion_threshold
        struct.pack("<I", 0x20000),   # max_write
        struct.pack("<I", 1),         # time_gran
        struct.pack("<H", 0),         # max_pages
        struct.pack("<H", 0),         # map_alignment
        struct.pack("<I", 0),         # flags2
        struct.pack("<I", 0),         # max_stack_depth (no passthrough asked for)
        bytes(24),                    # request_timeout, unused
    ])


def test_init_out_flags_are_anded_with_kernel_flags() -> None:
    kernel = KERNEL_38._replace(flags=p.ASYNC_READ | p.BIG_WRITES)
    raw = codec.init_out(kernel, flags=0xFFFF_FFFF, max_write=4096)
    assert _u32(raw, 12) == p.ASYNC_READ | p.BIG_WRITES


def test_init_out_caps_minor_at_our_version() -> None:
    raw = codec.init_out(KERNEL_38._replace(minor=p.KERNEL_MINOR_VERSION + 5), flags=0, max_write=4096)
    assert struct.unpack_from("<II", raw) == (7, p.KERNEL_MINOR_VERSION)
    assert len(raw) == FUSE_INIT_OUT


def test_init_out_echoes_older_minor() -> None:
    raw = codec.init_out(KERNEL_38._replace(minor=31), flags=0, max_write=4096)
    assert struct.unpack_from("<II", raw) == (7, 31)


def test_init_out_is_64_bytes_from_minor_23() -> None:
    assert len(codec.init_out(KERNEL_38._replace(minor=23), flags=0, max_write=4096)) == FUSE_INIT_OUT


def test_init_out_is_24_bytes_before_minor_23() -> None:
    full = codec.init_out(KERNEL_38._replace(minor=23), flags=3, max_write=8192)
    raw = codec.init_out(KERNEL_38._replace(minor=22), flags=3, max_write=8192)
    assert len(raw) == FUSE_COMPAT_22_INIT_OUT
    assert raw[8:] == full[8:24]
    assert _u32(raw, 20) == 8192  # max_write is the last field kept


def test_init_out_max_readahead_override() -> None:
    raw = codec.init_out(KERNEL_38, flags=0, max_write=4096, max_readahead=0)
    assert _u32(raw, 8) == 0


# -- notifications ------------------------------------------------------------------------------

def test_notify_poll_encoding() -> None:
    assert codec.notify_poll(0xDEAD_BEEF_0000_0001) == b"".join([
        struct.pack("<I", 16 + 8),                  # len
        struct.pack("<i", p.Notify.POLL),           # error: notify code
        struct.pack("<Q", 0),                       # unique: 0 marks a notification
        struct.pack("<Q", 0xDEAD_BEEF_0000_0001),   # kh
    ])


def test_notify_store_encoding() -> None:
    data = b"\x07" * 13
    assert codec.notify_store(5, 4096, data).message == b"".join([
        struct.pack("<I", 16 + 24 + 13),            # len
        struct.pack("<i", p.Notify.STORE),          # error: notify code
        struct.pack("<Q", 0),                       # unique
        struct.pack("<Q", 5),                       # nodeid
        struct.pack("<Q", 4096),                    # offset
        struct.pack("<I", 13),                      # size
        struct.pack("<I", 0),                       # padding
        data,                                       # data
    ])


def test_notify_store_accepts_memoryview() -> None:
    data = bytearray(b"pool bytes")
    assert codec.notify_store(5, 0, memoryview(data)) == codec.notify_store(5, 0, bytes(data))


def test_notify_store_takes_the_bytes_as_they_are_when_written() -> None:
    # No copy: a 1 MiB store copied on the serving thread cost most of a call on a user's mount.
    pool = bytearray(b"old bytes!")
    store = codec.notify_store(5, 0, memoryview(pool)[:3])
    pool[:3] = b"new"
    assert store.message[-3:] == b"new"
    assert len(store.head) == 16 + 24 and struct.unpack_from("<I", store.head)[0] == 16 + 24 + 3


def test_notify_inval_entry_encoding() -> None:
    assert codec.notify_inval_entry(1, b"1000-test") == b"".join([
        struct.pack("<I", 16 + 16 + 9 + 1),         # len
        struct.pack("<i", p.Notify.INVAL_ENTRY),    # error: notify code
        struct.pack("<Q", 0),                       # unique
        struct.pack("<Q", 1),                       # parent
        struct.pack("<I", 9),                       # namelen (without the NUL)
        struct.pack("<I", 0),                       # flags
        b"1000-test\0",                             # name, NUL-terminated
    ])


def test_notification_header() -> None:
    assert codec.notification(6, b"abc") == struct.pack("<IiQ", 19, 6, 0) + b"abc"


def test_ioctl_in_reads_the_arguments_and_at_most_the_input_there_is() -> None:
    body = p.IOCTL_IN.pack(3, p.IOCTL_UNRESTRICTED, 0xC0189401, 0x7000, 5, 64) + b"abcdefgh"
    assert codec.ioctl_in(body) == (3, p.IOCTL_UNRESTRICTED, 0xC0189401, 0x7000, b"abcde")
    # An in_size past what was read yields what was read; a body shorter than the arguments is refused.
    assert codec.ioctl_in(memoryview(body)[: p.IOCTL_IN.size + 2])[4] == b"ab"
    with pytest.raises(codec.ProtocolError):
        codec.ioctl_in(body[: p.IOCTL_IN.size - 1])
    assert codec.ioctl_out(0) == p.IOCTL_OUT.pack(0, 0, 0, 0)
