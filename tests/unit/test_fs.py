"""kdbusfs.fs.Filesystem driven in-process by FUSE requests, with a fake host: its tasks are
FakeCallers (memory, identity), nothing touches /proc, /dev/fuse or another process."""

from __future__ import annotations

import errno
import json
import os
import struct
import time
from typing import Any

import pytest
from helpers import BUS_NAME, CREATOR, POOL_SIZE, FakeCaller, bus_make_cmd, cmd_bytes, hello_cmd

from kdbusfs.abi import structs
from kdbusfs.abi.constants import SEND_SYNC_REPLY, Cmd, Item
from kdbusfs.abi.items import item
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.metadata import Creds, Snapshot
from kdbusfs.calls import INTERRUPT_RECHECK_NS
from kdbusfs.fs import Filesystem
from kdbusfs.fuse import protocol as p
from kdbusfs.fuse.codec import Output, Store, Unwatch, Watch, parse_request
from kdbusfs.host import Host
from kdbusfs.tree import CONTROL_ID

U64 = struct.Struct("<Q")
MSG_EXPECT_REPLY = 1
PAYLOAD_TYPE = 0xBB


class Task(FakeCaller):
    """A fake task as the Filesystem meets it: a caller with a tid, and cancel fds it may pass."""

    def __init__(self, tid: int, creds: Creds = CREATOR) -> None:
        super().__init__(creds)
        self.tid = tid
        self.cancel_fds: set[int] = set()
        self.closed: list[int] = []

    def done(self) -> None:
        pass

    def files(self) -> Any:
        task = self

        class Files:
            def pollable(self, fd: int) -> int:
                assert fd in task.cancel_fds
                return 1000 + fd  # the daemon's duplicate

        return Files()

    def close_fd(self, fd: int) -> None:
        self.closed.append(fd)


class FakeHost(Host):
    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[int, Task] = {}
        self.dying_tids: set[int] = set()
        self.closed: list[int] = []

    def task(self, tid: int, creds: Creds = CREATOR) -> Task:
        self.tasks[tid] = Task(tid, creds)
        return self.tasks[tid]

    def caller(self, tid: int, fsuid: int, fsgid: int, kdbus_dev: int | None) -> Any:
        return self.tasks[tid]

    def process(self, pid: int, uid: int, gid: int) -> Any:
        return Snapshot(self.tasks[pid].creds())

    def dying(self, tid: int) -> bool:
        return tid in self.dying_tids

    def write(self, tid: int, address: int, data: bytes) -> None:
        self.tasks[tid].write(address, data)

    def close_fd(self, fd: int) -> None:
        self.closed.append(fd)


