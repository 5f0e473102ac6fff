"""kdbus ABI numbers. Values are facts of the ABI; see include/kdbus.h for the C view."""

from __future__ import annotations

import enum
import struct

IOCTL_MAGIC = 0x95

SRC_ID_KERNEL = 0
DST_ID_NAME = 0
DST_ID_BROADCAST = 0xFFFF_FFFF_FFFF_FFFF
MATCH_ID_ANY = 0xFFFF_FFFF_FFFF_FFFF
FLAG_NEGOTIATE = 1 << 63

PAYLOAD_KERNEL = 0
PAYLOAD_DBUS = 0x4442757344427573

# Linux statfs magic of kdbusfs.
SUPER_MAGIC = 0x4442757

_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (IOCTL_MAGIC << 8) | nr


def ioc_size(cmd: int) -> int:
    return (cmd >> 16) & 0x3FFF


def ioc_dir(cmd: int) -> int:
    return (cmd >> 30) & 0x3


class Cmd(enum.IntEnum):
    BUS_MAKE = _ioc(_IOC_WRITE, 0x00, 24)
    ENDPOINT_MAKE = _ioc(_IOC_WRITE, 0x10, 24)
    ENDPOINT_UPDATE = _ioc(_IOC_WRITE, 0x11, 24)
    HELLO = _ioc(_IOC_READ | _IOC_WRITE, 0x80, 96)
    UPDATE = _ioc(_IOC_WRITE, 0x81, 24)
    BYEBYE = _ioc(_IOC_WRITE, 0x82, 24)
    FREE = _ioc(_IOC_WRITE, 0x83, 32)
    CONN_INFO = _ioc(_IOC_READ, 0x84, 56)
    BUS_CREATOR_INFO = _ioc(_IOC_READ, 0x85, 56)
    LIST = _ioc(_IOC_READ, 0x86, 40)
    SEND = _ioc(_IOC_WRITE, 0x90, 56)
    RECV = _ioc(_IOC_READ, 0x91, 64)
    NAME_ACQUIRE = _ioc(_IOC_WRITE, 0xA0, 24)
    NAME_RELEASE = _ioc(_IOC_WRITE, 0xA1, 24)
    MATCH_ADD = _ioc(_IOC_WRITE, 0xB0, 32)
    MATCH_REMOVE = _ioc(_IOC_WRITE, 0xB1, 32)


# kdbusfs's own command, not kdbus's: on `control`, hand the daemon the listener of a seccomp
# filter (struct kdbusfs_cmd_supervise {u64 size; u64 flags; s64 listener_fd}); see seccomp.py.
KDBUSFS_SUPERVISE = struct.Struct("<QQq")
KDBUSFS_CMD_SUPERVISE = _ioc(_IOC_WRITE, 0xF0, KDBUSFS_SUPERVISE.size)


class Item(enum.IntEnum):
    NEGOTIATE = 1
    PAYLOAD_VEC = 2
    PAYLOAD_OFF = 3
    PAYLOAD_MEMFD = 4
    FDS = 5
    CANCEL_FD = 6
    BLOOM_PARAMETER = 7
    BLOOM_FILTER = 8
    BLOOM_MASK = 9
    DST_NAME = 10
    MAKE_NAME = 11
    ATTACH_FLAGS_SEND = 12
    ATTACH_FLAGS_RECV = 13
    ID = 14
    NAME = 15
    DST_ID = 16
    # Metadata items: type = 0x1000 + log2(attach flag).
    TIMESTAMP = 0x1000
    CREDS = 0x1001
    PIDS = 0x1002
    AUXGROUPS = 0x1003
    OWNED_NAME = 0x1004
    TID_COMM = 0x1005
    PID_COMM = 0x1006
    EXE = 0x1007
    CMDLINE = 0x1008
    CGROUP = 0x1009
    CAPS = 0x100A
    SECLABEL = 0x100B
    AUDIT = 0x100C
    CONN_DESCRIPTION = 0x100D
    POLICY_ACCESS = 0x2000
    # Kernel notifications.
    NAME_ADD = 0x8000
    NAME_REMOVE = 0x8001
    NAME_CHANGE = 0x8002
    ID_ADD = 0x8003
    ID_REMOVE = 0x8004
    REPLY_TIMEOUT = 0x8005
    REPLY_DEAD = 0x8006


class Attach(enum.IntFlag):
    TIMESTAMP = 1 << 0
    CREDS = 1 << 1
    PIDS = 1 << 2
    AUXGROUPS = 1 << 3
    NAMES = 1 << 4
    TID_COMM = 1 << 5
    PID_COMM = 1 << 6
    EXE = 1 << 7
    CMDLINE = 1 << 8
    CGROUP = 1 << 9
    CAPS = 1 << 10
    SECLABEL = 1 << 11
    AUDIT = 1 << 12
    CONN_DESCRIPTION = 1 << 13


ATTACH_ALL = (1 << 14) - 1
ATTACH_ANY = 0xFFFF_FFFF_FFFF_FFFF

# Per-command flag bits (without FLAG_NEGOTIATE, which every command accepts).
MAKE_ACCESS_GROUP = 1 << 0
MAKE_ACCESS_WORLD = 1 << 1

HELLO_ACCEPT_FD = 1 << 0
HELLO_ACTIVATOR = 1 << 1
HELLO_POLICY_HOLDER = 1 << 2
HELLO_MONITOR = 1 << 3

MSG_EXPECT_REPLY = 1 << 0
MSG_NO_AUTO_START = 1 << 1
MSG_SIGNAL = 1 << 2

SEND_SYNC_REPLY = 1 << 0

RECV_PEEK = 1 << 0
RECV_DROP = 1 << 1
RECV_USE_PRIORITY = 1 << 2
RECV_RETURN_INCOMPLETE_FDS = 1 << 0
RECV_RETURN_DROPPED_MSGS = 1 << 1

LIST_UNIQUE = 1 << 0
LIST_NAMES = 1 << 1
LIST_ACTIVATORS = 1 << 2
LIST_QUEUED = 1 << 3

MATCH_REPLACE = 1 << 0

NAME_REPLACE_EXISTING = 1 << 0
NAME_ALLOW_REPLACEMENT = 1 << 1
NAME_QUEUE = 1 << 2
NAME_IN_QUEUE = 1 << 3
NAME_ACTIVATOR = 1 << 4
NAME_PRIMARY = 1 << 5
NAME_ACQUIRED = 1 << 6

POLICY_ACCESS_USER = 1
POLICY_ACCESS_GROUP = 2
POLICY_ACCESS_WORLD = 3
POLICY_SEE = 0
POLICY_TALK = 1
POLICY_OWN = 2
