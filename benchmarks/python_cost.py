"""The daemon's Python cost of one 8-byte synchronous call, without the kernel or other processes.

Replays, through Filesystem.handle, the seven FUSE requests one call costs with bench_kdbus.c's
pattern (the callee's RECV that finds nothing, its POLL, the caller's SEND, the callee's RECV,
FREE and SEND of the reply, the caller's FREE), with this process standing in for both clients:
their structs live in this process's memory, which the daemon reads with process_vm_readv as it
would read a client's. Pools are memfds as on a root mount (passthrough), only never registered
with a FUSE connection. What the live benchmarks add on top is the kernel's share: FUSE round
trips and context switches (calls.py's "FUSE floor" column).

With --metadata both clients connect as kdbus-era sd-bus did: a CONN_DESCRIPTION, every item
allowed to be sent, and a receive mask (METADATA_RECV) asking for the creds, pids, comms, names,
description and timestamp of whoever sends to them, so the call and its reply each carry those.

Prints microseconds per call for each request type, the median of several runs: the time from a
request's bytes to the answers handed back, as the session loop would spend it (building the
requests and reading the answers stands in for the kernel and is not counted). No root needed.
With --signal-subscribers N it replays broadcasts instead, as bench_signal_kdbus.c makes them: an
8-byte signal whose bloom filter every subscriber's mask selects, sent while each of the N
subscribers waits in poll() (its RECV found nothing and its POLL asked to be notified, so the SEND
wakes all of them), then each subscriber's RECV and FREE; each request type's time is summed over
the subscribers.

usage: python benchmarks/python_cost.py [--calls N] [--runs N] [--metadata] [--signal-subscribers N]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import struct
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdbusfs.abi import structs  # noqa: E402
from kdbusfs.abi.constants import (  # noqa: E402
    ATTACH_ANY,
    DST_ID_BROADCAST,
    MSG_SIGNAL,
    PAYLOAD_DBUS,
    Attach,
    Cmd,
    Item,
)
from kdbusfs.abi.items import item, string_item  # noqa: E402
from kdbusfs.abi.structs import Layout  # noqa: E402
from kdbusfs.bus.domain import Domain  # noqa: E402
from kdbusfs.client.message import parse_message  # noqa: E402
from kdbusfs.fs import Filesystem  # noqa: E402
from kdbusfs.fuse import protocol as p  # noqa: E402
from kdbusfs.fuse.codec import parse_request  # noqa: E402
from kdbusfs.host.backing import PoolFiles  # noqa: E402

NAME = "org.kdbusfs.Bench"
POOL_SIZE = 1 << 20
EAGAIN = 11
# What a metadata receiver asks for (calls.py --metadata and bench_kdbus.c ask for the same).
METADATA_RECV = (Attach.TIMESTAMP | Attach.CREDS | Attach.PIDS | Attach.TID_COMM | Attach.PID_COMM
                 | Attach.NAMES | Attach.CONN_DESCRIPTION)
# The bus's bloom filter size, and the bit every signal sets and every subscriber's mask selects
# (bench_signal_kdbus.c's BENCH_BLOOM and its first bloom byte).
BLOOM_SIZE = 64
BLOOM_BITS = b"\x01" + bytes(BLOOM_SIZE - 1)


class UnregisteredPoolFiles(PoolFiles):
    """Pools are memfds as with passthrough, with no FUSE connection to register them with."""

    def __init__(self) -> None:
        super().__init__(-1)

    def open(self) -> tuple[int, int] | None:
        return os.memfd_create("kdbusfs-pool", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING), 1

    def close(self, memfd: int, backing_id: int) -> None:
        os.close(memfd)


class Replay:
    """A file system with one bus, and "clients" whose structs live in this process."""

    def __init__(self, metadata: bool = False) -> None:
        self.metadata = metadata
        self.fs = Filesystem(Domain(), pool_files=UnregisteredPoolFiles())
        self.pid = os.getpid()
        self.unique = 0
        # Seconds spent serving requests since the caller last reset it.
        self.spent = 0.0
        self.memory = ctypes.create_string_buffer(1 << 16)
        self.base = ctypes.addressof(self.memory)
        self.request(p.Opcode.INIT, 0, p.INIT_IN.pack(p.KERNEL_VERSION, p.KERNEL_MINOR_VERSION, 0, 0))
        self.fs.passthrough = True
        control = self.open(self.lookup(p.ROOT_ID, b"control"))
        make = cmd(structs.CMD, item(Item.BLOOM_PARAMETER, structs.BLOOM_PARAMETER.pack(BLOOM_SIZE, 1))
                   + string_item(Item.MAKE_NAME, f"{os.geteuid()}-replay"))
        self.ioctl(control, Cmd.BUS_MAKE, self.place(0, make), make[:24])
        self.bus_dir = self.lookup(p.ROOT_ID, f"{os.geteuid()}-replay".encode())
        self.payload = self.place(0x8000, b"\1" * 8)
        self.cookie = 0

    def place(self, offset: int, data: bytes) -> int:
        ctypes.memmove(self.base + offset, data, len(data))
        return self.base + offset

    def request(self, opcode: int, nodeid: int, body: bytes) -> list[bytes]:
        """Serve one request as the session would: parse it and hand it to the file system. Only
        that part is timed (into `spent`): building the request is the kernel's work, not ours."""
        self.unique += 1
        raw = p.IN_HEADER.pack(p.IN_HEADER.size + len(body), opcode, self.unique, nodeid, 0, 0,
                               self.pid, 0, 0) + body
        start = time.perf_counter()
        out = self.fs.handle(parse_request(raw))
        self.spent += time.perf_counter() - start
        return out

    def answer(self, out: list[bytes]) -> tuple[int, bytes]:
        _length, error, _unique = p.OUT_HEADER.unpack_from(out[-1])
        return -error, out[-1][p.OUT_HEADER.size :]

    def lookup(self, parent: int, name: bytes) -> int:
        err, body = self.answer(self.request(p.Opcode.LOOKUP, parent, name + b"\0"))
        assert err == 0, err
        return int(struct.unpack_from("<Q", body)[0])

    def open(self, nodeid: int) -> int:
        err, body = self.answer(self.request(p.Opcode.OPEN, nodeid, p.OPEN_IN.pack(os.O_RDWR, 0)))
        assert err == 0, err
        return int(struct.unpack_from("<Q", body)[0])

    def ioctl(self, fh: int, command: int, address: int, in_data: bytes = b"", out_size: int = 0,
              expect: int = 0) -> bytes:
        out = self.request(p.Opcode.IOCTL, 0, p.IOCTL_IN.pack(fh, 0, command, address, len(in_data),
                                                              out_size) + in_data)
        err, body = self.answer(out)
        assert err == expect, (command, err)
        return body

    def connect(self, description: str) -> int:
        fh = self.open(self.lookup(self.bus_dir, b"bus"))
        if self.metadata:
            hello = cmd(structs.CMD_HELLO, string_item(Item.CONN_DESCRIPTION, description),
                        attach_flags_send=ATTACH_ANY, attach_flags_recv=METADATA_RECV, pool_size=POOL_SIZE)
        else:
            hello = cmd(structs.CMD_HELLO, pool_size=POOL_SIZE)
        self.ioctl(fh, Cmd.HELLO, self.place(0x100, hello), hello, len(hello))
        return fh


