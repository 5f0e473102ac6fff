"""The classic endpoint in one process: real sockets, the real bus model, the serving loop played
by the test (each ready descriptor's handler is run until nothing is left to do)."""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kdbusfs import limits
from kdbusfs.bus.domain import Domain
from kdbusfs.classic.endpoint import ClassicEndpoint
from kdbusfs.classic.framing import message_size
from kdbusfs.classic.listening import listen
from kdbusfs.dbus import DBusMessage, MessageFlags, MessageType, wire
from kdbusfs.fs import Filesystem
from kdbusfs.fuse.codec import Output

DRIVER = "org.freedesktop.DBus"


class Loop:
    """The session's fd hooks, served on demand by `turn()`."""

    def __init__(self) -> None:
        self.handlers: dict[int, tuple[Callable[[int], list[Output]], int]] = {}

    def watch_fd(self, fd: int, handler: Callable[[int], list[Output]], events: int = select.EPOLLIN) -> None:
        self.handlers[fd] = (handler, events)

    def rewatch_fd(self, fd: int, events: int) -> None:
        self.handlers[fd] = (self.handlers[fd][0], events)

    def unwatch_fd(self, fd: int) -> None:
        self.handlers.pop(fd, None)

    def turn(self) -> None:
        """Serve every watched descriptor that is ready, until none is."""
        for _ in range(100):
            poller = select.poll()
            for fd, (_, events) in self.handlers.items():
                wanted = select.POLLIN | (select.POLLOUT if events & select.EPOLLOUT else 0)
                poller.register(fd, wanted)
            ready = [(fd, mask) for fd, mask in poller.poll(0) if fd in self.handlers]
            if not ready:
                return
            for fd, mask in ready:
                if fd in self.handlers:
                    epoll_mask = (select.EPOLLIN if mask & (select.POLLIN | select.POLLHUP) else 0) | (
                        select.EPOLLOUT if mask & select.POLLOUT else 0)
                    self.handlers[fd][0](epoll_mask)

    def wait_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Serve what becomes ready (the endpoint's timer included) until `done()`."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, "the condition never came true"
            poller = select.poll()
            for fd, (_, events) in self.handlers.items():
                poller.register(fd, select.POLLIN | (select.POLLOUT if events & select.EPOLLOUT else 0))
            poller.poll(left * 1000)
            self.turn()


class Peer:
    """A classic client speaking through a real socket."""

    def __init__(self, path: Path, loop: Loop) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(0)
        self.loop = loop
        self.buffer = b""
        self.serial = 0
        self.name = ""

    def raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                pass  # the endpoint reads when the loop turns
            self.loop.turn()

    def read_all(self) -> bytes:
        self.loop.turn()
        try:
            # Large reads: a bytes buffer grown by small ones would copy a large message quadratically.
            while chunk := self.sock.recv(1 << 20):
                self.buffer += chunk
        except BlockingIOError:
            pass
        return self.buffer

    def authenticate(self) -> None:
        self.raw(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\nBEGIN\r\n")
        assert self.read_all().startswith(b"OK ")
        self.buffer = b""
        self.name = self.call(DRIVER, "Hello").body[0]

    def send(self, message: DBusMessage) -> None:
        self.raw(wire.encode_dbus1(message))

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def call(self, destination: str, member: str, signature: str = "", body: tuple[object, ...] = (),
             interface: str | None = DRIVER, path: str = "/org/freedesktop/DBus") -> DBusMessage:
        serial = self.next_serial()
        self.send(DBusMessage.method_call(destination, path, interface, member, signature, body,
                                          serial=serial))
        for message in self.messages():
            if message.reply_serial == serial:
                return message
        raise AssertionError(f"no reply to {member}")

    def messages(self) -> Iterator[DBusMessage]:
        self.read_all()
        while len(self.buffer) >= 16:
            size = message_size(self.buffer[:16])
            if len(self.buffer) < size:
                return
            data, self.buffer = self.buffer[:size], self.buffer[size:]
            yield wire.decode_dbus1(data)

    def closed(self) -> bool:
        self.loop.turn()
        try:
            while self.sock.recv(65536):
                pass  # what was said before the end (authentication replies)
            return True
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ClassicEndpoint, Loop, Path]]:
    # The real file system (its effects reach the endpoint as in the daemon), with no mount.
    served = Filesystem(Domain())
    loop = Loop()
    path = tmp_path / "bus"
    endpoint = ClassicEndpoint(served, listen(str(path), 0o600), str(path), "test")
    endpoint.attach(loop)
    yield endpoint, loop, path
    endpoint.close()
    served.shutdown()
    assert not path.exists()


