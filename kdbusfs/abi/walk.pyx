# cython: language_level=3, boundscheck=False, wraparound=False
"""The items a caller hands in: walked and validated, by the rules every command shares
(KDBUS-SPEC.md §2.2, rules 5-7).

Items follow a command's fixed part: {u64 size, u64 type, payload}, each starting 8-aligned.
Compiled with the command frame (kdbusfs/dispatch.pyx), which walks every command's items: headers
and sizes are read as C integers and the rules are typed, so a walk creates only the payloads and
their ParsedItems. Building and reading items the bus writes is in items.py.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memchr

from .fields cimport u64_at

import errno as _errno

from ..errors import KdbusError
from ..limits import SYSNAME_MAX_LEN
from .constants import Item
from .structs import (
    AUDIT,
    BLOOM_PARAMETER,
    CREDS,
    ITEM_HEADER,
    MEMFD,
    NOTIFY_ID_CHANGE,
    NOTIFY_NAME_CHANGE,
    PIDS,
    POLICY_ACCESS,
    TIMESTAMP,
    U64,
    VEC,
)

# The item header, from its one declaration (structs.ItemHeader).
cdef Py_ssize_t _HEADER = ITEM_HEADER.size
cdef Py_ssize_t _AT_SIZE = ITEM_HEADER.offsets["size"]
cdef Py_ssize_t _AT_TYPE = ITEM_HEADER.offsets["type"]
cdef Py_ssize_t _VEC_AT_SIZE = VEC.offsets["size"]
# An fd (FDS, CANCEL_FD), a group id (AUXGROUPS), a capability word (CAPS).
cdef Py_ssize_t _U32_SIZE = 4


cdef inline uint64_t _align8(uint64_t n) noexcept:
    return (n + 7) & ~(<uint64_t>7)


cdef class ItemSpec:
    """An item type a command accepts."""

    cdef readonly object type
    cdef readonly bint multiple
    cdef readonly bint mandatory

    def __init__(self, type, bint multiple=False, bint mandatory=False):
        self.type = type
        self.multiple = multiple
        self.mandatory = mandatory

    def __repr__(self):
        return f"ItemSpec(type={self.type!r}, multiple={self.multiple}, mandatory={self.mandatory})"

    def __eq__(self, other):
        if not isinstance(other, ItemSpec):
            return NotImplemented
        cdef ItemSpec spec = other
        return (self.type, self.multiple, self.mandatory) == (spec.type, spec.multiple, spec.mandatory)

    def __hash__(self):
        return hash((self.type, self.multiple, self.mandatory))


cdef class ParsedItem:
    """An item as walked: its type, where its header is (relative to the start of the command)
    and its payload."""

    cdef readonly object type
    cdef readonly Py_ssize_t offset
    cdef readonly bytes payload

    def __init__(self, type, Py_ssize_t offset, bytes payload not None):
        self.type = type
        self.offset = offset
        self.payload = payload

    def __repr__(self):
        return f"ParsedItem(type={self.type!r}, offset={self.offset}, payload={self.payload!r})"

    def __eq__(self, other):
        if not isinstance(other, ParsedItem):
            return NotImplemented
        cdef ParsedItem parsed = other
        return (self.type == parsed.type and self.offset == parsed.offset
                and self.payload == parsed.payload)

    __hash__ = None

    @property
    def u64(self):
        if PyBytes_GET_SIZE(self.payload) < 8:
            return U64.unpack_from(self.payload)[0]  # raises as for any short struct
        return u64_at(self.payload, 0)

    @property
    def string(self):
        """The payload of a validated string item, without its NUL."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self.payload)
        return self.payload[:size - 1 if size else 0].decode("utf-8", "surrogateescape")


cdef bint _str_valid(bytes payload) noexcept:
    cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
    cdef const char *start = PyBytes_AS_STRING(payload)
    return size > 0 and memchr(start, 0, size) == start + size - 1


def str_valid(bytes payload not None):
    """kdbus string rule: non-empty and the first NUL is the last byte."""
    return _str_valid(payload)


