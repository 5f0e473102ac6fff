"""FUSE kernel protocol numbers and layouts (include/uapi/linux/fuse.h), for protocol 7.x."""

from __future__ import annotations

import enum
import struct

KERNEL_VERSION = 7
# The newest minor whose structs this codec writes; older kernels get their own minor echoed.
KERNEL_MINOR_VERSION = 40
# The kernel refuses reads of /dev/fuse into buffers smaller than this.
MIN_READ_BUFFER = 8192


class Opcode(enum.IntEnum):
    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52


class Notify(enum.IntEnum):
    POLL = 1
    INVAL_INODE = 2
    INVAL_ENTRY = 3
    STORE = 4
    RETRIEVE = 5
    DELETE = 6


# INIT flags.
ASYNC_READ = 1 << 0
BIG_WRITES = 1 << 5
DONT_MASK = 1 << 6
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22
INIT_EXT = 1 << 30
# Flags above bit 31 travel in flags2 (with INIT_EXT).
PASSTHROUGH = 1 << 37
# How deep backing files may stack under us: a memfd backs a pool directly.
PASSTHROUGH_STACK_DEPTH = 1

# OPEN reply flags.
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_STREAM = 1 << 4
FOPEN_PASSTHROUGH = 1 << 7

# ioctls on /dev/fuse: register (or drop) a file the kernel serves reads and mmap of an open from.
DEV_IOC_BACKING_OPEN = 0x4010E501   # _IOW(229, 1, struct fuse_backing_map {s32 fd, u32 flags, u64 pad})
DEV_IOC_BACKING_CLOSE = 0x4004E502  # _IOW(229, 2, u32 backing_id)

# IOCTL flags.
IOCTL_COMPAT = 1 << 0
IOCTL_UNRESTRICTED = 1 << 1
IOCTL_DIR = 1 << 4

# POLL flags.
POLL_SCHEDULE_NOTIFY = 1 << 0

ROOT_ID = 1
# RELEASE travels as a background request; past max_background the kernel parks it while later
# requests overtake it, and a closed connection or bus would linger after close() returned. So no
# background request is ever parked (u16 maximum).
MAX_BACKGROUND = 0xFFFF

IN_HEADER = struct.Struct("<IIQQIIIHH")      # len opcode unique nodeid uid gid pid total_extlen pad
OUT_HEADER = struct.Struct("<IiQ")           # len error unique
INIT_IN = struct.Struct("<IIII")             # major minor max_readahead flags (flags2 follows in 7.36+)
INIT_OUT = struct.Struct("<IIIIHHIIHHII24x")  # ... max_write time_gran max_pages map_alignment flags2
#                                                max_stack_depth
BACKING_MAP = struct.Struct("<iIQ")
# ino size blocks atime mtime ctime, then *nsec mode nlink uid gid rdev blksize flags
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
ENTRY_OUT_HEAD = struct.Struct("<QQQQII")    # nodeid generation entry_valid attr_valid *_nsec
ATTR_OUT_HEAD = struct.Struct("<QII")        # attr_valid attr_valid_nsec dummy
GETATTR_IN = struct.Struct("<IIQ")           # getattr_flags dummy fh
OPEN_IN = struct.Struct("<II")               # flags open_flags
OPEN_OUT = struct.Struct("<QIi")             # fh open_flags backing_id
READ_IN = struct.Struct("<QQIIQII")          # fh offset size read_flags lock_owner flags padding
RELEASE_IN = struct.Struct("<QIIQ")          # fh flags release_flags lock_owner
FLUSH_IN = struct.Struct("<QIIQ")            # fh unused padding lock_owner
FORGET_IN = struct.Struct("<Q")
BATCH_FORGET_IN = struct.Struct("<II")
FORGET_ONE = struct.Struct("<QQ")
IOCTL_IN = struct.Struct("<QIIQII")          # fh flags cmd arg in_size out_size
IOCTL_OUT = struct.Struct("<iIII")           # result flags in_iovs out_iovs
POLL_IN = struct.Struct("<QQII")             # fh kh flags events
POLL_OUT = struct.Struct("<II")
INTERRUPT_IN = struct.Struct("<Q")
ACCESS_IN = struct.Struct("<II")
KSTATFS = struct.Struct("<QQQQQIIII24x")     # blocks bfree bavail files ffree bsize namelen frsize pad spare
DIRENT_HEAD = struct.Struct("<QQII")         # ino off namelen type
NOTIFY_POLL = struct.Struct("<Q")
NOTIFY_STORE = struct.Struct("<QQII")        # nodeid offset size padding
NOTIFY_INVAL_ENTRY = struct.Struct("<QII")   # parent namelen flags


def opcode_name(opcode: int) -> str:
    """An opcode's name for logs (unknown ones by number)."""
    try:
        return Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode}"


def field_offsets(layout: struct.Struct, names: str) -> dict[str, int]:
    """Where each field of `layout` starts: compiled code reads and writes headers in place, at
    offsets taken from the one format above rather than written out a second time."""
    fields = names.split()
    codes = layout.format.lstrip("<")
    if len(fields) != len(codes):
        raise AssertionError(f"{len(fields)} names for {len(codes)} fields of {layout.format}")
    return {name: struct.calcsize("<" + codes[:i]) for i, name in enumerate(fields)}


IN_HEADER_AT = field_offsets(IN_HEADER, "len opcode unique nodeid uid gid pid total_extlen pad")
OUT_HEADER_AT = field_offsets(OUT_HEADER, "len error unique")
IOCTL_IN_AT = field_offsets(IOCTL_IN, "fh flags cmd arg in_size out_size")
IOCTL_OUT_AT = field_offsets(IOCTL_OUT, "result flags in_iovs out_iovs")
POLL_IN_AT = field_offsets(POLL_IN, "fh kh flags events")
POLL_OUT_AT = field_offsets(POLL_OUT, "revents padding")