def test_hello_list_names_and_own_a_name(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    endpoint, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    assert peer.name.startswith(":1.")
    acquired = [m for m in peer.messages() if m.member == "NameAcquired"]
    assert acquired and acquired[0].body == (peer.name,)
    assert peer.call(DRIVER, "RequestName", "su", ("org.example.Echo", 0)).body == (1,)
    assert peer.call(DRIVER, "RequestName", "su", ("org.example.Echo", 0)).body == (4,)
    names = peer.call(DRIVER, "ListNames").body[0]
    assert {DRIVER, peer.name, "org.example.Echo"} <= set(names)
    assert peer.call(DRIVER, "GetNameOwner", "s", ("org.example.Echo",)).body == (peer.name,)
    assert peer.call(DRIVER, "GetConnectionUnixUser", "s", ("org.example.Echo",)).body == (os.getuid(),)
    assert peer.call(DRIVER, "GetConnectionUnixProcessID", "s", (peer.name,)).body == (os.getpid(),)
    missing = peer.call(DRIVER, "GetNameOwner", "s", ("org.example.Nobody",))
    assert missing.type == MessageType.ERROR
    assert missing.error_name == "org.freedesktop.DBus.Error.NameHasNoOwner"
    assert peer.call(DRIVER, "Frobnicate").error_name == "org.freedesktop.DBus.Error.UnknownMethod"
    assert endpoint.bus_name in endpoint.domain.buses


def test_calls_signals_and_name_owner_changed_between_classic_clients(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    server, client = Peer(path, loop), Peer(path, loop)
    server.authenticate()
    client.authenticate()
    list(server.messages())
    list(client.messages())
    server.call(DRIVER, "RequestName", "su", ("org.example.Echo", 0))
    client.call(DRIVER, "AddMatch", "s", ("type='signal',interface='org.example.Echo',arg0='yes'",))
    client.call(DRIVER, "AddMatch", "s", ("type='signal',member='NameOwnerChanged',arg0='org.example.Echo'",))
    call_serial = client.next_serial()
    client.send(DBusMessage.method_call("org.example.Echo", "/echo", "org.example.Echo", "Echo", "s", ("hi",),
                                        serial=call_serial))
    call = next(m for m in server.messages() if m.member == "Echo")
    assert call.sender == client.name and call.body == ("hi",)
    server.send(DBusMessage.method_return(call, "s", ("echo:hi",), serial=server.next_serial()))
    reply = next(m for m in client.messages() if m.reply_serial == call_serial)
    assert reply.body == ("echo:hi",) and reply.sender == server.name
    for arg in ("no", "yes"):
        server.send(DBusMessage.signal("/echo", "org.example.Echo", "Tick", "s", (arg,),
                                       serial=server.next_serial()))
    ticks = [m.body for m in client.messages() if m.member == "Tick"]
    assert ticks == [("yes",)]
    server.sock.close()
    changes = [m.body for m in client.messages() if m.member == "NameOwnerChanged"]
    assert changes == [("org.example.Echo", server.name, "")]


def test_a_malformed_message_or_broken_authentication_closes_only_that_client(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    good, bad, rude = Peer(path, loop), Peer(path, loop), Peer(path, loop)
    good.authenticate()
    bad.authenticate()
    bad.raw(b"l\x01\x00\x01" + b"\xff" * 12)
    assert bad.closed()
    rude.raw(b"\0BEGIN\r\n")
    assert rude.closed()
    assert good.call(DRIVER, "GetId").type == MessageType.METHOD_RETURN


def test_a_message_before_hello_gets_dbus_daemon_s_access_denied(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    """dbus-daemon answers a call before Hello with AccessDenied and keeps the connection (its
    time to say Hello runs on); it used to be closed without a word."""
    endpoint, loop, path = setup
    peer = Peer(path, loop)
    peer.raw(b"\0AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n")
    assert b"OK " in peer.read_all()
    peer.buffer = b""
    refused = peer.call(DRIVER, "ListNames")
    assert refused.type == MessageType.ERROR
    assert refused.error_name == "org.freedesktop.DBus.Error.AccessDenied"
    assert refused.body == ("Client tried to send a message other than Hello without being registered",)
    # A signal or a call that wants no reply is dropped without one.
    peer.send(DBusMessage.signal("/x", "org.example.X", "Early", serial=peer.next_serial()))
    peer.send(DBusMessage.method_call(DRIVER, "/org/freedesktop/DBus", DRIVER, "ListNames",
                                      serial=peer.next_serial(), flags=MessageFlags.NO_REPLY_EXPECTED))
    loop.turn()
    assert not list(peer.messages())
    assert len(endpoint.clients) == 1
    # A Hello with arguments is refused as any driver call with wrong ones (dbus-daemon's
    # InvalidArgs); kdbusfs used to take it.
    wrong = peer.call(DRIVER, "Hello", "s", ("x",))
    assert wrong.error_name == "org.freedesktop.DBus.Error.InvalidArgs" and len(endpoint.clients) == 1
    assert wrong.body == ("Call to Hello has wrong args (s, expected )\n",)
    peer.name = peer.call(DRIVER, "Hello").body[0]
    assert peer.call(DRIVER, "GetId").type == MessageType.METHOD_RETURN


def test_a_message_of_an_unknown_type_is_ignored_and_its_sender_kept(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    """As the specification says and dbus-daemon does; the client used to be closed."""
    endpoint, loop, path = setup
    sender, receiver = Peer(path, loop), Peer(path, loop)
    sender.authenticate()
    receiver.authenticate()
    list(receiver.messages())
    unknown = bytearray(wire.encode_dbus1(DBusMessage.method_call(receiver.name, "/p", "org.example.X", "M",
                                                                  serial=sender.next_serial())))
    unknown[1] = 9
    sender.raw(bytes(unknown))
    assert sender.call(DRIVER, "GetId").type == MessageType.METHOD_RETURN
    loop.turn()
    assert not [m for m in receiver.messages() if m.member == "M"] and len(endpoint.clients) == 2


def test_too_many_calls_awaiting_replies_get_dbus_daemon_s_limits_exceeded(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    """Past kdbus's 128 calls awaiting replies (the system bus's max_replies_per_connection too)
    a call gets LimitsExceeded, as from dbus-daemon; it was a bare Failed ('...: EMLINK')."""
    _, loop, path = setup
    caller, service = Peer(path, loop), Peer(path, loop)
    caller.authenticate()
    service.authenticate()
    serials = []
    for _ in range(limits.CONN_MAX_REQUESTS_PENDING + 3):
        serials.append(caller.next_serial())
        caller.send(DBusMessage.method_call(service.name, "/", "org.example.X", "Wait", serial=serials[-1]))
    loop.turn()
    errors = [m for m in caller.messages() if m.type == MessageType.ERROR]
    assert [m.reply_serial for m in errors] == serials[-3:]
    assert {(m.error_name, m.body) for m in errors} == {(
        "org.freedesktop.DBus.Error.LimitsExceeded",
        ("The maximum number of pending replies per connection has been reached",))}


def test_a_client_that_does_not_read_holds_back_only_its_own_messages(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    endpoint, loop, path = setup
    sleeper, sender, bystander = Peer(path, loop), Peer(path, loop), Peer(path, loop)
    for peer in (sleeper, sender, bystander):
        peer.authenticate()
        list(peer.messages())
    # Vectors, not memfds: they fill the sleeper's pool.
    chunk = bytes(limits.CLASSIC_MEMFD_MIN_SIZE // 2)
    serials = []
    for _ in range(80):
        serial = sender.next_serial()
        serials.append(serial)
        sender.send(DBusMessage.method_call(sleeper.name, "/sink", "org.example.Sink", "Take", "ay", (chunk,),
                                            serial=serial))
    client = next(c for c in endpoint.clients.values() if c.conn is not None and c.conn.id == int(
        sleeper.name[3:]))
    # What the sleeper has not read is bounded in the daemon; the rest waits in its pool, and the
    # bus refuses the sender what its quota there does not hold: as errors to the sender's calls.
    assert client.outgoing_size <= limits.CLASSIC_OUTGOING_MAX + len(chunk) + 4096
    refused = [m for m in sender.messages() if m.type == MessageType.ERROR]
    assert refused and all(m.error_name == "org.freedesktop.DBus.Error.LimitsExceeded" for m in refused)
    # Others are served meanwhile.
    assert bystander.call(DRIVER, "GetId").type == MessageType.METHOD_RETURN
    # Reading, the sleeper gets every call the bus took, in order.
    taken: list[int] = []
    for _ in range(1000):
        taken += [m.serial for m in sleeper.messages() if m.member == "Take"]
        if len(taken) + len(refused) >= len(serials):
            break
    assert taken == [s for s in serials if s not in {m.reply_serial for m in refused}]


def test_a_socket_another_bus_listens_on_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "run" / "bus"
    first = listen(str(path), 0o600)
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(OSError, match="another bus listens there"):
        listen(str(path), 0o600)
    first.close()
    # A stale socket (nobody listening) is replaced.
    listen(str(path), 0o666).close()


def test_mount_options() -> None:
    from kdbusfs.cli import UsageError, parse_options

    options = parse_options(["nosuid,dbus_socket=/run/dbus/system_bus_socket"], as_root=True)
    assert (options.dbus_socket, options.dbus_bus) == ("/run/dbus/system_bus_socket", None)
    assert parse_options(["dbus_socket=bus,dbus_bus=test"], as_root=False).dbus_bus == "test"
    with pytest.raises(UsageError):
        parse_options(["dbus_bus=test"], as_root=True)
    with pytest.raises(UsageError):
        parse_options(["dbus_socket=/x,dbus_bus=a/b"], as_root=True)


def test_clients_that_never_say_hello_are_bounded(setup: tuple[ClassicEndpoint, Loop, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _, loop, path = setup
    monkeypatch.setattr(limits, "CLASSIC_UNAUTHENTICATED_MAX", 2)
    monkeypatch.setattr(limits, "CLASSIC_ADMISSION_GRACE_S", 0.2)
    idle = [Peer(path, loop), Peer(path, loop)]
    loop.turn()
    # A newcomer is let in (once the oldest has had a moment); the oldest that has said nothing
    # makes room.
    newcomer = Peer(path, loop)
    loop.wait_until(idle[0].closed)
    assert not idle[1].closed()
    newcomer.authenticate()
    assert newcomer.name.startswith(":1.")


def test_clients_are_closed_when_their_bus_goes(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    endpoint, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    # As its owner's release would, inside a request whose effects the file system hands out.
    endpoint.served.outside_requests("the bus goes", endpoint.domain.buses[endpoint.bus_name].shutdown)
    assert peer.closed()
    # The next client gets a bus made anew.
    again = Peer(path, loop)
    again.authenticate()
    assert endpoint.domain.buses[endpoint.bus_name].active


def test_queued_owners_replacement_and_release(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    first, second = Peer(path, loop), Peer(path, loop)
    first.authenticate()
    second.authenticate()
    name = "org.example.Queue"
    # RequestName flags: 1 allow replacement, 2 replace existing, 4 do not queue.
    assert first.call(DRIVER, "RequestName", "su", (name, 1)).body == (1,)
    assert second.call(DRIVER, "RequestName", "su", (name, 4)).body == (3,)
    assert second.call(DRIVER, "RequestName", "su", (name, 0)).body == (2,)
    assert first.call(DRIVER, "ListQueuedOwners", "s", (name,)).body == ([first.name, second.name],)
    assert second.call(DRIVER, "ReleaseName", "s", ("org.example.Other",)).body == (2,)
    assert first.call(DRIVER, "ReleaseName", "s", (name,)).body == (1,)
    assert first.call(DRIVER, "ReleaseName", "s", (name,)).body == (3,)
    assert first.call(DRIVER, "GetNameOwner", "s", (name,)).body == (second.name,)
    acquired = [m.body for m in second.messages() if m.member == "NameAcquired"]
    assert acquired == [(name,)]
    assert first.call(DRIVER, "NameHasOwner", "s", (name,)).body == (True,)
    assert first.call(DRIVER, "ListActivatableNames").body == ([DRIVER],)
    assert first.call(DRIVER, "StartServiceByName", "su", (name, 0)).body == (2,)
    unknown = first.call(DRIVER, "StartServiceByName", "su", ("org.example.Nobody", 0))
    assert unknown.error_name == "org.freedesktop.DBus.Error.ServiceUnknown"


# -- review findings (classic protocol side) ----------------------------------------------------

from kdbusfs.classic.client import ClassicClient, ClientClosed  # noqa: E402  (tests appended below)


def _client_of(endpoint: ClassicEndpoint, peer: Peer) -> ClassicClient:
    conn_id = int(peer.name[3:])
    return next(c for c in endpoint.clients.values() if c.conn is not None and c.conn.id == conn_id)


def _authenticate_with_fds(peer: Peer) -> None:
    peer.raw(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\nNEGOTIATE_UNIX_FD\r\n"
             b"BEGIN\r\n")
    assert b"AGREE_UNIX_FD" in peer.read_all()
    peer.buffer = b""
    peer.name = peer.call(DRIVER, "Hello").body[0]


def test_driver_methods_without_an_interface_and_wrong_signatures(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    assert peer.call(DRIVER, "Ping", interface=None).type == MessageType.METHOD_RETURN
    assert len(peer.call(DRIVER, "GetMachineId", interface=None).body[0]) == 32
    assert "org.freedesktop.DBus.Peer" in peer.call(DRIVER, "Introspect", interface=None).body[0]
    for interface in (None, "org.freedesktop.DBus.Peer"):
        wrong = peer.call(DRIVER, "Ping", "s", ("x",), interface=interface)
        assert wrong.error_name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert peer.call(DRIVER, "GetId", interface=None).type == MessageType.METHOD_RETURN


def test_the_reserved_local_path_closes_its_sender(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    victim, attacker = Peer(path, loop), Peer(path, loop)
    victim.authenticate()
    attacker.authenticate()
    list(victim.messages())
    attacker.send(DBusMessage.signal("/org/freedesktop/DBus/Local", "org.example.X", "Disconnected",
                                     serial=attacker.next_serial()).replace(destination=victim.name))
    assert attacker.closed()
    assert not [m for m in victim.messages() if m.member == "Disconnected"]
    assert victim.call(DRIVER, "GetId").type == MessageType.METHOD_RETURN


def test_what_a_client_sent_before_closing_is_delivered(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    endpoint, loop, path = setup
    listener, sender = Peer(path, loop), Peer(path, loop)
    listener.authenticate()
    sender.authenticate()
    listener.call(DRIVER, "AddMatch", "s", ("type='signal',interface='org.example.Send'",))
    list(sender.messages())
    client = _client_of(endpoint, sender)
    # As dbus-send: the signal, then the close, before the endpoint writes to it again.
    sender.sock.sendall(wire.encode_dbus1(DBusMessage.signal("/x", "org.example.Send", "Hi",
                                                             serial=sender.next_serial())))
    sender.sock.close()
    client.queue(wire.encode_dbus1(DBusMessage.signal("/x", "org.example.Other", "Late", serial=1)), [])
    with pytest.raises(ClientClosed):
        client.flush()
    assert [m.member for m in listener.messages() if m.member == "Hi"] == ["Hi"]
    loop.turn()
    assert client.closed and client.fd not in endpoint.clients


def test_descriptors_held_for_a_client_that_does_not_read_are_bounded(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    import array

    endpoint, loop, path = setup
    sleeper, sender = Peer(path, loop), Peer(path, loop)
    _authenticate_with_fds(sleeper)
    _authenticate_with_fds(sender)
    client = _client_of(endpoint, sleeper)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for _ in range(30):
            message = DBusMessage.method_call(sleeper.name, "/", "org.example.Sink", "Take", "h" * 16,
                                              tuple(range(16)), serial=sender.next_serial(), flags=1)
            data = wire.encode_dbus1(message.replace(unix_fds=16))
            fds = array.array("i", [null] * 16)
            sender.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            loop.turn()
            assert client.outgoing_fds <= limits.CLASSIC_OUTGOING_FDS_MAX + limits.CLASSIC_FDS_PER_MESSAGE
        assert client.outgoing_fds >= limits.CLASSIC_OUTGOING_FDS_MAX  # the bound was reached
        assert sum(len(fds) for _, fds in client.outgoing) == client.outgoing_fds
    finally:
        os.close(null)
    # Reading, the sleeper gets what was held (and the daemon lets go of the descriptors).
    taken = 0
    for _ in range(200):
        try:
            while True:
                data, ancillary, _, _ = sleeper.sock.recvmsg(65536, socket.CMSG_SPACE(4 * 64))
                if not data:
                    break
                for _, _, fd_data in ancillary:
                    received = array.array("i")
                    received.frombytes(fd_data)
                    for fd in received:
                        os.close(fd)
                        taken += 1
        except BlockingIOError:
            pass
        loop.turn()
        if not client.outgoing:
            break
    assert taken >= limits.CLASSIC_OUTGOING_FDS_MAX and client.outgoing_fds == 0


def test_an_activator_is_no_owner(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    from bus_helpers import conn_of, connect_on, policy_items

    from kdbusfs.abi.constants import HELLO_ACTIVATOR
    from kdbusfs.bus.metadata import Creds

    endpoint, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    name = "org.example.Activated"
    bus = endpoint.domain.buses[endpoint.bus_name]
    activator = connect_on(bus.default_endpoint, Creds.for_ids(os.geteuid(), os.getegid(), os.getpid()),
                           flags=HELLO_ACTIVATOR, items=policy_items(name))
    unique = f":1.{conn_of(activator).id}"
    assert peer.call(DRIVER, "NameHasOwner", "s", (name,)).body == (False,)
    assert peer.call(DRIVER, "NameHasOwner", "s", (unique,)).body == (False,)
    missing = peer.call(DRIVER, "GetNameOwner", "s", (name,))
    assert missing.error_name == "org.freedesktop.DBus.Error.NameHasNoOwner"
    assert peer.call(DRIVER, "ListQueuedOwners", "s", (name,)).error_name == (
        "org.freedesktop.DBus.Error.NameHasNoOwner")
    listed = peer.call(DRIVER, "ListNames").body[0]
    assert unique not in listed and name not in listed
    assert name in peer.call(DRIVER, "ListActivatableNames").body[0]
    assert peer.call(DRIVER, "StartServiceByName", "su", (name, 0)).body == (1,)


def test_name_changes_come_before_the_request_name_reply(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    peer.call(DRIVER, "AddMatch", "s", ("type='signal',member='NameOwnerChanged'",))
    list(peer.messages())
    serial = peer.next_serial()
    peer.send(DBusMessage.method_call(DRIVER, "/org/freedesktop/DBus", DRIVER, "RequestName", "su",
                                      ("org.example.Order", 4), serial=serial))
    got = [m.member or f"reply {m.body}" for m in peer.messages()]
    assert got == ["NameOwnerChanged", "NameAcquired", "reply (1,)"]
