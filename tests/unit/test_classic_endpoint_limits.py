"""The classic endpoint against hostile or unlucky peers, in one process with real sockets: who a
peer is, how many may sit unauthenticated and for how long, what a peer that does not read costs,
what a bug or a full descriptor table costs, and what the log says about it."""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_classic_endpoint import DRIVER, Loop, Peer, setup

from kdbusfs import limits
from kdbusfs.bus.domain import Domain
from kdbusfs.classic import peer as peer_module
from kdbusfs.classic.client import ClassicClient
from kdbusfs.classic.endpoint import ClassicEndpoint
from kdbusfs.classic.listening import listen
from kdbusfs.dbus import DBusMessage, MessageType, wire
from kdbusfs.fs import Filesystem

__all__ = ["setup"]

Setup = tuple[ClassicEndpoint, Loop, Path]
# A uid with no account: the kernel needs none to connect with it.
OTHER_UID = 4242
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switches its effective uid")


@pytest.fixture
def open_setup() -> Iterator[Setup]:
    """An endpoint whose socket anyone may connect to (mode 0666 in a world-searchable directory)."""
    parent = Path(tempfile.mkdtemp(prefix="kdbusfs-classic-"))
    parent.chmod(0o755)
    served = Filesystem(Domain())
    loop = Loop()
    path = parent / "bus"
    endpoint = ClassicEndpoint(served, listen(str(path), 0o666), str(path), "test")
    endpoint.attach(loop)
    yield endpoint, loop, path
    endpoint.close()
    served.shutdown()
    shutil.rmtree(parent, ignore_errors=True)


@contextmanager
def effective_uid(uid: int) -> Iterator[None]:
    """This process as `uid` (its saved uid stays root, so that it can come back)."""
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


def connect_as(uid: int, path: Path, loop: Loop) -> Peer:
    with effective_uid(uid):
        return Peer(path, loop)


def authenticate_as(peer: Peer, uid: int) -> None:
    peer.raw(b"\0AUTH EXTERNAL " + str(uid).encode().hex().encode() + b"\r\nBEGIN\r\n")
    assert peer.read_all().startswith(b"OK ")
    peer.buffer = b""
    peer.name = peer.call(DRIVER, "Hello").body[0]


def has_peer_pidfd() -> bool:
    ours, theirs = socket.socketpair()
    try:
        os.close(peer_module.peer_pidfd(ours))
        return True
    except OSError:
        return False
    finally:
        ours.close()
        theirs.close()


def only_client(endpoint: ClassicEndpoint) -> ClassicClient:
    (client,) = endpoint.clients.values()
    return client


# -- who the peer is (finding 1) --------------------------------------------------------------------
@as_root
@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no-pidfd"])
def test_a_peer_is_who_it_was_when_it_connected_not_what_its_pid_is_now(
        open_setup: Setup, monkeypatch: pytest.MonkeyPatch, pidfd: bool) -> None:
    endpoint, loop, path = open_setup
    if pidfd and not has_peer_pidfd():
        pytest.skip("SO_PEERPIDFD needs Linux 6.5")
    if not pidfd:
        def unsupported(sock: socket.socket) -> int:
            raise OSError(errno.ENOPROTOOPT, "before Linux 6.5")
        monkeypatch.setattr(peer_module, "peer_pidfd", unsupported)
    peer = connect_as(OTHER_UID, path, loop)
    # Its process is root again, with every capability, as after exec'ing a setuid program: its
    # /proc status says so, which must not count.
    authenticate_as(peer, OTHER_UID)
    caller = only_client(endpoint).caller
    service = Peer(path, loop)
    service.authenticate()
    assert service.call(DRIVER, "GetConnectionUnixUser", "s", (peer.name,)).body == (OTHER_UID,)
    monitor = peer.call(DRIVER, "BecomeMonitor", "asu", ([], 0), interface="org.freedesktop.DBus.Monitoring")
    assert monitor.error_name == "org.freedesktop.DBus.Error.AccessDenied"
    creds = caller.creds()
    assert (creds.uid, creds.euid, creds.suid, creds.fsuid) == (OTHER_UID,) * 4
    assert creds.cap_effective == 0 and caller.process().caps() is None
    assert set(creds.groups) == set(os.getgroups())
    # Process facts: through the pidfd (the same process, whatever it runs now); without one only
    # if /proc still shows the ids it connected with, which it does not here.
    assert (caller.process().pid_comm() is not None) == pidfd