class Calls(Replay):
    """A caller and a callee that owns NAME: one synchronous call at a time."""

    def __init__(self, metadata: bool = False) -> None:
        super().__init__(metadata)
        self.caller, self.callee = self.connect("bench-caller"), self.connect("bench-callee")
        acquire = cmd(structs.CMD, string_item(Item.NAME, NAME))
        self.ioctl(self.callee, Cmd.NAME_ACQUIRE, self.place(0x300, acquire), acquire[:24])

    def call(self, timings: dict[str, float]) -> None:
        """One synchronous call, each request timed under its own name."""
        self.cookie += 1
        recv = cmd(structs.CMD_RECV)
        recv_at = self.place(0x2000, recv)
        self.spent = 0.0
        self.ioctl(self.callee, Cmd.RECV, recv_at, out_size=len(recv), expect=EAGAIN)
        timings["callee RECV (nothing)"] += self.spent
        self.spent = 0.0
        self.request(p.Opcode.POLL, 0, p.POLL_IN.pack(self.callee, 7, p.POLL_SCHEDULE_NOTIFY, 1))
        timings["callee POLL"] += self.spent
        message = cmd(structs.MSG, string_item(Item.DST_NAME, NAME) + vec(self.payload, 8), flags=1,
                      payload_type=0xBB, cookie=self.cookie,
                      timeout_ns=time.monotonic_ns() + 5_000_000_000)
        send = cmd(structs.CMD_SEND, flags=1, msg_address=self.place(0x1000, message))
        send_at = self.place(0x1800, send)
        self.spent = 0.0
        self.request(p.Opcode.IOCTL, 0, p.IOCTL_IN.pack(self.caller, 0, Cmd.SEND, send_at, len(send), 0)
                     + send)
        timings["caller SEND (sync)"] += self.spent
        self.place(0x2000, recv)
        self.spent = 0.0
        got = self.ioctl(self.callee, Cmd.RECV, recv_at, out_size=len(recv))
        timings["callee RECV"] += self.spent
        offset = struct.unpack_from("<Q", got, p.IOCTL_OUT.size + 40)[0]
        if self.metadata and self.cookie == 1:
            self.check_metadata(offset)
        free = cmd(structs.CMD_FREE, offset=offset)
        self.spent = 0.0
        self.ioctl(self.callee, Cmd.FREE, self.place(0x2100, free), free)
        timings["callee FREE"] += self.spent
        reply = cmd(structs.MSG, vec(self.payload, 8), payload_type=0xBB, dst_id=self.caller_id,
                    cookie=self.cookie, timeout_ns=self.cookie)
        reply_send = cmd(structs.CMD_SEND, msg_address=self.place(0x3000, reply))
        self.spent = 0.0
        out = self.request(p.Opcode.IOCTL, 0, p.IOCTL_IN.pack(self.callee, 0, Cmd.SEND,
                                                              self.place(0x3800, reply_send),
                                                              len(reply_send), 0) + reply_send)
        timings["callee SEND (reply)"] += self.spent
        assert len(out) == 2, "the reply did not end the caller's SEND"
        reply_offset = struct.unpack_from("<Q", self.memory, 0x1800 + 32)[0]
        free = cmd(structs.CMD_FREE, offset=reply_offset)
        self.spent = 0.0
        self.ioctl(self.caller, Cmd.FREE, self.place(0x2100, free), free)
        timings["caller FREE"] += self.spent

    def check_metadata(self, offset: int) -> None:
        """The call the callee received carries what it asked for: the mode measures what it says."""
        conn = self.fs.tree.file(self.callee).handle.conn
        assert conn is not None
        size = struct.unpack_from("<Q", conn.pool.buffer, offset)[0]
        found = parse_message(bytes(conn.pool.buffer[offset : offset + size])).metadata
        with open(f"/proc/{self.pid}/comm") as comm:
            own_comm = comm.read().rstrip("\n")
        assert found.timestamp and found.creds and found.pids and found.pids.pid == self.pid, found
        assert found.tid_comm == found.pid_comm == own_comm and found.description == "bench-caller", found

    @property
    def caller_id(self) -> int:
        conn = self.fs.tree.file(self.caller).handle.conn
        assert conn is not None
        return conn.id


