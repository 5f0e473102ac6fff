# cython: language_level=3, boundscheck=False, wraparound=False
"""The frame every kdbus command runs in (KDBUS-SPEC.md §2.2), compiled.

Check the handle may run the command, copy the command struct from the caller (8-aligned, bounded
size), check flags and items, answer negotiation, run the body, then write the caller-visible
fields back. For commands whose ioctl number says _IOC_READ the kernel copies our reply over the
caller's fixed struct, so the reply carries the whole fixed part.

Which commands exist, what each accepts and which body runs it is data: the table in
kdbusfs/handle.py, built from `Command.of`. Compiled because every ioctl of every client passes
here: typed table entries and header fields read from the copied bytes (bus/args.pyx) leave the
frame of a FREE or RECV a fraction of what the interpreter spent on it.
"""

import enum
import errno as _errno

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t

from .abi.fields cimport u64_at
from .bus.args cimport Args, copy_in, make_args
from .bus.connection cimport Connection

from .abi import structs
from .abi.constants import _IOC_READ, FLAG_NEGOTIATE, Item, ioc_dir, ioc_size
from .abi.walk import ItemSpec, walk_items
from .errors import KdbusError, Refused

cdef object _REFUSED = Refused

# Where the caller's header fields are, from the one declaration of kdbus_cmd.
cdef Py_ssize_t _AT_FLAGS = structs.CMD.offsets["flags"]
cdef Py_ssize_t _AT_RETURN_FLAGS = structs.CMD.offsets["return_flags"]
cdef Py_ssize_t _ITEM_HEADER_SIZE = structs.ITEM_HEADER_SIZE
cdef uint64_t _FLAG_NEGOTIATE = FLAG_NEGOTIATE
cdef object _NEGOTIATE_ITEM = int(Item.NEGOTIATE)
cdef bytes _ZERO_U64 = bytes(8)


class HandleType(enum.Enum):
    """What an open kdbus file has become, which decides the commands it takes."""

    NONE = "none"
    BUS_OWNER = "bus owner"
    EP_OWNER = "endpoint owner"
    CONNECTED = "connection"


cdef object _NONE = HandleType.NONE
cdef object _EP_OWNER = HandleType.EP_OWNER
cdef object _CONNECTED = HandleType.CONNECTED


cdef class Connected:
    """HELLO made `conn` on the handle: the edge sets up what the connection needs of its file."""

    cdef readonly object conn
    cdef readonly bytes out

    def __init__(self, conn, bytes out not None):
        self.conn = conn
        self.out = out


cdef class Command:
    """One KDBUS_CMD_*: its struct, the flags and items it accepts, and the body that runs it.

    A setup command runs on a fresh handle of node type `setup_on`; any other on a connection of
    one of `kinds` (ENDPOINT_UPDATE: on the handle that made a custom endpoint)."""

    cdef readonly object cmd
    cdef readonly object layout
    cdef readonly uint64_t flags
    cdef readonly dict items
    cdef readonly object setup
    cdef readonly object setup_on
    cdef readonly object run
    cdef readonly tuple kinds
    cdef readonly bint owner_of_endpoint
    # Extra work when negotiating (SEND negotiates its message too).
    cdef readonly object negotiate
    # Commands that report through their struct even when failing (RECV on EAGAIN).
    cdef readonly bint writeback_on_error
    # Computed from `items`: the types that must be there.
    cdef readonly tuple mandatory
    # _IOC_READ in the number: the kernel copies our out data over the caller's fixed struct.
    cdef readonly bint returns_struct
    cdef Py_ssize_t size
    cdef uint64_t accepted_flags

    @classmethod
    def of(cls, cmd, layout, uint64_t flags, *specs, setup=None, setup_on=None, run=None,
           tuple kinds=(), bint owner_of_endpoint=False, negotiate=None, bint writeback_on_error=False):
        # The fixed part is what _IOC_SIZE covers, so the reply of an _IOC_READ command is all of it.
        assert layout.size == ioc_size(cmd), cmd.name
        cdef Command command = cls.__new__(cls)
        command.cmd = cmd
        command.layout = layout
        command.size = layout.size
        command.flags = flags
        command.accepted_flags = flags | _FLAG_NEGOTIATE
        command.items = {Item.NEGOTIATE: ItemSpec(Item.NEGOTIATE), **{spec.type: spec for spec in specs}}
        command.setup = setup
        command.setup_on = setup_on
        command.run = run
        command.kinds = kinds
        command.owner_of_endpoint = owner_of_endpoint
        command.negotiate = negotiate
        command.writeback_on_error = writeback_on_error
        command.mandatory = tuple(spec.type for spec in specs if spec.mandatory)
        command.returns_struct = bool(ioc_dir(cmd) & _IOC_READ)
        return command


