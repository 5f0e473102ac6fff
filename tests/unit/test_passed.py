"""Descriptors a message passes: held from SEND until one receiver takes them, closed otherwise."""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest
from bus_helpers import FakeFiles as Files
from helpers import FakeCaller, cmd_bytes, connect, make_bus, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    DST_ID_BROADCAST,
    HELLO_ACCEPT_FD,
    MSG_SIGNAL,
    RECV_DROP,
    RECV_PEEK,
    Cmd,
    Item,
)
from kdbusfs.abi.items import item
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.message import Passed
from kdbusfs.bus.pool import Pool

RECV_RETURN_INCOMPLETE_FDS = 1


class Installer(FakeCaller):
    """A receiver that can be given descriptors: each gets the number 500 + its daemon fd."""

    def __init__(self, files: Files) -> None:
        super().__init__()
        self._files = files
        self.installed: list[int] = []

    def files(self) -> Any:
        return self._files

    def install(self, passed: Passed, pool: Pool, offset: int) -> bool:
        for fd, slot in zip(passed.fds, passed.slots, strict=True):
            struct.pack_into("<i", pool.buffer, offset + slot, 500 + fd)
            self.installed.append(fd)
        passed.close()
        return True


def setup() -> tuple[Bus, Any, Any, Files]:
    bus = make_bus(Domain()).bus
    assert bus is not None
    files = Files()
    sender, receiver = connect(bus, flags=HELLO_ACCEPT_FD), connect(bus, flags=HELLO_ACCEPT_FD)
    sender.caller = Installer(files)
    receiver.caller = Installer(files)
    return bus, sender, receiver, files


def send_fds(sender: Any, dst: int, n: int) -> None:
    items = item(Item.FDS, struct.pack(f"<{n}i", *range(3, 3 + n)))
    data = structs.MSG.pack(structs.MSG.size + len(items), 0, 0, dst, 0, 0xBB, 1, 0) + items
    address = sender.caller.place(data, 0x100)
    run(sender.handle, sender.caller, Cmd.SEND,
        structs.CMD_SEND.pack(structs.CMD_SEND.size, 0, 0, address, 0, 0, 0), 0x2000)


def recv(conn: Any, flags: int = 0) -> Any:
    out = run(conn.handle, conn.caller, Cmd.RECV, cmd_bytes(structs.CMD_RECV, flags=flags), 0x3000)
    return structs.CMD_RECV.unpack(out)


def fds_in_pool(conn: Any, offset: int, n: int) -> list[int]:
    at = offset + structs.MSG.size + 16
    return list(struct.unpack_from(f"<{n}i", conn.handle.conn.pool.buffer, at))


def test_a_receiver_that_can_take_them_gets_the_numbers_in_its_fds_item() -> None:
    _, sender, receiver, files = setup()
    send_fds(sender, receiver.id, 3)
    got = recv(receiver)
    assert receiver.caller.installed == [1001, 1002, 1003]
    assert fds_in_pool(receiver, got.msg_offset, 3) == [1501, 1502, 1503]
    assert not got.msg_return_flags & RECV_RETURN_INCOMPLETE_FDS
    # Installed copies belong to the receiver; the daemon's are closed.
    assert files.released == [1001, 1002, 1003]


def test_a_receiver_that_cannot_take_them_finds_minus_one_and_they_are_closed() -> None:
    _, sender, receiver, files = setup()
    receiver.caller = FakeCaller()  # installs nothing
    receiver.caller.install = lambda passed, pool, offset: (passed.close(), False)[1]
    send_fds(sender, receiver.id, 2)
    got = recv(receiver)
    assert fds_in_pool(receiver, got.msg_offset, 2) == [-1, -1]
    assert got.msg_return_flags & RECV_RETURN_INCOMPLETE_FDS
    assert files.released == [1001, 1002]


