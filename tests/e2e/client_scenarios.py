"""Scenarios for kdbusfs.client against a real mount, run in the test process (root mounts) or as
the unprivileged test user (`python client_scenarios.py NAME ARGS...`, for user mounts).

Only the standard library, trio and kdbusfs are imported, so the test user runs this file with the
staged runtime. Nothing waits by sleeping: receives wait for messages, and "not delivered" is shown
by a later message that is delivered (one sender's messages reach a receiver in order).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from kdbusfs.abi.constants import (
    HELLO_ACTIVATOR,
    HELLO_POLICY_HOLDER,
    NAME_ACTIVATOR,
    NAME_ALLOW_REPLACEMENT,
    NAME_IN_QUEUE,
    NAME_PRIMARY,
    NAME_QUEUE,
    Item,
)
from kdbusfs.client import (
    ATTACH_ALL,
    Attach,
    Bloom,
    BloomFilter,
    CommandError,
    IdChange,
    Kind,
    ListEntry,
    Metadata,
    NameChange,
    OwnedName,
    ReplyLost,
    aio,
    make_bus,
    match,
)
from kdbusfs.client.connection import Connection

WAIT = 10.0
NO_SUCH_ID = 1 << 40


def expect_error(code: int, action: Callable[..., Any], *args: Any, **kwargs: Any) -> CommandError:
    try:
        action(*args, **kwargs)
    except CommandError as exc:
        assert exc.errno == code, f"{action.__name__}: want {errno.errorcode[code]}, got {exc}"
        return exc
    raise AssertionError(f"{action.__name__}: want {errno.errorcode[code]}, it succeeded")


def calls_and_replies(root: str, tools: str) -> None:
    with make_bus(root, "calls") as bus, bus.connect(attach_flags_recv=ATTACH_ALL) as server, \
            bus.connect(description="caller") as client:
        owned = server.acquire_name("org.example.Echo")
        assert owned.primary and owned.newly_acquired, owned
        big = bytes(range(256)) * 4096
        cookie = client.send("org.example.Echo", [b"hello, ", b"world", big], expect_reply=True, timeout=60)
        call = server.recv(timeout=WAIT)
        assert call.parts == (b"hello, ", b"world", big) and call.payload == b"hello, world" + big
        assert (call.src_id, call.dst_id, call.dst_name) == (client.id, 0, "org.example.Echo"), call
        assert call.cookie == cookie and call.expects_reply and call.timeout_ns > 0 and not call.is_reply
        meta = call.metadata
        assert meta.creds is not None and (meta.creds.uid, meta.creds.euid) == (os.getuid(), os.geteuid())
        assert meta.pids is not None and meta.pids.pid == os.getpid(), meta.pids
        assert meta.description == "caller" and meta.timestamp is not None, meta
        server.reply(call, b"pong")
        reply = client.recv(timeout=WAIT)
        assert reply.is_reply and reply.cookie_reply == cookie and reply.src_id == server.id, reply
        assert reply.payload == b"pong"
        # The caller asked for no metadata (attach_flags_recv 0): it gets none.
        assert reply.metadata == Metadata(), reply.metadata
        # The reply consumed the call: a second one answers nothing.
        expect_error(errno.EBADSLT, server.reply, call, b"again")


def synchronous_calls(root: str, tools: str) -> None:
    with make_bus(root, "sync") as bus, bus.connect() as server, bus.connect() as client:
        def serve() -> None:
            call = server.recv(timeout=WAIT)
            server.reply(call, b"re:" + call.payload)

        server_thread = threading.Thread(target=serve)
        server_thread.start()
        reply = client.call(server.id, b"sync", timeout=WAIT)
        server_thread.join()
        assert reply.payload == b"re:sync" and reply.src_id == server.id and reply.is_reply, reply
        # A synchronous reply comes back in the SEND, never through the queue.
        assert client.try_recv() is None

        started = time.monotonic()
        try:
            client.call(server.id, b"unanswered", timeout=0.3)
        except TimeoutError as exc:
            assert isinstance(exc, CommandError) and exc.errno == errno.ETIMEDOUT
            assert str(exc) == "KDBUS_CMD_SEND: ETIMEDOUT (no reply before the timeout)", str(exc)
        else:
            raise AssertionError("a call nobody answers returned")
        assert time.monotonic() - started >= 0.25
        late = server.recv(timeout=WAIT)
        assert late.payload == b"unanswered"
        expect_error(errno.EBADSLT, server.reply, late, b"too late")

        # A readable CANCEL_FD ends the call at once.
        cancel = os.eventfd(1, os.EFD_CLOEXEC)
        try:
            expect_error(errno.ECANCELED, client.call, server.id, b"cancelled", timeout=60, cancel_fd=cancel)
        finally:
            os.close(cancel)

        # An asynchronous call that times out comes back as REPLY_TIMEOUT; one whose callee goes
        # away as REPLY_DEAD.
        cookie = client.send(server.id, b"async", expect_reply=True, timeout=0.3)
        note = client.recv(timeout=WAIT)
        assert note.is_kernel and note.notification == ReplyLost(Item.REPLY_TIMEOUT, cookie), note
        with bus.connect() as short_lived:
            cookie = client.send(short_lived.id, b"async", expect_reply=True, timeout=60)
        note = client.recv(timeout=WAIT)
        assert note.notification == ReplyLost(Item.REPLY_DEAD, cookie), note


def broadcasts_and_matches(root: str, tools: str) -> None:
    with make_bus(root, "signals") as bus, bus.connect() as emitter, bus.connect() as clock_listener, \
            bus.connect() as other_listener, bus.connect() as everything:
        assert clock_listener.bloom.size == 64 and clock_listener.bloom.n_hash == 8
        clock_mask = BloomFilter.for_match(interface="org.example.Clock")
        other_mask = BloomFilter.for_match(interface="org.example.Other")
        clock_listener.add_match([match.bloom_mask(clock_mask)], cookie=1)
        other_listener.add_match([match.bloom_mask(other_mask), match.sender_id(emitter.id)], cookie=7)
        # A raw all-zero mask selects every signal.
        everything.add_match([match.bloom_mask(bytes(64)), match.destination_id(match.ANY)], cookie=3)
        tick = BloomFilter.for_signal(interface="org.example.Clock", member="Tick", path="/org/example/clock")
        other = BloomFilter.for_signal(interface="org.example.Other", member="Changed")
        assert tick.covers(clock_mask) and not tick.covers(other_mask)

        cookie = emitter.emit(b"tick", tick)
        got = clock_listener.recv(timeout=WAIT)
        assert got.payload == b"tick" and got.cookie == cookie and got.src_id == emitter.id, got
        assert got.is_signal and got.is_broadcast and got.bloom == Bloom(0, bytes(tick)), got
        emitter.emit(b"other", other)
        # The other listener's first signal is the one its match selects, not the tick before it.
        assert other_listener.recv(timeout=WAIT).payload == b"other"
        assert [everything.recv(timeout=WAIT).payload for _ in range(2)] == [b"tick", b"other"]
        emitter.emit(b"tick2", tick)
        assert clock_listener.recv(timeout=WAIT).payload == b"tick2"
        # A connection without matches receives no broadcasts, its own included.
        assert emitter.try_recv() is None

        clock_listener.remove_match(1)
        expect_error(errno.EBADSLT, clock_listener.remove_match, 1)
        clock_listener.add_match([match.bloom_mask(other_mask)], cookie=2)
        emitter.emit(b"tick3", tick)
        emitter.emit(b"other2", other)
        assert clock_listener.recv(timeout=WAIT).payload == b"other2"
        # A mask of another size than the bus's is refused.
        expect_error(errno.EDOM, clock_listener.add_match, [match.bloom_mask(bytes(24))])


def names_and_notifications(root: str, tools: str) -> None:
    name = "org.example.Clock"
    with make_bus(root, "names") as bus, bus.connect() as watcher:
        watcher.add_match([match.id_added()], cookie=1)
        watcher.add_match([match.name_added(name)], cookie=2)
        watcher.add_match([match.name_changed(name)], cookie=3)
        watcher.add_match([match.name_removed(name)], cookie=4)
        with bus.connect() as first, bus.connect() as second:
            for conn in (first, second):
                note = watcher.recv(timeout=WAIT)
                assert note.is_kernel and note.notification == IdChange(Item.ID_ADD, conn.id, 0), note
                assert note.metadata.timestamp is not None
            owned = first.acquire_name(name, allow_replacement=True)
            assert owned.primary and owned.flags & NAME_ALLOW_REPLACEMENT, owned
            note = watcher.recv(timeout=WAIT)
            assert isinstance(note.notification, NameChange), note
            assert (note.notification.kind, note.notification.name) == (Item.NAME_ADD, name)
            assert (note.notification.old_id, note.notification.new_id) == (0, first.id)
            assert note.notification.new_flags & NAME_PRIMARY

            exc = expect_error(errno.EEXIST, second.acquire_name, name)
            assert isinstance(exc, FileExistsError)
            queued = second.acquire_name(name, queue=True)
            assert queued.in_queue and queued.newly_acquired and not queued.primary, queued
            records = [entry for entry in watcher.list_peers(queued=True) if entry.name is not None]
            assert ListEntry(first.id, 0, OwnedName(name, NAME_ALLOW_REPLACEMENT | NAME_PRIMARY)) in records
            assert ListEntry(second.id, 0, OwnedName(name, NAME_QUEUE | NAME_IN_QUEUE)) in records
            expect_error(errno.EADDRINUSE, watcher.release_name, name)
            exc = expect_error(errno.ESRCH, watcher.release_name, "org.example.Nobody")
            assert str(exc) == "KDBUS_CMD_NAME_RELEASE: ESRCH (no such name)", str(exc)

            first.release_name(name)
            change = watcher.recv(timeout=WAIT).notification
            assert isinstance(change, NameChange) and change.kind == Item.NAME_CHANGE, change
            assert (change.old_id, change.new_id) == (first.id, second.id), change
        gone = watcher.recv(timeout=WAIT).notification
        assert isinstance(gone, NameChange) and gone.kind == Item.NAME_REMOVE, gone
        assert (gone.old_id, gone.new_id, gone.name) == (second.id, 0, name), gone


def _proc_status() -> dict[str, list[str]]:
    with open("/proc/self/status") as status:
        return {key: value.split() for key, _, value in (line.partition(":") for line in status)}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def metadata_and_queries(root: str, tools: str) -> None:
    with make_bus(root, "meta", creator_attach_flags=ATTACH_ALL) as bus, \
            bus.connect(description="observed") as observed, bus.connect() as observer:
        observed.acquire_name("org.example.Observed")
        status = _proc_status()
        uids, gids = [int(v) for v in status["Uid"]], [int(v) for v in status["Gid"]]
        for target in (observed.id, "org.example.Observed"):
            info = observer.conn_info(target)
            assert (info.id, info.flags) == (observed.id, 0), info
            meta = info.metadata
            assert meta.creds is not None and (meta.creds.uid, meta.creds.euid, meta.creds.suid,
                                               meta.creds.fsuid) == tuple(uids), meta.creds
            assert (meta.creds.gid, meta.creds.egid, meta.creds.sgid, meta.creds.fsgid) == tuple(gids)
            assert meta.pids is not None
            assert (meta.pids.pid, meta.pids.tid, meta.pids.ppid) == (
                os.getpid(), threading.get_native_id(), os.getppid()), meta.pids
            assert meta.pid_comm == _read("/proc/self/comm"), meta.pid_comm
            assert meta.tid_comm == _read(f"/proc/self/task/{threading.get_native_id()}/comm")
            assert meta.exe == os.readlink("/proc/self/exe"), meta.exe
            assert meta.cmdline is not None and meta.cmdline[0] == _read("/proc/self/cmdline").split("\0")[0]
            cgroups = _read("/proc/self/cgroup").splitlines()
            if len(cgroups) == 1 and cgroups[0].startswith("0::"):
                assert meta.cgroup == cgroups[0][3:], (meta.cgroup, cgroups)
            assert meta.caps is not None
            assert (meta.caps.inheritable, meta.caps.permitted, meta.caps.effective, meta.caps.bounding) == (
                tuple(int(status[key][0], 16) for key in ("CapInh", "CapPrm", "CapEff", "CapBnd")))
            if os.path.exists("/proc/self/sessionid"):
                assert meta.audit is not None
                assert (meta.audit.sessionid, meta.audit.loginuid) == (
                    int(_read("/proc/self/sessionid")), int(_read("/proc/self/loginuid"))), meta.audit
            assert meta.owned_names == (OwnedName("org.example.Observed", NAME_PRIMARY),)
            assert meta.description == "observed" and meta.timestamp is None, meta

        # Only the items asked for, and only what the target lets others see.
        meta = observer.conn_info(observed.id, attach_flags=Attach.CREDS | Attach.PID_COMM).metadata
        assert meta.creds is not None and meta.pid_comm is not None and meta.pids is None and meta.exe is None
        observed.update(attach_flags_send=Attach.PIDS)
        meta = observer.conn_info(observed.id).metadata
        assert meta.pids is not None and meta.creds is None and meta.description is None, meta
        expect_error(errno.ENXIO, observer.conn_info, NO_SUCH_ID)
        expect_error(errno.ESRCH, observer.conn_info, "org.example.Nobody")

        entries = observer.list_peers()
        assert ListEntry(observer.id, 0) in entries, entries
        assert ListEntry(observed.id, 0, OwnedName("org.example.Observed", NAME_PRIMARY)) in entries
        assert [e.id for e in observer.list_peers(names=False)].count(observed.id) == 1

        creator = observer.bus_creator_info()
        assert creator.name == bus.name and creator.flags == 0, creator
        assert creator.metadata.creds is not None and creator.metadata.creds.uid == os.getuid()
        assert creator.metadata.pids is not None and creator.metadata.pids.pid == os.getpid()
        assert creator.metadata.owned_names == () and creator.metadata.description is None


def queue_controls(root: str, tools: str) -> None:
    with make_bus(root, "queue") as bus, bus.connect() as server, bus.connect() as client:
        for priority in (10, -5, 3):
            client.send(server.id, str(priority).encode(), priority=priority)
        urgent = server.recv(timeout=WAIT, priority=0)
        assert (urgent.payload, urgent.priority) == (b"-5", -5), urgent
        assert server.try_recv(priority=-10) is None
        assert server.recv(timeout=WAIT, peek=True).payload == b"10"
        assert server.recv(timeout=WAIT, peek=True).payload == b"10"
        server.drop()
        assert server.recv(timeout=WAIT).payload == b"3"
        exc = expect_error(errno.EAGAIN, server.drop)
        assert isinstance(exc, BlockingIOError)


def errors(root: str, tools: str) -> None:
    with make_bus(root, "errors") as bus, bus.connect() as server, bus.connect() as client:
        exc = expect_error(errno.ENXIO, client.send, NO_SUCH_ID, b"x")
        assert str(exc) == "KDBUS_CMD_SEND: ENXIO (no such peer)" and exc.command == "KDBUS_CMD_SEND"
        expect_error(errno.ESRCH, client.send, "org.example.Nobody", b"x")
        exc = expect_error(errno.EEXIST, make_bus, root, "errors")
        assert str(exc).startswith("KDBUS_CMD_BUS_MAKE: EEXIST")
        # A plain message is no call: replying to it answers nothing.
        server.send(client.id, b"plain")
        expect_error(errno.EBADSLT, client.reply, client.recv(timeout=WAIT))
        exc = expect_error(errno.ENXIO, client.pool.free, 8)
        assert str(exc) == "KDBUS_CMD_FREE: ENXIO (no such slice in the pool)"
        expect_error(errno.EBADSLT, client.remove_match, 42)
        expect_error(errno.EINVAL, client.acquire_name, "not a name")

        server.send(client.id, b"queued")
        expect_error(errno.EBUSY, client.byebye)
        client.drop()
        client.byebye()
        exc = expect_error(errno.ECONNRESET, client.send, server.id, b"x")
        assert isinstance(exc, ConnectionResetError)

        with bus.connect(kind=Kind.MONITOR) as monitor:
            expect_error(errno.EOPNOTSUPP, monitor.send, server.id, b"x")


def monitors_and_activators(root: str, tools: str) -> None:
    name = "org.example.Lazy"
    with make_bus(root, "special") as bus, bus.connect(kind=Kind.MONITOR) as monitor, \
            bus.connect(kind=Kind.ACTIVATOR, name=name) as activator, bus.connect() as client:
        assert client.list_peers(unique=False, names=False, activators=True) == [
            ListEntry(activator.id, HELLO_ACTIVATOR, OwnedName(name, NAME_ACTIVATOR | NAME_PRIMARY))]
        assert client.conn_info(activator.id).flags == HELLO_ACTIVATOR
        cookie = client.send(name, b"wake up", expect_reply=True, timeout=60)
        waiting = activator.recv(timeout=WAIT, peek=True)
        assert (waiting.payload, waiting.dst_name, waiting.src_id) == (b"wake up", name, client.id)
        with bus.connect() as service:
            # Taking the name moves the queued call (and its reply tracking) to the service.
            assert service.acquire_name(name).primary
            call = service.recv(timeout=WAIT)
            assert call.cookie == cookie and call.payload == b"wake up"
            service.reply(call, b"awake")
        assert client.recv(timeout=WAIT).payload == b"awake"
        # The monitor saw the call and then the reply, among the notifications.
        seen = []
        while (message := monitor.try_recv()) is not None:
            seen.append(message)
        user_messages = [(m.src_id, m.payload) for m in seen if not m.is_kernel]
        assert user_messages == [(client.id, b"wake up"), (service.id, b"awake")], user_messages
        assert any(isinstance(m.notification, IdChange) and m.notification.id == client.id for m in seen)


def a_c_peer(root: str, tools: str) -> None:
    with make_bus(root, "cpeer") as bus, bus.connect() as server, bus.connect() as client:
        peer = subprocess.Popen([os.path.join(tools, "echo"), root, bus.name, "org.example.CEcho"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert peer.stdin is not None and peer.stdout is not None
        try:
            line = peer.stdout.readline()
            assert line.startswith("id "), line
            peer_id = int(line.split()[1])
            reply = client.call("org.example.CEcho", b"hi", timeout=WAIT)
            assert (reply.payload, reply.src_id) == (b"echo:hi", peer_id), reply
            cookie = client.send(peer_id, b"async", expect_reply=True, timeout=60)
            reply = client.recv(timeout=WAIT)
            assert (reply.payload, reply.cookie_reply) == (b"echo:async", cookie), reply
            info = client.conn_info(peer_id)
            assert info.metadata.pids is not None and info.metadata.pids.pid == peer.pid
            assert info.metadata.pid_comm == "echo" and info.metadata.owned_names == (
                OwnedName("org.example.CEcho", NAME_PRIMARY),), info.metadata

            server.acquire_name("org.example.Py")
            for destination in (str(server.id), "org.example.Py"):
                def serve() -> None:
                    call = server.recv(timeout=WAIT)
                    assert call.src_id == peer_id and call.payload == b"ping", call
                    server.reply(call, b"pong")

                server_thread = threading.Thread(target=serve)
                server_thread.start()
                peer.stdin.write(f"call {destination} ping\n")
                peer.stdin.flush()
                answer = peer.stdout.readline().strip()
                server_thread.join()
                assert answer == "reply pong", answer
            peer.stdin.write(f"call {NO_SUCH_ID} ping\n")
            peer.stdin.flush()
            assert peer.stdout.readline().strip() == f"errno {errno.ENXIO}"
        finally:
            peer.stdin.close()
            assert peer.wait(timeout=WAIT) == 0


def trio_tasks(root: str, tools: str) -> None:
    with make_bus(root, "trio") as bus, bus.connect() as server, bus.connect() as client:
        async def main() -> None:
            received = []

            async def receive_one() -> None:
                received.append(await aio.receive(server))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_one)
                # The receiver is parked in trio's I/O wait before anything is sent.
                await trio.testing.wait_all_tasks_blocked()
                assert not received
                client.send(server.id, b"wake")
            assert [m.payload for m in received] == [b"wake"]

            async def serve() -> None:
                call = await aio.receive(server)
                server.reply(call, b"async:" + call.payload)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                reply = await aio.call(client, server.id, b"hi", timeout=WAIT)
            assert reply.payload == b"async:hi"

            # Cancelling the task ends the call through its CANCEL_FD.
            started = time.monotonic()
            with trio.move_on_after(0.3) as scope:
                await aio.call(client, server.id, b"never answered", timeout=60)
            assert scope.cancelled_caught and time.monotonic() - started < WAIT

        trio.run(main)


def acquire_under_policy(endpoint: str) -> None:
    """Run as a user who is not the bus owner: the policy lets it own one name only."""
    with Connection.hello(endpoint) as conn:
        assert conn.acquire_name("org.example.Open").primary
        exc = expect_error(errno.EPERM, conn.acquire_name, "org.example.Closed")
        assert isinstance(exc, PermissionError)
        holders = [entry.id for entry in conn.list_peers() if entry.flags == HELLO_POLICY_HOLDER]
        assert len(holders) == 1, conn.list_peers()


SCENARIOS: dict[str, Callable[..., None]] = {
    scenario.__name__: scenario for scenario in (
        calls_and_replies, synchronous_calls, broadcasts_and_matches, names_and_notifications,
        metadata_and_queries, queue_controls, errors, monitors_and_activators, a_c_peer, trio_tasks,
        acquire_under_policy,
    )
}
ON_EVERY_MOUNT = [name for name in SCENARIOS if name != "acquire_under_policy"]

if __name__ == "__main__":
    try:
        SCENARIOS[sys.argv[1]](*sys.argv[2:])
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    print(f"{sys.argv[1]}: ok")