def validate_sysname(bytes payload not None):
    """Names that become file names or descriptions: 1..63 of [A-Za-z0-9_], inner '-' and '.'."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
    cdef const unsigned char *name = <const unsigned char *>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t i, last = size - 2
    cdef unsigned char ch
    if size < 2:
        raise KdbusError(_errno.EINVAL, "empty name")
    if size > SYSNAME_MAX_LEN + 1:
        raise KdbusError(_errno.ENAMETOOLONG, f"name longer than {SYSNAME_MAX_LEN} characters")
    if not _str_valid(payload):
        raise KdbusError(_errno.EINVAL, "name is not a NUL-terminated string")
    for i in range(size - 1):
        ch = name[i]
        if (48 <= ch <= 57) or (65 <= ch <= 90) or (97 <= ch <= 122) or ch == 95:
            continue
        if 0 < i < last and (ch == 45 or ch == 46):
            continue
        raise KdbusError(_errno.EINVAL, f"invalid character {chr(ch)!r} in name")


def _string(bytes payload):
    if not _str_valid(payload):
        raise KdbusError(_errno.EINVAL, "malformed string")


def _vec(bytes payload):
    if u64_at(payload, _VEC_AT_SIZE) == 0:
        raise KdbusError(_errno.EINVAL, "empty payload vector")


def _memfd(bytes payload):
    memfd = MEMFD.unpack(payload)
    if memfd.size == 0:
        raise KdbusError(_errno.EINVAL, "empty memfd item")
    if memfd.fd < 0:
        raise KdbusError(_errno.EBADF, "negative memfd fd")


def _caps(bytes payload):
    # Four capability sets (inheritable, permitted, effective, bounding) of as many u32 words as
    # last_cap needs. kdbus's bound (CAP_TO_INDEX(last_cap) words per set) is one word per set short
    # of that; kept so that the same items pass (no command takes CAPS from a client anyway).
    last_cap = int.from_bytes(payload[:4], "little")
    if len(payload) < 4 + 4 * (last_cap >> 5) * 4:
        raise KdbusError(_errno.EINVAL, f"capability sets shorter than last_cap {last_cap} needs")


def _string_after(Py_ssize_t offset):
    """A fixed part of `offset` bytes, then an optional name that must be a proper string."""
    def check(bytes payload):
        if len(payload) > offset and not _str_valid(payload[offset:]):
            raise KdbusError(_errno.EINVAL, "malformed name after the fixed part")
    return check


cdef class PayloadRule:
    """The shape an item's payload must have before anything reads it.

    `exact` or `minimum` bound its size and `multiple` its granularity; `check` then looks at its
    content (strings, fields that must not be zero), and may rely on the size being right.
    """

    # -1: no exact size.
    cdef Py_ssize_t _exact
    cdef readonly Py_ssize_t minimum
    cdef readonly Py_ssize_t multiple
    cdef readonly object check

    def __init__(self, exact=None, Py_ssize_t minimum=0, Py_ssize_t multiple=1, check=None):
        if exact is not None and exact < 0:
            raise ValueError(f"negative exact size {exact}")
        self._exact = -1 if exact is None else exact
        self.minimum = minimum
        self.multiple = multiple
        self.check = check

    @property
    def exact(self):
        return None if self._exact < 0 else self._exact

    def __repr__(self):
        return (f"PayloadRule(exact={self.exact}, minimum={self.minimum}, multiple={self.multiple}, "
                f"check={self.check!r})")


_STRING = PayloadRule(check=_string)
_U64 = PayloadRule(exact=U64.size)
_NAME_CHANGE = PayloadRule(minimum=NOTIFY_NAME_CHANGE.size, check=_string_after(NOTIFY_NAME_CHANGE.size))
_NOTIFY_ID = PayloadRule(exact=NOTIFY_ID_CHANGE.size)
_EMPTY = PayloadRule(exact=0)

# Every item type's payload rule: the one place that says how large each item is (KDBUS-SPEC.md
# §2.2 rule 7, kdbus_item_validate). Items whose payload is a struct need exactly that struct, so
# no parser downstream can read past a short payload. Two rules are stricter than kdbus, which reads
# them unchecked: PIDS (kdbus copies 24 bytes from whatever follows a short item) and OWNED_NAME.
PAYLOAD_RULES = {
    Item.NEGOTIATE: PayloadRule(multiple=U64.size),
    Item.PAYLOAD_VEC: PayloadRule(exact=VEC.size, check=_vec),
    Item.PAYLOAD_OFF: PayloadRule(exact=VEC.size, check=_vec),
    Item.PAYLOAD_MEMFD: PayloadRule(exact=MEMFD.size, check=_memfd),
    Item.FDS: PayloadRule(multiple=_U32_SIZE),
    Item.CANCEL_FD: PayloadRule(exact=_U32_SIZE),
    Item.BLOOM_PARAMETER: PayloadRule(exact=BLOOM_PARAMETER.size),
    # A generation, then the bloom words (their number depends on the bus: checked where used).
    Item.BLOOM_FILTER: PayloadRule(minimum=U64.size),
    # Any size here; it must be whole bloom filters of the bus, checked where used.
    Item.BLOOM_MASK: PayloadRule(),
    Item.DST_NAME: _STRING,
    Item.MAKE_NAME: PayloadRule(check=validate_sysname),
    Item.ATTACH_FLAGS_SEND: _U64,
    Item.ATTACH_FLAGS_RECV: _U64,
    Item.ID: _U64,
    Item.NAME: _STRING,
    Item.DST_ID: _U64,
    Item.TIMESTAMP: PayloadRule(exact=TIMESTAMP.size),
    Item.CREDS: PayloadRule(exact=CREDS.size),
    Item.PIDS: PayloadRule(exact=PIDS.size),
    Item.AUXGROUPS: PayloadRule(multiple=_U32_SIZE),
    Item.OWNED_NAME: PayloadRule(minimum=U64.size, check=_string_after(U64.size)),
    Item.TID_COMM: _STRING,
    Item.PID_COMM: _STRING,
    Item.EXE: _STRING,
    Item.CMDLINE: _STRING,
    Item.CGROUP: _STRING,
    Item.CAPS: PayloadRule(minimum=_U32_SIZE, check=_caps),
    Item.SECLABEL: _STRING,
    Item.AUDIT: PayloadRule(exact=AUDIT.size),
    Item.CONN_DESCRIPTION: PayloadRule(check=validate_sysname),
    Item.POLICY_ACCESS: PayloadRule(exact=POLICY_ACCESS.size),
    Item.NAME_ADD: _NAME_CHANGE,
    Item.NAME_REMOVE: _NAME_CHANGE,
    Item.NAME_CHANGE: _NAME_CHANGE,
    Item.ID_ADD: _NOTIFY_ID,
    Item.ID_REMOVE: _NOTIFY_ID,
    Item.REPLY_TIMEOUT: _EMPTY,
    Item.REPLY_DEAD: _EMPTY,
}
cdef dict _RULES = PAYLOAD_RULES


def _type_name(item_type):
    try:
        return Item(item_type).name
    except ValueError:
        return f"{item_type:#x}"


def validate_item(item_type, bytes payload not None):
    """Check a payload against its type's rule (raises KdbusError); unknown types have none.

    Failures are the caller's bad input: they say which item and why, for a debug log line.
    """
    _validate(item_type, payload)


cdef int _validate(object item_type, bytes payload) except -1:
    cdef PayloadRule rule = _RULES.get(item_type)
    if rule is None:
        return 0
    cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
    if rule._exact >= 0:
        if size != rule._exact:
            raise KdbusError(_errno.EINVAL, f"item {_type_name(item_type)}: payload of {size} bytes, "
                                            f"want {rule._exact}")
    elif size < rule.minimum or size % rule.multiple:
        raise KdbusError(_errno.EINVAL, f"item {_type_name(item_type)}: payload of {size} bytes, want "
                                        f"at least {rule.minimum} in multiples of {rule.multiple}")
    if rule.check is not None:
        try:
            rule.check(payload)
        except KdbusError as exc:
            raise KdbusError(exc.errno, f"item {_type_name(item_type)}: {exc.why}") from None
    return 0


cdef inline uint64_t _item_size(bytes raw, Py_ssize_t pos, Py_ssize_t end) except? 0:
    """The size of the item at `pos`, checked to be a whole item inside data[:end] (rule 5)."""
    if pos + _HEADER > end:
        raise KdbusError(_errno.EINVAL, f"truncated item header at offset {pos}")
    cdef uint64_t size = u64_at(raw, pos + _AT_SIZE)
    if size < <uint64_t>_HEADER or size > <uint64_t>(end - pos):
        raise KdbusError(_errno.EINVAL, f"item at offset {pos} has bad size {size}")
    return size


cdef inline int _check_walk_end(Py_ssize_t pos, Py_ssize_t end) except -1:
    """A walk ends exactly at the aligned end of the area (rule 6)."""
    if <uint64_t>pos != _align8(<uint64_t>end):
        raise KdbusError(_errno.EINVAL, "trailing bytes after the last item")
    return 0


def walk_items(data, Py_ssize_t start, accepted):
    """Walk and validate the items in data[start:], keyed by type.

    Every item needs size >= 16 and must lie inside the area; the next item starts at the aligned end
    of the previous one, and the walk must end exactly at the aligned end of the area.
    """
    cdef bytes raw = data if type(data) is bytes else bytes(data)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(raw)
    cdef Py_ssize_t pos = start
    cdef uint64_t size
    cdef dict found = {}
    cdef ItemSpec spec
    cdef list previous
    while pos < end:
        size = _item_size(raw, pos, end)
        item_type = u64_at(raw, pos + _AT_TYPE)
        spec = accepted.get(item_type)
        if spec is None:
            raise KdbusError(_errno.EINVAL, f"item type {item_type:#x} not accepted here")
        payload = raw[pos + _HEADER : pos + <Py_ssize_t>size]
        _validate(item_type, payload)
        previous = found.get(item_type)
        if previous is None:
            found[item_type] = [ParsedItem(item_type, pos, payload)]
        elif not spec.multiple:
            raise KdbusError(_errno.EINVAL, f"item type {item_type:#x} given twice")
        else:
            previous.append(ParsedItem(item_type, pos, payload))
        pos += <Py_ssize_t>_align8(size)
    _check_walk_end(pos, end)
    return found


# The items a message (kdbus_msg) may carry, kdbus_msg_examine's: payload vectors and memfds, any
# number of each (staging bounds the memfds), and at most one of each of the others.
MSG_ITEMS = {
    Item.PAYLOAD_VEC: ItemSpec(Item.PAYLOAD_VEC, multiple=True),
    Item.PAYLOAD_MEMFD: ItemSpec(Item.PAYLOAD_MEMFD, multiple=True),
    Item.FDS: ItemSpec(Item.FDS),
    Item.BLOOM_FILTER: ItemSpec(Item.BLOOM_FILTER),
    Item.DST_NAME: ItemSpec(Item.DST_NAME),
}
cdef dict _MSG_ITEMS = MSG_ITEMS
cdef uint64_t _PAYLOAD_VEC = Item.PAYLOAD_VEC
cdef uint64_t _NEGOTIATE = Item.NEGOTIATE
cdef uint64_t _VEC_ITEM_SIZE = _HEADER + VEC.size


def walk_message(bytes data not None, Py_ssize_t start):
    """Walk and validate a message's items, data[start:]: its items as (type, offset, size), in
    order, offsets relative to the start of `data`.

    The rules of walk_items with a message's accepted types, each item checked in turn: a type
    given twice is refused before its payload is checked. Runs for every message sent, so a
    well-formed PAYLOAD_VEC (the common item) is accepted without building its payload.
    """
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t pos = start
    cdef uint64_t size, item_type
    cdef list found = []
    cdef set seen = set()
    cdef ItemSpec spec
    while pos < end:
        size = _item_size(data, pos, end)
        item_type = u64_at(data, pos + _AT_TYPE)
        if item_type == _PAYLOAD_VEC and size == _VEC_ITEM_SIZE and u64_at(data, pos + _HEADER + _VEC_AT_SIZE):
            pass
        else:
            spec = _MSG_ITEMS.get(item_type)
            if spec is None:
                if item_type == _NEGOTIATE:
                    raise KdbusError(_errno.EINVAL, "NEGOTIATE item in a message that is not negotiating")
                raise KdbusError(_errno.EINVAL, f"item type {item_type:#x} not accepted in a message")
            if not spec.multiple:
                if item_type in seen:
                    raise KdbusError(_errno.EINVAL, f"item type {item_type:#x} given twice")
                seen.add(item_type)
            _validate(item_type, data[pos + _HEADER : pos + <Py_ssize_t>size])
        found.append((item_type, pos, size))
        pos += <Py_ssize_t>_align8(size)
    _check_walk_end(pos, end)
    return found
