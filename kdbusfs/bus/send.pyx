# cython: language_level=3, boundscheck=False, wraparound=False
"""SEND: a message from a connection to its receivers (kdbus_cmd_send and the unicast path).

A unicast goes to one connection (by id or by name), a broadcast (bus.py) to every connection whose
matches select it. A call that expects a reply leaves a tracker (reply.py); a synchronous one blocks
its caller until the reply, an error or the deadline, and its reply lands straight in the caller's
pool.

Compiled (issue 12): every method call passes here twice, and with the connections, the staged
message and the pool typed, its orchestration costs a fraction of what the interpreter spent.
"""

import errno
import logging
import time

from ..abi.fields cimport u64_at
from .args cimport Args
from .connection cimport Connection
from .message cimport Staged
from .pool cimport Pool, Slice
from .queue cimport Entry
from .reply cimport Reply, SyncWait

from .. import limits
from ..abi import structs
from ..abi.constants import FLAG_NEGOTIATE, HELLO_ACCEPT_FD, RECV_RETURN_INCOMPLETE_FDS, SEND_SYNC_REPLY, Item
from ..abi.structs import U64
from ..abi.walk import MSG_ITEMS, ItemSpec, walk_items
from ..errors import KdbusError
from . import layout, metadata
from . import message as msgs
from .command import Pending, copy_in
from .connection import Kind
from .match import selecting
from .policy import may_talk

log = logging.getLogger("kdbusfs.send")

# The item types a message may carry, as a negotiating SEND reports them.
MSG_NEGOTIABLE = {
    Item.NEGOTIATE: ItemSpec(Item.NEGOTIATE),
    **{t: ItemSpec(t, multiple=True) for t in MSG_ITEMS},
}


cdef object _ORDINARY = Kind.ORDINARY
cdef unsigned long long _SYNC_REPLY = SEND_SYNC_REPLY
cdef unsigned long long _ACCEPT_FD = HELLO_ACCEPT_FD
cdef Py_ssize_t _MAX_PENDING = limits.CONN_MAX_REQUESTS_PENDING
cdef object _CANCEL_FD = Item.CANCEL_FD


# Fields of kdbus_cmd_send, from its one declaration.
cdef Py_ssize_t _AT_FLAGS = structs.CMD_SEND.offsets["flags"]
cdef Py_ssize_t _AT_MSG_ADDRESS = structs.CMD_SEND.offsets["msg_address"]
cdef Py_ssize_t _AT_REPLY_OFFSET = structs.CMD_SEND.offsets["reply_offset"]
cdef Py_ssize_t _AT_REPLY_SIZE = structs.CMD_SEND.offsets["reply_msg_size"]
cdef Py_ssize_t _AT_REPLY_RETURN_FLAGS = structs.CMD_SEND.offsets["reply_return_flags"]


def cmd_send(Connection conn not None, Args args not None, caller):
    cdef Staged msg
    cdef unsigned long long cmd_flags = u64_at(args.data, _AT_FLAGS)
    # The reply field reads "no reply" unless a synchronous call gets one.
    args.put(_AT_REPLY_OFFSET, conn.pool.size)
    args.put(_AT_REPLY_SIZE, 0)
    args.put(_AT_REPLY_RETURN_FLAGS, 0)
    # kdbus's order: the message's framing, then the CANCEL_FD, then src_id, then the rest.
    parsed = msgs.parse_user(copy_in(caller, u64_at(args.data, _AT_MSG_ADDRESS), structs.MSG, b""))
    cancel_fd = None
    cancel_item = args.item(_CANCEL_FD)
    if cancel_item is not None:
        # Checked on every SEND, used only by synchronous ones.
        cancel_fd = caller.files().pollable(int.from_bytes(cancel_item.payload, "little", signed=True))
        if not cmd_flags & _SYNC_REPLY:
            caller.close_fd(cancel_fd)
            cancel_fd = None
    try:
        if parsed.src_id not in (0, conn.id):
            raise KdbusError(errno.EINVAL, f"src_id {parsed.src_id} is not the sender's id {conn.id}")
        msg = msgs.stage_parsed(parsed, cmd_flags, conn.bus.bloom_size, caller.files)
        try:
            return _deliver(conn, msg, cmd_flags, args, caller, cancel_fd)
        finally:
            # Whatever no receiver's queue took (a broadcast, a failed or synchronous delivery).
            msg.release_passed()
    except BaseException:
        if cancel_fd is not None:
            caller.close_fd(cancel_fd)
        raise


cdef object _deliver(Connection conn, Staged msg, unsigned long long cmd_flags, args, caller, cancel_fd):
    cdef SyncWait sync = None
    msg.src_id = conn.id
    if cmd_flags & _SYNC_REPLY:
        if msg.timeout_or_reply <= <unsigned long long>time.monotonic_ns():
            raise KdbusError(errno.ETIMEDOUT, "the call's deadline has already passed")
        sync = SyncWait(conn, cancel_fd=cancel_fd)
    conn.bus.stamp(msg)
    msg.read_into = caller.read_into
    process = caller.process()
    if msg.is_broadcast:
        broadcast(conn, msg, process)
    else:
        unicast(conn, msg, process, sync)
    conn.stats.sent(msg.n_payload)
    if sync is not None:
        return Pending(sync, args.address, u64_at(args.data, _AT_MSG_ADDRESS))
    return None