cdef class CommandTable:
    """The commands by ioctl number, and the frame that runs them."""

    cdef dict _commands

    def __init__(self, *commands):
        cdef Command command
        self._commands = {}
        for command in commands:
            self._commands[command.cmd] = command

    def __getitem__(self, cmd):
        return self._commands[cmd]

    def __contains__(self, cmd):
        return cmd in self._commands

    def __iter__(self):
        return iter(self._commands)

    def __len__(self):
        return len(self._commands)

    def ioctl(self, handle, cmd, unsigned long long address, bytes in_data not None, caller):
        """Run one kdbus ioctl; returns the ioctl's out data, Pending for a blocked call, or
        Connected (with the out data) when HELLO has made a connection on the handle. Every
        failure raises KdbusError."""
        out = self._run(handle, cmd, address, in_data, caller)
        if type(out) is _REFUSED:
            raise (<object>out).error()
        return out

    def attempt(self, handle, cmd, unsigned long long address, bytes in_data not None, caller):
        """ioctl(), except that a failure a body returns as Refused (an empty RECV) is returned."""
        return self._run(handle, cmd, address, in_data, caller)

    cdef object _run(self, handle, cmd, unsigned long long address, bytes in_data, caller):
        cdef Command command = self._commands.get(cmd)
        if command is None:
            raise KdbusError(_errno.ENOTTY, f"unknown ioctl {cmd:#x}")
        _check_handle(handle, command)
        cdef bytes data = copy_in(caller, address, command.layout, in_data)
        cdef dict items
        if u64_at(data, _AT_FLAGS) & ~command.accepted_flags:
            _write_return_flags(caller, address, data)
            raise KdbusError(_errno.EINVAL, f"{command.cmd.name}: unknown flags {u64_at(data, _AT_FLAGS):#x}")
        if PyBytes_GET_SIZE(data) == command.size:
            items = {}
        else:
            try:
                items = walk_items(data, command.size, command.items)
            except KdbusError:
                _write_return_flags(caller, address, data)
                raise
        cdef Args args = make_args(address, data, command.layout, command.size, items)
        if _NEGOTIATE_ITEM in items:
            _negotiate_items(args, command, caller)
        if args.negotiate:
            if command.negotiate is not None:
                command.negotiate(handle.conn, args, caller)
            args.put(_AT_FLAGS, command.flags)
            caller.write(address + _AT_FLAGS, _u64_bytes(command.flags))
            return args.fixed() if command.returns_struct else b""
        if args.return_flags_in():
            args.put(_AT_RETURN_FLAGS, 0)
        try:
            if command.mandatory:
                _check_mandatory(command, items)
            if command.run is not None:
                pending = command.run(handle.conn, args, caller)
                if pending is not None:
                    if type(pending) is _REFUSED:
                        _write_back_failed(args, command, caller)
                    return pending
                made = None
            else:
                made = command.setup(handle, args, caller)
        except KdbusError:
            _write_back_failed(args, command, caller)
            raise
        cdef bytes out
        if command.returns_struct:
            out = args.fixed()
        else:
            if args.changed():
                caller.write(address, args.fixed())
            out = b""
        return out if made is None else Connected(made, out)


cdef int _check_handle(handle, Command command) except -1:
    handle_type = handle.type
    if command.owner_of_endpoint:
        if handle_type is not _EP_OWNER:
            raise KdbusError(_errno.EBADFD, f"{command.cmd.name} on a {handle_type.value} handle")
        return 0
    if command.setup_on is not None:
        if handle_type is not _NONE or not isinstance(handle.node, command.setup_on):
            raise KdbusError(_errno.EBADFD, f"{command.cmd.name} on a {handle_type.value} handle")
        return 0
    cdef Connection conn = handle.conn
    if handle_type is not _CONNECTED or conn is None:
        raise KdbusError(_errno.EBADFD, f"{command.cmd.name} needs a connection")
    if not conn.active:
        raise KdbusError(_errno.ECONNRESET, f"connection {conn.id} is disconnected")
    if conn.kind not in command.kinds:
        raise KdbusError(_errno.EOPNOTSUPP, f"{command.cmd.name} on a {conn.kind.value}")
    return 0


cdef int _write_back_failed(Args args, Command command, caller) except -1:
    """What a failed command still tells its caller through the struct."""
    if command.writeback_on_error:
        if args.changed():
            caller.write(args.address, args.fixed())
    elif args.return_flags_out() != args.return_flags_in():
        caller.write(args.address + _AT_RETURN_FLAGS, _u64_bytes(args.return_flags_out()))
    return 0


cdef int _check_mandatory(Command command, dict items) except -1:
    for item_type in command.mandatory:
        if item_type not in items:
            raise KdbusError(_errno.EINVAL, f"{command.cmd.name}: missing item {Item(item_type).name}")
    return 0


cdef inline bytes _u64_bytes(uint64_t value):
    return PyBytes_FromStringAndSize(<char *>&value, 8)


cdef int _write_return_flags(caller, unsigned long long address, bytes data) except -1:
    # kdbus zeroes return_flags in its copy and writes it back even when parsing fails.
    if u64_at(data, _AT_RETURN_FLAGS):
        caller.write(address + _AT_RETURN_FLAGS, _ZERO_U64)
    return 0


cdef int _negotiate_items(Args args, Command command, caller) except -1:
    """Zero, in the caller's NEGOTIATE item, every item type this command does not accept."""
    negotiation = args.item(_NEGOTIATE_ITEM)
    if negotiation is None:
        return 0
    cdef bytes payload = negotiation.payload
    cdef Py_ssize_t i
    for i in range(0, PyBytes_GET_SIZE(payload) - 7, 8):
        if u64_at(payload, i) not in command.items:
            caller.write(args.address + negotiation.offset + _ITEM_HEADER_SIZE + i, _ZERO_U64)
    return 0