class Signals(Replay):
    """A sender and `subscribers` connections whose bloom masks select its signals."""

    def __init__(self, subscribers: int) -> None:
        super().__init__()
        self.sender = self.connect("bench-sender")
        self.subscribers = [self.connect(f"bench-subscriber-{i}") for i in range(subscribers)]
        match = cmd(structs.CMD_MATCH, item(Item.BLOOM_MASK, BLOOM_BITS))
        for fh in self.subscribers:
            self.ioctl(fh, Cmd.MATCH_ADD, self.place(0x300, match), match)

    def broadcast(self, timings: dict[str, float]) -> None:
        """One broadcast to subscribers waiting in poll(), each request type timed under its
        name, summed over the subscribers."""
        self.cookie += 1
        recv = cmd(structs.CMD_RECV)
        recv_at = self.place(0x2000, recv)
        self.spent = 0.0
        for fh in self.subscribers:
            self.ioctl(fh, Cmd.RECV, recv_at, out_size=len(recv), expect=EAGAIN)
        timings["subscriber RECV (nothing)"] += self.spent
        self.spent = 0.0
        for kh, fh in enumerate(self.subscribers, 1):
            self.request(p.Opcode.POLL, 0, p.POLL_IN.pack(fh, kh, p.POLL_SCHEDULE_NOTIFY, 1))
        timings["subscriber POLL"] += self.spent
        bloom = item(Item.BLOOM_FILTER, bytes(8) + BLOOM_BITS)
        message = cmd(structs.MSG, bloom + vec(self.payload, 8), flags=MSG_SIGNAL,
                      dst_id=DST_ID_BROADCAST, payload_type=PAYLOAD_DBUS, cookie=self.cookie)
        send = cmd(structs.CMD_SEND, msg_address=self.place(0x1000, message))
        self.spent = 0.0
        out = self.request(p.Opcode.IOCTL, 0, p.IOCTL_IN.pack(self.sender, 0, Cmd.SEND,
                                                              self.place(0x1800, send), len(send), 0) + send)
        timings["sender SEND (broadcast)"] += self.spent
        woken = len(out) - 1
        assert woken == len(self.subscribers), f"woke {woken} of {len(self.subscribers)} pollers"
        received = []
        self.spent = 0.0
        for fh in self.subscribers:
            self.place(0x2000, recv)
            got = self.ioctl(fh, Cmd.RECV, recv_at, out_size=len(recv))
            received.append(struct.unpack_from("<Q", got, p.IOCTL_OUT.size + 40)[0])
        timings["subscriber RECV"] += self.spent
        self.spent = 0.0
        for fh, offset in zip(self.subscribers, received, strict=True):
            free = cmd(structs.CMD_FREE, offset=offset)
            self.ioctl(fh, Cmd.FREE, self.place(0x2100, free), free)
        timings["subscriber FREE"] += self.spent