class Mount:
    """A Filesystem and the FUSE requests a kernel would send it."""

    def __init__(self) -> None:
        self.host = FakeHost()
        self.fs = Filesystem(Domain(uid=0, gid=0), self.host)
        self.unique = 0
        init = p.INIT_IN.pack(p.KERNEL_VERSION, p.KERNEL_MINOR_VERSION, 0, 0)
        self.init = self.request(p.Opcode.INIT, 0, init, tid=1)

    def request(self, opcode: int, nodeid: int, body: bytes, tid: int) -> list[Output]:
        self.unique += 1
        header = p.IN_HEADER.pack(p.IN_HEADER.size + len(body), opcode, self.unique, nodeid, 0, 0, tid, 0, 0)
        return self.fs.handle(parse_request(header + body))

    def call(self, opcode: int, nodeid: int, body: bytes, tid: int = 1) -> bytes:
        """A request that must succeed: its answer's body."""
        err, answer = reply_of(self.request(opcode, nodeid, body, tid))
        assert err == 0, errno.errorcode.get(err, err)
        return answer

    def fails(self, opcode: int, nodeid: int, body: bytes, tid: int = 1) -> int:
        err, _ = reply_of(self.request(opcode, nodeid, body, tid))
        return err

    def lookup(self, parent: int, name: bytes) -> int:
        return int(U64.unpack_from(self.call(p.Opcode.LOOKUP, parent, name + b"\0"))[0])

    def open(self, nodeid: int, tid: int) -> int:
        return int(U64.unpack_from(self.call(p.Opcode.OPEN, nodeid, p.OPEN_IN.pack(os.O_RDWR, 0), tid))[0])

    def ioctl_request(self, fh: int, cmd: int, data: bytes, tid: int, offset: int = 0) -> list[Output]:
        address = self.host.tasks[tid].place(data, offset)
        return self.request(p.Opcode.IOCTL, 0, p.IOCTL_IN.pack(fh, 0, cmd, address, 0, 0), tid)

    def ioctl(self, fh: int, cmd: int, data: bytes, tid: int, offset: int = 0) -> int:
        err, _ = reply_of(self.ioctl_request(fh, cmd, data, tid, offset))
        return err

    def ioctl_out(self, fh: int, cmd: int, data: bytes, tid: int, offset: int = 0) -> bytes:
        """What the kernel would copy back over the caller's struct (an _IOC_READ command)."""
        err, body = reply_of(self.ioctl_request(fh, cmd, data, tid, offset))
        assert err == 0, errno.errorcode.get(err, err)
        return body[p.IOCTL_OUT.size:]

    def make_bus(self, tid: int = 1) -> tuple[int, int]:
        """(control fh, bus directory node)."""
        control = self.open(self.lookup(p.ROOT_ID, b"control"), tid)
        assert self.ioctl(control, Cmd.BUS_MAKE, bus_make_cmd(), tid) == 0
        return control, self.lookup(p.ROOT_ID, BUS_NAME.encode())

    def connect(self, bus_dir: int, tid: int) -> tuple[int, int, int]:
        """(fh, node, connection id) of a fresh connection of task `tid`."""
        node = self.lookup(bus_dir, b"bus")
        fh = self.open(node, tid)
        conn_id = structs.CMD_HELLO.unpack(self.ioctl_out(fh, Cmd.HELLO, hello_cmd(), tid)).id
        return fh, node, conn_id


def reply_of(out: list[Output]) -> tuple[int, bytes]:
    """The errno and body of the last output, which must be a reply."""
    last = out[-1]
    assert isinstance(last, bytes)
    _length, error, _unique = p.OUT_HEADER.unpack_from(last)
    return -error, last[p.OUT_HEADER.size:]


def replies(out: list[Output]) -> list[tuple[int, int]]:
    """(unique, errno) of every reply among the outputs (not notifications, unique 0)."""
    found = []
    for message in out:
        if isinstance(message, bytes):
            _length, error, unique = p.OUT_HEADER.unpack_from(message)
            if unique:
                found.append((unique, -error))
    return found


def notifications(out: list[Output], code: int) -> list[bytes]:
    return [m for m in out if isinstance(m, bytes) and p.OUT_HEADER.unpack_from(m)[2] == 0
            and p.OUT_HEADER.unpack_from(m)[1] == code]


def message(dst: int, payload_at: int, cookie: int, flags: int = 0, timeout_ns: int = 0,
            cookie_reply: int = 0) -> bytes:
    vec = item(Item.PAYLOAD_VEC, structs.VEC.pack(8, payload_at))
    return cmd_bytes(structs.MSG, vec, flags=flags, dst_id=dst, payload_type=PAYLOAD_TYPE, cookie=cookie,
                     timeout_ns=timeout_ns or cookie_reply)


@pytest.fixture
def mount() -> Mount:
    mount = Mount()
    for tid in (1, 2, 3):
        mount.host.task(tid)
    return mount


# -- protocol and the tree ----------------------------------------------------------------------