def negotiate_send(conn, args, caller):
    """A negotiating SEND also negotiates the message it points to, if any."""
    address = args.fields.msg_address
    if not address:
        return
    data = copy_in(caller, address, structs.MSG, b"")
    if not U64.unpack_from(data, 8)[0] & FLAG_NEGOTIATE:
        raise KdbusError(errno.EINVAL, "message negotiation needs a negotiating SEND")
    caller.write(address + 8, U64.pack(msgs.MSG_FLAGS))
    found = walk_items(data, structs.MSG.size, MSG_NEGOTIABLE)
    negotiation = found.get(Item.NEGOTIATE)
    if negotiation:
        payload = negotiation[0].payload
        for i in range(0, len(payload), 8):
            if U64.unpack_from(payload, i)[0] not in MSG_NEGOTIABLE:
                caller.write(address + negotiation[0].offset + 16 + i, bytes(8))


cpdef broadcast(Connection src, Staged msg, process):
    """Offer a broadcast from `src` to every connection whose matches select it, the sender
    included (kdbus_bus_broadcast). Receivers that cannot take it count it as lost; the sender is
    never told."""
    cdef Connection conn
    cdef Entry entry
    bus = src.bus
    bus.to_monitors(msg, src, process)
    # signal_wanted() for every connection, the matches walked in one compiled loop.
    receivers = [conn for conn in selecting(bus.connections.values(), msg, src)
                 if may_talk(conn, conn.opener, src)]
    if len(receivers) > 1:
        # Every receiver but the first would get the payload from a private copy, read from the
        # sender after the first one's: one read into that copy serves them all.
        msg.payload_read = True
    for conn in receivers:
        try:
            entry = conn.enqueue(msg, src, process)
        except KdbusError as exc:
            log.debug("broadcast to %d lost: %s", conn.id, exc)
            conn.lose_message()
            continue
        # Each receiver may install the memfds a broadcast passes (it cannot carry FDS).
        entry.passed = msg.share_passed()


cdef unicast(Connection src, Staged msg, process, SyncWait sync):
    """Deliver a unicast (call, reply, signal, plain message) from `src` (kdbus_conn_unicast)."""
    cdef Connection dst, caller
    cdef Entry entry
    cdef Reply answered, reply
    bus = src.bus
    dst, name_id = bus.resolve_destination(msg)
    if msg.is_reply:
        answered = _take_reply(dst, src, msg.timeout_or_reply)
        if answered.sync is not None and answered.sync.errno is not None:
            # The caller was killed while waiting: nobody takes this answer any more.
            return
        bus.to_monitors(msg, src, process)
        if answered.sync is not None:
            # The caller is blocked in its SEND: the reply goes straight into its pool.
            caller = answered.caller
            try:
                offset, size = _reply_slice(caller, msg, src, process)
            except KdbusError as exc:
                answered.sync.finish(errno.EREMOTEIO if exc.errno == errno.ECOMM else exc.errno)
                raise
            caller.bus.domain.wake(caller)
            # The reply is the caller's as its SEND returns: received without a RECV.
            caller.stats.received(msg.n_payload)
            answered.sync.finish(0, (offset, size, RECV_RETURN_INCOMPLETE_FDS if msg.fd_slots else 0),
                                 msg.share_passed())
            return
        entry = dst.enqueue(msg, src, process)
        entry.passed = msg.share_passed()
        return
    if msg.is_signal:
        # A unicast signal reaches its addressee only through its matches and policy.
        bus.to_monitors(msg, src, process)
        if dst.kind is _ORDINARY and bus.signal_wanted(dst, src, msg):
            try:
                entry = dst.enqueue(msg, src, process, None, name_id)
                entry.passed = msg.share_passed()
            except KdbusError as exc:
                log.debug("unicast signal to %d dropped: %s", dst.id, exc)
        return
    if not bus.may_talk(src, process, dst):
        raise KdbusError(errno.EPERM, f"connection {src.id} may not talk to {dst.id}")
    reply = None
    if msg.expects_reply:
        if len(src.trackers) >= _MAX_PENDING:
            raise KdbusError(errno.EMLINK, f"connection {src.id} has "
                                           f"{limits.CONN_MAX_REQUESTS_PENDING} calls pending")
        reply = Reply(src, dst, msg.cookie, msg.timeout_or_reply, name_id, sync)
    bus.to_monitors(msg, src, process)
    entry = dst.enqueue(msg, src, process, reply, name_id)
    # Shared only once queued: a failed enqueue leaves them to the message, which closes them.
    entry.passed = msg.share_passed()
    if reply is not None:
        src.trackers.append(reply)
        dst.awaited.append(reply)
        if sync is not None:
            src.sync_waits.append(sync)
        bus.schedule_timeout(reply)


cdef Reply _take_reply(Connection caller, Connection replier, unsigned long long cookie):
    cdef Reply reply
    for reply in caller.trackers:
        if reply.cookie == cookie and reply.replier is replier and reply.waiting:
            reply.caller.bus.forget_reply(reply)
            return reply
    raise KdbusError(errno.EBADSLT, f"no call {cookie} from {caller.id} awaits a reply from {replier.id}")


cdef tuple _reply_slice(Connection caller, Staged msg, Connection sender, process):
    """A synchronous reply lands straight in the caller's pool, published: (offset, size)."""
    cdef Pool pool = caller.pool
    cdef Slice piece
    if msg.n_fds and not caller.flags & _ACCEPT_FD:
        raise KdbusError(errno.ECOMM, f"caller {caller.id} does not accept fds")
    meta = metadata.for_receiver(caller, msg, sender, process)
    shape = layout.layout_for(msg, meta)
    piece = pool.alloc(shape[2])
    try:
        layout.write(msg, pool, piece.offset, meta, shape)
    except KdbusError:
        pool.release_bus_ref(piece)
        raise
    pool.publish(piece)
    pool.release_bus_ref(piece)
    return piece.offset, piece.size