def test_peek_installs_nothing_and_the_next_recv_does() -> None:
    _, sender, receiver, files = setup()
    send_fds(sender, receiver.id, 1)
    peeked = recv(receiver, RECV_PEEK)
    assert receiver.caller.installed == [] and fds_in_pool(receiver, peeked.msg_offset, 1) == [-1]
    got = recv(receiver)
    assert receiver.caller.installed == [1001] and fds_in_pool(receiver, got.msg_offset, 1) == [1501]


def test_dropped_and_disconnected_queues_close_what_they_held() -> None:
    _, sender, receiver, files = setup()
    send_fds(sender, receiver.id, 1)
    send_fds(sender, receiver.id, 2)
    recv(receiver, RECV_DROP)
    assert files.released == [1001]
    receiver.handle.conn.disconnect()
    assert files.released == [1001, 1002, 1003]
    assert receiver.caller.installed == []


def test_a_send_that_fails_after_taking_them_closes_them() -> None:
    _, sender, receiver, files = setup()
    with raises_errno(errno.ENXIO):
        send_fds(sender, 999_999, 2)  # no such destination
    assert files.released == [1001, 1002]


def test_a_send_refused_by_the_receivers_quota_closes_them() -> None:
    _, sender, receiver, files = setup()
    send_fds(sender, receiver.id, 16)  # the 16 fds in flight a sending user may have
    for _ in range(3):
        with raises_errno(errno.EMFILE):
            send_fds(sender, receiver.id, 16)
    assert files.released == list(range(1017, 1065))


def test_every_receiver_of_a_broadcast_gets_its_memfd_and_the_last_one_closes_it() -> None:
    bus, sender, first, files = setup()
    second = connect(bus, flags=HELLO_ACCEPT_FD)
    second.caller = Installer(files)
    for conn in (first, second):
        run(conn.handle, conn.caller, Cmd.MATCH_ADD, cmd_bytes(structs.CMD_MATCH, cookie=1))
    memfd = item(Item.PAYLOAD_MEMFD, struct.pack("<QQiI", 0, 4096, 5, 0))
    items = memfd + item(Item.BLOOM_FILTER, bytes(8 + 64))
    data = structs.MSG.pack(structs.MSG.size + len(items), MSG_SIGNAL, 0, DST_ID_BROADCAST, 0, 0xBB, 1,
                            0) + items
    address = sender.caller.place(data, 0x100)
    run(sender.handle, sender.caller, Cmd.SEND,
        structs.CMD_SEND.pack(structs.CMD_SEND.size, 0, 0, address, 0, 0, 0), 0x2000)
    recv(first)
    assert first.caller.installed == [1001] and files.released == []
    recv(second)
    assert second.caller.installed == [1001] and files.released == [1001]


def test_a_launched_receiver_gets_each_descriptor_added_and_its_number_in_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kdbusfs import seccomp
    from kdbusfs.host import Host
    from kdbusfs.host.caller import SupervisedCaller
    added: list[tuple[int, int, int]] = []

    def add_fd(listener: int, notif_id: int, fd: int) -> int:
        if fd == 1002:
            raise OSError(errno.EMFILE, "full")
        added.append((listener, notif_id, fd))
        return 40 + len(added)

    monkeypatch.setattr(seccomp, "add_fd", add_fd)
    files = Files()
    pool = Pool(4096)
    passed = Passed([1001, 1002, 1003], [80, 84, 88], files.release)
    caller = SupervisedCaller(Host(), 1, listener=7, notif_id=99)
    struct.pack_into("<3i", pool.buffer, 100 + 80, -1, -1, -1)
    assert caller.install(passed, pool, 100) is False  # one did not fit
    assert added == [(7, 99, 1001), (7, 99, 1003)]
    assert struct.unpack_from("<3i", pool.buffer, 180) == (41, -1, 42)
    assert pool.dirty == [(180, 192)]
    assert files.released == [1001, 1002, 1003]