def test_init_agrees_on_the_protocol_and_refuses_another_major() -> None:
    mount = Mount()
    assert reply_of(mount.init)[0] == 0 and mount.fs.initialized
    other = Filesystem(Domain(), FakeHost())
    header = p.IN_HEADER.pack(p.IN_HEADER.size + 16, p.Opcode.INIT, 1, 0, 0, 0, 1, 0, 0)
    out = other.handle(parse_request(header + p.INIT_IN.pack(p.KERNEL_VERSION + 1, 0, 0, 0)))
    assert reply_of(out)[0] == errno.EPROTO


def test_unknown_requests_are_enosys_and_plain_ones_succeed(mount: Mount) -> None:
    assert mount.fails(4242, p.ROOT_ID, b"") == errno.ENOSYS
    for opcode in (p.Opcode.STATFS, p.Opcode.ACCESS, p.Opcode.FLUSH, p.Opcode.RELEASEDIR):
        mount.call(opcode, p.ROOT_ID, bytes(64))
    assert mount.fails(p.Opcode.WRITE, p.ROOT_ID, bytes(64)) == errno.EINVAL


def test_the_tree_lists_control_and_buses_and_gives_each_endpoint_lookup_a_fresh_inode(mount: Mount) -> None:
    assert mount.lookup(p.ROOT_ID, b"control") == CONTROL_ID
    assert mount.fails(p.Opcode.LOOKUP, p.ROOT_ID, b"nobus\0") == errno.ENOENT
    _control, bus_dir = mount.make_bus()
    first, second = mount.lookup(bus_dir, b"bus"), mount.lookup(bus_dir, b"bus")
    assert first != second and bus_dir not in (first, second)
    assert mount.fails(p.Opcode.LOOKUP, bus_dir, b"nothere\0") == errno.ENOENT
    listing = mount.call(p.Opcode.READDIR, p.ROOT_ID, p.READ_IN.pack(0, 0, 4096, 0, 0, 0, 0))
    assert b"control" in listing and BUS_NAME.encode() in listing
    plus = mount.call(p.Opcode.READDIRPLUS, bus_dir, p.READ_IN.pack(0, 0, 4096, 0, 0, 0, 0))
    assert b"bus" in plus
    # A listing continues at the offset the last entry gave, and stops where the buffer does.
    first = mount.call(p.Opcode.READDIR, p.ROOT_ID, p.READ_IN.pack(0, 0, 32, 0, 0, 0, 0))
    assert first.endswith(b".\0" + bytes(6)) and len(first) == 32
    rest = mount.call(p.Opcode.READDIR, p.ROOT_ID, p.READ_IN.pack(0, 1, 4096, 0, 0, 0, 0))
    assert rest and first not in rest and listing.endswith(rest)
    attr = mount.call(p.Opcode.GETATTR, bus_dir, bytes(16))
    assert attr  # a directory of a live bus has attributes
    mount.call(p.Opcode.OPENDIR, bus_dir, bytes(8))


def test_forgotten_endpoint_nodes_go_and_a_vanished_bus_is_enoent(mount: Mount) -> None:
    control, bus_dir = mount.make_bus()
    node = mount.lookup(bus_dir, b"bus")
    assert mount.request(p.Opcode.FORGET, node, p.FORGET_IN.pack(1), tid=1) == []
    assert mount.fails(p.Opcode.GETATTR, node, bytes(16)) == errno.ENOENT
    # The bus goes with its owner's control file.
    mount.call(p.Opcode.RELEASE, CONTROL_ID, p.RELEASE_IN.pack(control, 0, 0, 0))
    assert mount.fails(p.Opcode.LOOKUP, p.ROOT_ID, BUS_NAME.encode() + b"\0") == errno.ENOENT
    assert mount.fails(p.Opcode.GETATTR, bus_dir, bytes(16)) == errno.ENOENT
    assert mount.fails(p.Opcode.READDIR, bus_dir, p.READ_IN.pack(0, 0, 4096, 0, 0, 0, 0)) == errno.ENOENT
    batch = p.BATCH_FORGET_IN.pack(1, 0) + struct.pack("<QQ", bus_dir, 1)
    assert mount.request(p.Opcode.BATCH_FORGET, 0, batch, tid=1) == []