@as_root
def test_the_facts_of_a_process_that_took_the_peer_s_pid_are_not_taken(setup: Setup) -> None:
    endpoint, loop, path = setup
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    child = os.fork()
    if child == 0:
        try:
            sock.connect(str(path))
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    # Its pid goes to another process (the next pid the kernel hands out is ns_last_pid + 1).
    try:
        with open("/proc/sys/kernel/ns_last_pid", "w") as file:
            file.write(str(child - 1))
    except OSError as exc:
        pytest.skip(f"cannot choose the next pid: {exc.strerror}")
    impostor = subprocess.Popen(["sleep", "60"])
    try:
        if impostor.pid != child:
            pytest.skip("another process took the pid first")
        loop.wait_until(lambda: os.readlink(f"/proc/{child}/exe").endswith("sleep"))
        adopted = Peer.__new__(Peer)
        adopted.sock, adopted.loop, adopted.buffer, adopted.serial = sock, loop, b"", 0
        sock.settimeout(0)
        adopted.authenticate()
        process = only_client(endpoint).caller.process()
        # Its pid is still the one it connected with (SO_PEERCRED's), as others are told.
        service = Peer(path, loop)
        service.authenticate()
        assert service.call(DRIVER, "GetConnectionUnixProcessID", "s", (adopted.name,)).body == (child,)
        assert process.exe() is None and process.pid_comm() is None and process.cmdline() is None
    finally:
        impostor.kill()
        impostor.wait()


# -- clients that do not say Hello (finding 8) --------------------------------------------------------
def test_a_burst_of_one_user_s_clients_all_gets_in(setup: Setup) -> None:
    """A boot's burst: many clients of one uid (root's) connect before any says a word. Each gets
    in, as with dbus-daemon (20 concurrent busctl calls lost 3 to a per-uid bound of 16)."""
    endpoint, loop, path = setup
    burst = [Peer(path, loop) for _ in range(40)]
    loop.turn()
    assert not any(peer.closed() for peer in burst)
    for peer in burst:
        peer.authenticate()
    assert len(endpoint.clients) == 40