def cmd(layout: Layout, items: bytes = b"", **fields: int) -> bytes:
    names: tuple[str, ...] = layout.tuple._fields  # type: ignore[attr-defined]
    values: dict[str, int | bytes] = {name: bytes(16) if name == "id128" else 0 for name in names}
    values["size"] = layout.size + len(items)
    values.update(fields)
    return layout.pack(*values.values()) + items


def vec(address: int, size: int) -> bytes:
    return item(Item.PAYLOAD_VEC, struct.pack("<QQ", size, address))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per run")
    parser.add_argument("--runs", type=int, default=7, help="runs (the median is printed)")
    parser.add_argument("--metadata", action="store_true",
                        help="both clients receive sd-bus's metadata (see the module's docstring)")
    parser.add_argument("--signal-subscribers", type=int, metavar="N",
                        help="replay 8-byte broadcasts to N subscribers instead of calls")
    args = parser.parse_args()
    if args.signal_subscribers is not None:
        broadcasts(args.signal_subscribers, args.calls, args.runs)
        return
    replay = Calls(args.metadata)
    warm: dict[str, float] = defaultdict(float)
    for _ in range(1000):
        replay.call(warm)
    runs = []
    for _ in range(args.runs):
        timings: dict[str, float] = defaultdict(float)
        for _ in range(args.calls):
            replay.call(timings)
        runs.append(timings)
    receiver = ", receivers asking for metadata" if args.metadata else ""
    print(f"Python per 8-byte sync call{receiver}, median of {args.runs} runs of {args.calls} calls\n")
    print("| request | µs per call |")
    print("|---|---|")
    for name in runs[0]:
        print(f"| {name} | {statistics.median(r[name] for r in runs) / args.calls * 1e6:.1f} |")
    total = statistics.median(sum(r.values()) for r in runs) / args.calls * 1e6
    print(f"| **all seven** | **{total:.1f}** |")


def broadcasts(subscribers: int, count: int, runs_wanted: int) -> None:
    replay = Signals(subscribers)
    warm: dict[str, float] = defaultdict(float)
    for _ in range(min(count, 1000)):
        replay.broadcast(warm)
    runs = []
    for _ in range(runs_wanted):
        timings: dict[str, float] = defaultdict(float)
        for _ in range(count):
            replay.broadcast(timings)
        runs.append(timings)
    print(f"Python per 8-byte broadcast to {subscribers} subscribers, median of {runs_wanted} runs of "
          f"{count} broadcasts\n")
    print("| request | µs per broadcast |")
    print("|---|---|")
    for name in runs[0]:
        print(f"| {name} | {statistics.median(r[name] for r in runs) / count * 1e6:.1f} |")
    total = statistics.median(sum(r.values()) for r in runs) / count * 1e6
    print(f"| **all {1 + 4 * subscribers} requests** | **{total:.1f}** |")


if __name__ == "__main__":
    main()