def test_a_bus_only_listed_leaves_no_node_once_it_is_gone(mount: Mount) -> None:
    control = mount.open(mount.lookup(p.ROOT_ID, b"control"), 1)
    assert mount.ioctl(control, Cmd.BUS_MAKE, bus_make_cmd(), 1) == 0
    listing = mount.call(p.Opcode.READDIR, p.ROOT_ID, p.READ_IN.pack(0, 0, 4096, 0, 0, 0, 0))
    listed = {name: ino for ino, name in _dirents(listing)}
    bus_node = listed[BUS_NAME.encode()]
    assert mount.fs.tree.find(bus_node) is not None
    mount.call(p.Opcode.RELEASE, CONTROL_ID, p.RELEASE_IN.pack(control, 0, 0, 0))
    listing = mount.call(p.Opcode.READDIR, p.ROOT_ID, p.READ_IN.pack(0, 0, 4096, 0, 0, 0, 0))
    assert BUS_NAME.encode() not in {name for _ino, name in _dirents(listing)}
    assert mount.fs.tree.find(bus_node) is None


def _dirents(listing: bytes) -> list[tuple[int, bytes]]:
    """(ino, name) of each struct fuse_dirent in a READDIR answer."""
    found, pos = [], 0
    while pos < len(listing):
        ino, _off, namelen, _type = struct.unpack_from("<QQII", listing, pos)
        found.append((ino, listing[pos + 24 : pos + 24 + namelen]))
        pos += (24 + namelen + 7) & ~7
    return found


def test_opening_a_directory_or_an_unknown_handle_fails(mount: Mount) -> None:
    _control, bus_dir = mount.make_bus()
    assert mount.fails(p.Opcode.OPEN, bus_dir, p.OPEN_IN.pack(os.O_RDWR, 0)) == errno.EISDIR
    assert mount.fails(p.Opcode.IOCTL, 0, p.IOCTL_IN.pack(999, 0, Cmd.HELLO, 0, 0, 0)) == errno.EBADF
    assert mount.fails(p.Opcode.IOCTL, 0, p.IOCTL_IN.pack(1, p.IOCTL_DIR, Cmd.HELLO, 0, 0, 0)) == errno.ENOTTY


# -- connections, pools, poll -------------------------------------------------------------------

def test_hello_stores_the_pool_size_into_the_inode_and_read_serves_the_pool(mount: Mount) -> None:
    _control, bus_dir = mount.make_bus()
    fh, node, _ = mount.connect(bus_dir, tid=2)
    size = struct.unpack_from("<Q", mount.call(p.Opcode.GETATTR, node, bytes(16)), 16 + 8)[0]
    assert size == POOL_SIZE
    data = mount.call(p.Opcode.READ, node, p.READ_IN.pack(fh, 0, 4096, 0, 0, 0, 0))
    assert len(data) == 4096
    # Reading the control file is not reading a pool.
    control = mount.open(CONTROL_ID, tid=1)
    assert mount.fails(p.Opcode.READ, CONTROL_ID, p.READ_IN.pack(control, 0, 16, 0, 0, 0, 0)) == errno.EINVAL