@as_root
def test_one_user_s_idle_connections_cost_its_own_oldest_never_another_user(
        open_setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    _, loop, path = open_setup
    monkeypatch.setattr(limits, "CLASSIC_UNAUTHENTICATED_MAX", 3)
    monkeypatch.setattr(limits, "CLASSIC_ADMISSION_GRACE_S", 0.3)
    idle = [Peer(path, loop) for _ in range(3)]
    loop.turn()
    assert not any(peer.closed() for peer in idle)
    # All places are taken by newcomers: another user's client waits in the backlog, closing
    # nobody, until the oldest has had its time; then the user holding the most makes room.
    other = connect_as(OTHER_UID, path, loop)
    loop.turn()
    assert not any(peer.closed() for peer in idle) and not other.closed()
    loop.wait_until(idle[0].closed)
    assert not any(peer.closed() for peer in idle[1:]) and not other.closed()
    authenticate_as(other, OTHER_UID)
    # A place freed by a Hello is taken at once; once all are taken again, the user holding the
    # most makes room, never the newcomer's.
    first = connect_as(OTHER_UID, path, loop)
    loop.turn()
    newcomer = connect_as(OTHER_UID, path, loop)
    loop.wait_until(idle[1].closed)
    assert not idle[2].closed() and not first.closed()
    authenticate_as(newcomer, OTHER_UID)
    authenticate_as(first, OTHER_UID)


def test_a_full_admission_waits_for_a_place_freed_by_hello(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, loop, path = setup
    monkeypatch.setattr(limits, "CLASSIC_UNAUTHENTICATED_MAX", 2)
    monkeypatch.setattr(limits, "CLASSIC_ADMISSION_GRACE_S", 60.0)
    first, second, third = (Peer(path, loop) for _ in range(3))
    loop.turn()
    assert len(endpoint.clients) == 2 and not first.closed() and not second.closed()
    first.authenticate()
    # Its Hello freed a place: the one waiting in the backlog is accepted, nobody closed.
    loop.wait_until(lambda: len(endpoint.clients) == 3)
    third.authenticate()
    second.authenticate()


def test_connections_that_do_not_say_hello_in_time_are_closed_by_a_timer(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, loop, path = setup
    monkeypatch.setattr(limits, "CLASSIC_AUTH_TIMEOUT_S", 0.2)
    hello = Peer(path, loop)
    idle = Peer(path, loop)
    hello.authenticate()
    # Nobody else connects: the endpoint's own timer ends it.
    loop.wait_until(idle.closed)
    assert hello.call(DRIVER, "GetId").type == MessageType.METHOD_RETURN
    assert len(endpoint.clients) == 1


# -- what a bug or a full descriptor table costs (finding 10) -----------------------------------------
def test_a_bug_while_serving_one_client_closes_that_client_only(
        setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _, loop, path = setup
    good, bad = Peer(path, loop), Peer(path, loop)
    good.authenticate()
    bad.authenticate()
    dispatch = ClassicClient.dispatch

    def buggy(self: ClassicClient, message: DBusMessage, fds: list[int]) -> None:
        if message.member == "Boom":
            raise RuntimeError("a bug of ours")
        dispatch(self, message, fds)

    monkeypatch.setattr(ClassicClient, "dispatch", buggy)
    with caplog.at_level(logging.DEBUG, "kdbusfs"):
        bad.send(DBusMessage.method_call(DRIVER, "/", DRIVER, "Boom", serial=bad.next_serial()))
        assert bad.closed()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert good.call(DRIVER, "GetId").type == MessageType.METHOD_RETURN


def test_a_bug_while_admitting_a_client_costs_that_connection_only(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    _, loop, path = setup
    init = ClassicClient.__init__
    calls: list[int] = []

    def buggy(self: ClassicClient, *args: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug of ours")
        init(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ClassicClient, "__init__", buggy)
    first = Peer(path, loop)
    assert first.closed()
    second = Peer(path, loop)
    second.authenticate()


class Exhausted:
    """The listening socket of a daemon out of descriptors: accept(2) fails with EMFILE."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.failing = True
        self.attempts = 0

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        self.attempts += 1
        if self.failing:
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()

    def close(self) -> None:
        self.real.close()


def test_accept_out_of_descriptors_waits_for_a_close_or_a_while_instead_of_spinning(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, loop, path = setup
    monkeypatch.setattr(limits, "CLASSIC_ACCEPT_RETRY_S", 3600.0, raising=False)
    first = Peer(path, loop)
    first.authenticate()
    listener = Exhausted(endpoint._listener)
    monkeypatch.setattr(endpoint, "_listener", listener)
    waiting = Peer(path, loop)
    loop.turn()
    # Still readable, the socket is not watched: watching it would fail again at once, and again.
    assert listener.fileno() not in loop.handlers and listener.attempts == 1
    listener.failing = False
    # A client that closes frees a descriptor: accepting starts again.
    first.sock.close()
    loop.wait_until(lambda: listener.fileno() in loop.handlers)
    waiting.authenticate()
    # Or, with no client closing, after a little while.
    monkeypatch.setattr(limits, "CLASSIC_ACCEPT_RETRY_S", 0.1, raising=False)
    listener.failing = True
    late = Peer(path, loop)
    loop.turn()
    assert listener.fileno() not in loop.handlers
    listener.failing = False
    loop.wait_until(lambda: listener.fileno() in loop.handlers)
    late.authenticate()


# -- what the log says (finding 11) -------------------------------------------------------------------
def test_closures_are_logged_by_whose_doing_they_were(
        setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    endpoint, loop, path = setup
    caplog.set_level(logging.DEBUG, "kdbusfs.classic")
    polite = Peer(path, loop)
    polite.authenticate()
    polite.sock.close()
    loop.wait_until(lambda: not endpoint.clients)
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG and "closed" in r.getMessage()]
    caplog.clear()
    rude = Peer(path, loop)
    rude.raw(b"\0BEGIN\r\n")
    assert rude.closed()
    (info,) = [r for r in caplog.records if r.levelno == logging.INFO]
    assert f"pid {os.getpid()}, uid {os.getuid()}" in info.getMessage()
    assert "authentication failed" in info.getMessage()
    caplog.clear()
    # A limit is a warning, once per burst: a flood of evictions must not flood the log.
    monkeypatch.setattr(limits, "CLASSIC_UNAUTHENTICATED_MAX", 1)
    monkeypatch.setattr(limits, "CLASSIC_ADMISSION_GRACE_S", 0.0)
    idle = [Peer(path, loop) for _ in range(4)]
    loop.turn()
    assert sum(peer.closed() for peer in idle) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "classic connections authenticating (1)" in warnings[0].getMessage()


# -- the server GUID (finding 16) ---------------------------------------------------------------------
def test_the_sasl_guid_is_the_bus_id_get_id_returns(setup: Setup) -> None:
    _, loop, path = setup
    peer = Peer(path, loop)
    peer.raw(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
    ok = peer.read_all()
    assert ok.startswith(b"OK ") and ok.endswith(b"\r\n")
    guid = ok[3:-2].decode()
    peer.buffer = b""
    peer.raw(b"BEGIN\r\n")
    peer.name = peer.call(DRIVER, "Hello").body[0]
    assert peer.call(DRIVER, "GetId").body == (guid,)


# -- the bus name option (finding 24) -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["bé", "user-", "a/b", "x" * 64, "١٢٣", "a b"])
def test_dbus_bus_must_make_a_kdbus_bus_name(name: str) -> None:
    from kdbusfs.cli import UsageError, parse_options

    with pytest.raises(UsageError, match="dbus_bus"):
        parse_options([f"dbus_socket=/x,dbus_bus={name}"], as_root=True)


def test_dbus_bus_takes_what_kdbus_takes() -> None:
    from kdbusfs.cli import parse_options

    for name in ("user", "my-bus.2", "A_b", "-inner"):
        assert parse_options([f"dbus_socket=/x,dbus_bus={name}"], as_root=True).dbus_bus == name


# -- a client that does not read (finding 3) ----------------------------------------------------------
def test_a_client_that_does_not_read_is_not_read_either(setup: Setup,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, loop, path = setup
    # Smaller marks, as the defaults would only take longer.
    monkeypatch.setattr(limits, "CLASSIC_OUTGOING_MAX", 256 * 1024)
    monkeypatch.setattr(limits, "CLASSIC_OUTGOING_RESUME", 128 * 1024, raising=False)
    peer = Peer(path, loop)
    peer.authenticate()
    list(peer.messages())
    client = only_client(endpoint)

    def reading() -> bool:
        return bool(loop.handlers[client.fd][1] & select.EPOLLIN)

    calls = b"".join(wire.encode_dbus1(DBusMessage.method_call(
        DRIVER, "/org/freedesktop/DBus", DRIVER, "GetId", serial=serial)) for serial in range(1, 1001))
    sent = 0
    # It sends calls without pause and reads none of the replies: once what it has not read
    # reaches the limit, its socket is not read, its calls wait there, and the daemon's buffer
    # for it stops growing (before: it grew with every call sent, to 1 GiB and beyond).
    for _ in range(1000):
        try:
            sent += peer.sock.send(calls[sent % len(calls):])
        except BlockingIOError:
            pass
        loop.turn()
        if not reading():
            break
    assert not reading()
    held = client.outgoing_size
    assert held >= limits.CLASSIC_OUTGOING_MAX
    for _ in range(20):
        try:
            peer.sock.send(calls)
        except BlockingIOError:
            pass
        loop.turn()
    assert client.outgoing_size == held
    # Reading its replies, it is read again once below the resume mark.
    replies = 0
    for _ in range(100_000):
        if reading():
            break
        replies += sum(1 for message in peer.messages() if message.type == MessageType.METHOD_RETURN)
    assert reading() and replies > 0


def test_faults_are_logged_within_a_budget_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    from kdbusfs.classic.closures import ClosureLog

    closures = ClosureLog()
    caplog.set_level(logging.INFO, "kdbusfs.classic")
    for i in range(limits.LIMIT_LINES_PER_WINDOW + 5):
        closures.fault(f"client {i}", "protocol violation", now=1000.0)
    assert len(caplog.records) == limits.LIMIT_LINES_PER_WINDOW
    caplog.clear()
    closures.fault("client late", "protocol violation", now=1000.0 + limits.LIMIT_WINDOW_S)
    # The next window says how many were held back, then has a budget of its own.
    held_back, late = (r.getMessage() for r in caplog.records)
    assert held_back.startswith("5 more classic clients were closed") and late.startswith("client late")


# -- GetConnectionCredentials' groups (review: UnixGroupIDs) ----------------------------------------
@contextmanager
def groups_of_process(egid: int, groups: list[int]) -> Iterator[None]:
    saved_egid, saved = os.getegid(), os.getgroups()
    os.setgroups(groups)
    os.setegid(egid)
    try:
        yield
    finally:
        os.setegid(saved_egid)
        os.setgroups(saved)


@as_root
@pytest.mark.parametrize(("egid", "groups", "expected"),
                         [(7, [], [7]), (7, [6, 5], [5, 6, 7]), (5, [5, 6], [5, 6])])
def test_unix_group_ids_are_the_primary_group_and_the_supplementary_ones_sorted(
        open_setup: Setup, egid: int, groups: list[int], expected: list[int]) -> None:
    """The specification's UnixGroupIDs (dbus-daemon's answer): the primary group too, sorted,
    and present even without supplementary groups."""
    _, loop, path = open_setup
    with groups_of_process(egid, groups):
        peer = Peer(path, loop)
    peer.authenticate()
    (credentials,) = peer.call(DRIVER, "GetConnectionCredentials", "s", (peer.name,)).body
    assert credentials["UnixGroupIDs"].value == expected
    assert credentials["UnixUserID"].value == 0
