"""Fixed-size kdbus structures.

Each layout is declared once with construct (readable, symmetric parse/build, used by tests and tooling)
and a `Layout` twin is derived from that declaration: a precompiled `struct.Struct` plus a named tuple,
which the hot path uses because interpreted construct costs microseconds per field.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any

import construct as c

_FORMAT_OF: dict[Any, str] = {
    c.Int64ul: "Q",
    c.Int64sl: "q",
    c.Int32ul: "I",
    c.Int32sl: "i",
    c.Int16ul: "H",
    c.Int8ul: "B",
}


class Layout:
    """A `struct.Struct` and a named tuple derived from a construct declaration of fixed size."""

    def __init__(self, name: str, declaration: c.Struct) -> None:
        fmt = "<"
        names: list[str] = []
        for sub in declaration.subcons:
            fmt += _format_of(sub.subcon)
            names.append(sub.name)
        self.name = name
        self.declaration = declaration
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        self.tuple = namedtuple(name, names)  # type: ignore[misc]
        # tuple.__new__ skips namedtuple._make's length check: struct gives exactly the fields.
        self._new = tuple.__new__
        if self.size != declaration.sizeof():
            raise AssertionError(f"{name}: derived size {self.size} != {declaration.sizeof()}")

    def unpack(self, data: bytes | bytearray | memoryview, offset: int = 0) -> Any:
        return self._new(self.tuple, self.struct.unpack_from(data, offset))

    def pack(self, *values: int | bytes) -> bytes:
        return self.struct.pack(*values)


def _format_of(subcon: Any) -> str:
    if isinstance(subcon, c.Bytes) or type(subcon).__name__ == "Bytes":
        return f"{subcon.length}s"
    try:
        return _FORMAT_OF[subcon]
    except KeyError:
        raise TypeError(f"no struct format for {subcon!r}") from None


u64 = c.Int64ul
s64 = c.Int64sl
u32 = c.Int32ul

# The header shared by every command struct.
cmd = c.Struct("size" / u64, "flags" / u64, "return_flags" / u64)
cmd_hello = c.Struct(
    "size" / u64, "flags" / u64, "return_flags" / u64,
    "attach_flags_send" / u64, "attach_flags_recv" / u64, "bus_flags" / u64,
    "id" / u64, "pool_size" / u64, "offset" / u64, "items_size" / u64,
    "id128" / c.Bytes(16),
)
cmd_free = c.Struct("size" / u64, "flags" / u64, "return_flags" / u64, "offset" / u64)
cmd_info = c.Struct(
    "size" / u64, "flags" / u64, "return_flags" / u64,
    "id" / u64, "attach_flags" / u64, "offset" / u64, "info_size" / u64,
)
cmd_list = c.Struct(
    "size" / u64, "flags" / u64, "return_flags" / u64, "offset" / u64, "list_size" / u64,
)
msg_info = c.Struct("offset" / u64, "msg_size" / u64, "return_flags" / u64)
cmd_send = c.Struct(
    "size" / u64, "flags" / u64, "return_flags" / u64, "msg_address" / u64,
    "reply_offset" / u64, "reply_msg_size" / u64, "reply_return_flags" / u64,
)
cmd_recv = c.Struct(
    "size" / u64, "flags" / u64, "return_flags" / u64, "priority" / s64, "dropped_msgs" / u64,
    "msg_offset" / u64, "msg_msg_size" / u64, "msg_return_flags" / u64,
)
cmd_match = c.Struct("size" / u64, "flags" / u64, "return_flags" / u64, "cookie" / u64)
msg = c.Struct(
    "size" / u64, "flags" / u64, "priority" / s64, "dst_id" / u64, "src_id" / u64,
    "payload_type" / u64, "cookie" / u64, "timeout_ns" / u64,
)
info = c.Struct("size" / u64, "id" / u64, "flags" / u64)
item_header = c.Struct("size" / u64, "type" / u64)

# Item payloads.
vec = c.Struct("size" / u64, "address" / u64)
memfd = c.Struct("start" / u64, "size" / u64, "fd" / c.Int32sl, "pad" / u32)
creds = c.Struct(
    "uid" / u64, "euid" / u64, "suid" / u64, "fsuid" / u64,
    "gid" / u64, "egid" / u64, "sgid" / u64, "fsgid" / u64,
)
pids = c.Struct("pid" / u64, "tid" / u64, "ppid" / u64)
timestamp = c.Struct("seqnum" / u64, "monotonic_ns" / u64, "realtime_ns" / u64)
bloom_parameter = c.Struct("size" / u64, "n_hash" / u64)
notify_id_change = c.Struct("id" / u64, "flags" / u64)
# NAME_ADD/REMOVE/CHANGE: the old and the new owner, then (optionally) the name.
notify_name_change = c.Struct("old_id" / u64, "old_flags" / u64, "new_id" / u64, "new_flags" / u64)
policy_access = c.Struct("type" / u64, "access" / u64, "id" / u64)
audit = c.Struct("sessionid" / u32, "loginuid" / u32)
# Fixed parts in front of variable data: kdbus_bloom_filter (then the filter words), kdbus_name
# (OWNED_NAME: then the NUL-terminated name), kdbus_caps (then four capability sets).
bloom_filter = c.Struct("generation" / u64)
name = c.Struct("flags" / u64)
caps = c.Struct("last_cap" / u32)

CMD = Layout("kdbus_cmd", cmd)
CMD_HELLO = Layout("kdbus_cmd_hello", cmd_hello)
CMD_FREE = Layout("kdbus_cmd_free", cmd_free)
CMD_INFO = Layout("kdbus_cmd_info", cmd_info)
CMD_LIST = Layout("kdbus_cmd_list", cmd_list)
CMD_SEND = Layout("kdbus_cmd_send", cmd_send)
CMD_RECV = Layout("kdbus_cmd_recv", cmd_recv)
CMD_MATCH = Layout("kdbus_cmd_match", cmd_match)
MSG = Layout("kdbus_msg", msg)
MSG_INFO = Layout("kdbus_msg_info", msg_info)
INFO = Layout("kdbus_info", info)
ITEM_HEADER = Layout("kdbus_item", item_header)
VEC = Layout("kdbus_vec", vec)
MEMFD = Layout("kdbus_memfd", memfd)
CREDS = Layout("kdbus_creds", creds)
PIDS = Layout("kdbus_pids", pids)
TIMESTAMP = Layout("kdbus_timestamp", timestamp)
BLOOM_PARAMETER = Layout("kdbus_bloom_parameter", bloom_parameter)
NOTIFY_ID_CHANGE = Layout("kdbus_notify_id_change", notify_id_change)
NOTIFY_NAME_CHANGE = Layout("kdbus_notify_name_change", notify_name_change)
POLICY_ACCESS = Layout("kdbus_policy_access", policy_access)
AUDIT = Layout("kdbus_audit", audit)
BLOOM_FILTER = Layout("kdbus_bloom_filter", bloom_filter)
NAME = Layout("kdbus_name", name)
CAPS = Layout("kdbus_caps", caps)

U64 = struct.Struct("<Q")
ITEM_HEADER_SIZE = ITEM_HEADER.size


def align8(n: int) -> int:
    return (n + 7) & ~7