def test_a_message_reaches_the_receivers_page_cache_and_wakes_its_poller(mount: Mount) -> None:
    _control, bus_dir = mount.make_bus()
    sender, _, _ = mount.connect(bus_dir, tid=2)
    receiver, receiver_node, receiver_id = mount.connect(bus_dir, tid=3)
    poll = p.POLL_IN.pack(receiver, 77, p.POLL_SCHEDULE_NOTIFY, 1)
    assert struct.unpack_from("<I", mount.call(p.Opcode.POLL, 0, poll, tid=3))[0] & 0x1 == 0  # no POLLIN
    payload = mount.host.tasks[2].place(b"8 bytes!", 0x8000)
    msg_at = mount.host.tasks[2].place(message(receiver_id, payload, cookie=5), 0x1000)
    out = mount.ioctl_request(sender, Cmd.SEND, cmd_bytes(structs.CMD_SEND, msg_address=msg_at), tid=2)
    assert reply_of(out)[0] == 0
    stores = [m for m in out if isinstance(m, Store)]
    assert stores and all(struct.unpack_from("<Q", s.message, 16)[0] == receiver_node for s in stores)
    assert notifications(out, p.Notify.POLL)  # the poller is woken
    assert struct.unpack_from("<I", mount.call(p.Opcode.POLL, 0, poll, tid=3))[0] & 0x1  # POLLIN now
    recv = mount.ioctl_out(receiver, Cmd.RECV, cmd_bytes(structs.CMD_RECV), tid=3)
    offset = structs.CMD_RECV.unpack(recv).msg_offset
    pool = mount.call(p.Opcode.READ, receiver_node, p.READ_IN.pack(receiver, offset, 4096, 0, 0, 0, 0))
    assert b"8 bytes!" in pool


def test_poll_of_a_released_connection_is_an_error(mount: Mount) -> None:
    _control, bus_dir = mount.make_bus()
    fh, _, _ = mount.connect(bus_dir, tid=2)
    assert mount.ioctl(fh, Cmd.BYEBYE, cmd_bytes(structs.CMD), tid=2) == 0
    events = struct.unpack_from("<I", mount.call(p.Opcode.POLL, 0, p.POLL_IN.pack(fh, 1, 0, 1), tid=2))[0]
    assert events & (0x8 | 0x10)  # POLLERR | POLLHUP
    mount.call(p.Opcode.RELEASE, 0, p.RELEASE_IN.pack(fh, 0, 0, 0))
    mount.call(p.Opcode.RELEASE, 0, p.RELEASE_IN.pack(fh, 0, 0, 0))  # a second release is harmless


def test_a_released_file_closes_the_proc_files_kept_of_senders(mount: Mount) -> None:
    # The daemon holds nothing for a client that left, its tasks' /proc files included.
    _control, bus_dir = mount.make_bus()
    fh, _, _ = mount.connect(bus_dir, tid=2)
    assert mount.host.task_files.read(os.getpid(), "status") is not None
    assert len(mount.host.task_files) == 1
    mount.call(p.Opcode.RELEASE, 0, p.RELEASE_IN.pack(fh, 0, 0, 0))
    assert len(mount.host.task_files) == 0


# -- synchronous calls --------------------------------------------------------------------------

def _sync_call(mount: Mount, timeout_s: float = 10.0, cancel_fd: int | None = None) -> tuple[int, int, int]:
    """Start a synchronous call from task 2 to task 3; (unique of the blocked SEND, callee fh, cookie)."""
    _control, bus_dir = mount.make_bus()
    caller, _, _ = mount.connect(bus_dir, tid=2)
    callee, _, callee_id = mount.connect(bus_dir, tid=3)
    task = mount.host.tasks[2]
    payload = task.place(b"question", 0x8000)
    deadline = time.monotonic_ns() + int(timeout_s * 1e9)
    msg_at = task.place(message(callee_id, payload, cookie=9, flags=MSG_EXPECT_REPLY, timeout_ns=deadline),
                        0x1000)
    items = b""
    if cancel_fd is not None:
        task.cancel_fds.add(cancel_fd)
        items = item(Item.CANCEL_FD, struct.pack("<i", cancel_fd))
    send = cmd_bytes(structs.CMD_SEND, items, flags=SEND_SYNC_REPLY, msg_address=msg_at)
    out = mount.ioctl_request(caller, Cmd.SEND, send, tid=2, offset=0x1800)
    assert replies(out) == []  # blocked
    # Its duplicate of the cancel fd is handed to the session to watch.
    watched = [Watch(1000 + cancel_fd)] if cancel_fd is not None else []
    assert [o for o in out if isinstance(o, Watch)] == watched
    return mount.unique, callee, 9


def test_a_synchronous_call_is_answered_when_the_reply_comes(mount: Mount) -> None:
    unique, callee, cookie = _sync_call(mount)
    callee_task = mount.host.tasks[3]
    recv = structs.CMD_RECV.unpack(mount.ioctl_out(callee, Cmd.RECV, cmd_bytes(structs.CMD_RECV), tid=3))
    call = mount.call(p.Opcode.READ, 0, p.READ_IN.pack(callee, recv.msg_offset, 4096, 0, 0, 0, 0), tid=3)
    caller_id = structs.MSG.unpack(call).src_id
    payload = callee_task.place(b"answer!!", 0x8000)
    reply_at = callee_task.place(message(caller_id, payload, cookie=1, cookie_reply=cookie), 0x1000)
    out = mount.ioctl_request(callee, Cmd.SEND, cmd_bytes(structs.CMD_SEND, msg_address=reply_at), tid=3,
                              offset=0x1800)
    assert (unique, 0) in replies(out)  # the caller's SEND returns
    send = structs.CMD_SEND.unpack(mount.host.tasks[2].memory, 0x1800)
    assert send.reply_msg_size > 0 and send.reply_offset < POOL_SIZE


def test_a_synchronous_call_times_out_on_the_tick_after_its_deadline(mount: Mount) -> None:
    unique, _callee, _ = _sync_call(mount, timeout_s=0.001)
    deadline = mount.fs.next_deadline()
    assert deadline is not None
    assert replies(mount.fs.tick(deadline - 1)) == []
    assert (unique, errno.ETIMEDOUT) in replies(mount.fs.tick(deadline))


def test_an_interrupted_call_keeps_waiting_until_its_caller_is_dying(mount: Mount) -> None:
    unique, _callee, _ = _sync_call(mount)
    assert mount.request(p.Opcode.INTERRUPT, 0, p.INTERRUPT_IN.pack(unique), tid=2) == []
    recheck = mount.fs.next_deadline()
    assert recheck is not None and recheck <= time.monotonic_ns() + INTERRUPT_RECHECK_NS
    # Not dying yet: the recheck finds nothing to end, and keeps looking.
    assert replies(mount.fs.tick(recheck)) == []
    assert mount.fs.calls.next_recheck() == recheck + INTERRUPT_RECHECK_NS
    mount.host.dying_tids.add(2)
    assert (unique, errno.EINTR) in replies(mount.fs.tick(recheck + INTERRUPT_RECHECK_NS))
    assert mount.fs.calls.next_recheck() is None


def test_a_dying_caller_is_released_at_once_by_its_interrupt(mount: Mount) -> None:
    unique, _callee, _ = _sync_call(mount)
    mount.host.dying_tids.add(2)
    out = mount.request(p.Opcode.INTERRUPT, 0, p.INTERRUPT_IN.pack(unique), tid=2)
    assert (unique, errno.EINTR) in replies(out)
    # An interrupt for a request that is not waiting is ignored.
    assert mount.request(p.Opcode.INTERRUPT, 0, p.INTERRUPT_IN.pack(999), tid=2) == []


def test_a_cancel_fd_is_watched_and_ends_its_call_with_ecanceled(mount: Mount) -> None:
    unique, _callee, _ = _sync_call(mount, cancel_fd=7)
    out = mount.fs.cancel_fd_ready(1007)
    assert (unique, errno.ECANCELED) in replies(out)
    assert Unwatch(1007) in out
    # A cancel fd of a call that is over does nothing.
    assert replies(mount.fs.cancel_fd_ready(1007)) == []


def test_releasing_the_callee_ends_the_call_with_epipe_and_shutdown_ends_everything(mount: Mount) -> None:
    unique, callee, _ = _sync_call(mount)
    out = mount.request(p.Opcode.RELEASE, 0, p.RELEASE_IN.pack(callee, 0, 0, 0), tid=3)
    assert (unique, errno.EPIPE) in replies(out)
    mount.fs.shutdown()
    assert mount.fails(p.Opcode.OPEN, CONTROL_ID, p.OPEN_IN.pack(os.O_RDWR, 0)) == errno.ESHUTDOWN


def test_a_bug_costs_one_request_not_the_daemon(mount: Mount, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    def broken(nodeid: int) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(mount.fs.tree, "attr", broken)
    assert mount.fails(p.Opcode.GETATTR, p.ROOT_ID, bytes(16)) == errno.EIO
    assert "failed unexpectedly" in caplog.text
    monkeypatch.undo()
    mount.call(p.Opcode.GETATTR, p.ROOT_ID, bytes(16))


def test_a_bus_stats_file_counts_messages_and_refuses_commands(mount: Mount) -> None:
    _control, bus_dir = mount.make_bus()
    sender, _, sender_id = mount.connect(bus_dir, tid=2)
    receiver, _, receiver_id = mount.connect(bus_dir, tid=3)
    payload = mount.host.tasks[2].place(b"8 bytes!", 0x8000)
    for cookie in (1, 2, 3):
        msg_at = mount.host.tasks[2].place(message(receiver_id, payload, cookie=cookie), 0x1000)
        assert mount.ioctl(sender, Cmd.SEND, cmd_bytes(structs.CMD_SEND, msg_address=msg_at), tid=2) == 0
    mount.ioctl_out(receiver, Cmd.RECV, cmd_bytes(structs.CMD_RECV), tid=3)
    node = mount.lookup(bus_dir, b"stats")
    assert node == mount.lookup(bus_dir, b"stats")  # one inode per bus
    attr = mount.call(p.Opcode.GETATTR, node, bytes(16))
    mode, _nlink, uid = struct.unpack_from("<III", attr, 16 + 60)
    assert (mode & 0o7777, uid) == (0o400, CREATOR.euid)  # the bus owner's (and root's) to read
    assert b"stats" in mount.call(p.Opcode.READDIR, bus_dir, p.READ_IN.pack(0, 0, 4096, 0, 0, 0, 0))
    fh = mount.open(node, tid=1)
    text = mount.call(p.Opcode.READ, node, p.READ_IN.pack(fh, 0, 1 << 16, 0, 0, 0, 0))
    snapshot = json.loads(text)
    by_id = {c["id"]: c for c in snapshot["connections"]}
    assert (by_id[sender_id]["messages_sent"], by_id[sender_id]["bytes_sent"]) == (3, 24)
    assert (by_id[receiver_id]["messages_received"], by_id[receiver_id]["bytes_received"]) == (1, 8)
    assert by_id[receiver_id]["queued_messages"] == 2
    assert by_id[receiver_id]["quota_by_sender"] == {str(CREATOR.uid): {
        "bytes": by_id[receiver_id]["pool_queued_bytes"], "messages": 2, "fds": 0}}
    assert snapshot["bus"]["messages_sent"] == 3 and snapshot["bus"]["connections"] == 2
    # A later open sees what happened since; the open one keeps its snapshot.
    assert mount.ioctl(receiver, Cmd.BYEBYE, cmd_bytes(structs.CMD), tid=3) == errno.EBUSY
    assert mount.call(p.Opcode.READ, node, p.READ_IN.pack(fh, 0, 1 << 16, 0, 0, 0, 0)) == text
    assert mount.fails(p.Opcode.IOCTL, 0, p.IOCTL_IN.pack(fh, 0, Cmd.BUS_MAKE, 0, 0, 0)) == errno.ENOTTY
    assert struct.unpack_from("<I", mount.call(p.Opcode.POLL, 0, p.POLL_IN.pack(fh, 1, 0, 1)))[0] & 0x1
    mount.call(p.Opcode.RELEASE, node, p.RELEASE_IN.pack(fh, 0, 0, 0))
