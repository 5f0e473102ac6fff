"""Classic D-Bus clients (busctl, dbus-send, gdbus, GDBus through python3-gi) on a kdbusfs bus
beside a native C kdbus client, through a real mount's `-o dbus_socket=PATH`."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdbusfs.client import BloomFilter, match
from kdbusfs.dbus import DBusMessage, MessageType, wire

from .classic_clients import BLOOM_N_HASH, BLOOM_SIZE, ClassicPeer, LinePeer, NativePeer
from .harness import Mount, as_user, compile_client, is_mounted, start_daemon, wait_for, world_tempdir

DRIVER = "org.freedesktop.DBus"


@pytest.fixture(scope="module")
def dbuspeer(bin_dir: Path) -> Path:
    return compile_client("dbuspeer", bin_dir)


class ClassicMount:
    def __init__(self, mount: Mount, socket_path: Path, bus: str) -> None:
        self.mount = mount
        self.socket = socket_path
        self.bus = bus
        self.address = f"unix:path={socket_path}"

    def run(self, *cmd: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"DBUS_SYSTEM_BUS_ADDRESS": self.address, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        full = as_user(user, *cmd, env=env) if user else list(cmd)
        done = subprocess.run(full, capture_output=True, text=True, timeout=30, env=env)
        if check:
            assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
        return done

    def make_bus(self) -> None:
        """A classic client's Hello makes the bus; native peers then find it."""
        self.run("busctl", "--system", "list", "--no-pager")
        wait_for(lambda: (self.mount.path / self.bus).exists(), what="the classic endpoint's bus")

    def assert_healthy(self) -> None:
        assert self.mount.alive()
        assert "Traceback" not in self.mount.log(), self.mount.log()


@pytest.fixture
def classic(tmp_path: Path) -> Iterator[ClassicMount]:
    """A root mount whose daemon serves classic clients on a socket (the bus 0-system)."""
    parent = world_tempdir("kdbusfs-classic-")
    mountpoint = parent / "kdbus"
    mountpoint.mkdir(mode=0o755)
    socket_path = parent / "system_bus_socket"
    mount = start_daemon(mountpoint, tmp_path / "daemon.log", extra=("-o", f"dbus_socket={socket_path}"))
    wait_for(socket_path.exists, what="the classic socket")
    served = ClassicMount(mount, socket_path, "0-system")
    yield served
    served.assert_healthy()
    code = mount.stop()
    assert code == 0, f"daemon exited with {code}:\n{mount.log()}"
    assert not socket_path.exists()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def peers() -> Iterator[list[NativePeer | ClassicPeer]]:
    started: list[NativePeer | ClassicPeer] = []
    yield started
    for peer in started:
        peer.close()


def test_list_names_and_own_a_name(classic: ClassicMount, dbuspeer: Path,
                                   peers: list[NativePeer | ClassicPeer]) -> None:
    classic.make_bus()
    native = NativePeer(dbuspeer, classic.mount.path, classic.bus)
    peers.append(native)
    native.own("org.example.Native")
    service = ClassicPeer(classic.address)
    peers.append(service)
    assert service.ask("own org.example.Echo", "owned ") == "1"
    listed = classic.run("busctl", "--system", "list", "--no-pager").stdout
    for name in ("org.example.Native", "org.example.Echo", service.name, native.unique_name, DRIVER):
        assert name in listed, listed
    names = classic.run("dbus-send", "--system", "--print-reply", f"--dest={DRIVER}", "/org/freedesktop/DBus",
                        f"{DRIVER}.ListNames").stdout
    assert '"org.example.Native"' in names and '"org.example.Echo"' in names
    owner = classic.run("gdbus", "call", "--system", "-d", DRIVER, "-o", "/org/freedesktop/DBus",
                        "-m", f"{DRIVER}.GetNameOwner", "org.example.Echo").stdout
    assert service.name in owner
    # The classic client is a kdbus connection with its metadata: busctl reads it back.
    status = classic.run("busctl", "--system", "status", "org.example.Echo", "--no-pager").stdout
    assert "UID=0" in status and "Comm=python3" in status


def test_calls_both_ways_between_classic_and_native(classic: ClassicMount, dbuspeer: Path,
                                                    peers: list[NativePeer | ClassicPeer]) -> None:
    classic.make_bus()
    native = NativePeer(dbuspeer, classic.mount.path, classic.bus)
    peers.append(native)
    native.own("org.example.Native")
    # classic -> native: busctl waits for the native peer's GVariant reply.
    busctl = subprocess.Popen(["busctl", "--system", "call", "org.example.Native", "/org/example/Echo",
                               "org.example.Echo", "Echo", "s", "from-busctl"],
                              env={"DBUS_SYSTEM_BUS_ADDRESS": classic.address}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    call = native.receive()
    assert call.is_call and call.message.member == "Echo" and call.message.body == ("from-busctl",)
    assert call.message.sender == f":1.{call.src_id}"
    native.reply(call, "s", ("native:from-busctl",))
    out, err = busctl.communicate(timeout=30)
    assert busctl.returncode == 0, err
    assert out.strip() == 's "native:from-busctl"'
    # native -> classic: a GDBus service answers the C client.
    service = ClassicPeer(classic.address)
    peers.append(service)
    service.ask("own org.example.Echo", "owned ")
    service.ask("serve", "serving")
    serial = native.call("org.example.Echo", "Echo", "s", ("from-native",))
    reply = native.receive()
    assert reply.cookie_reply == serial and reply.message.type == MessageType.METHOD_RETURN
    assert reply.message.body == ("echo:from-native",)
    # An error reply of the classic side reaches the native caller as a D-Bus error.
    serial = native.call("org.example.Echo", "NoSuchMethod", "", ())
    error = native.receive()
    assert error.cookie_reply == serial and error.message.type == MessageType.ERROR
    assert error.message.error_name == "org.freedesktop.DBus.Error.UnknownMethod"


def test_signals_by_match_rules_both_ways(classic: ClassicMount, dbuspeer: Path,
                                          peers: list[NativePeer | ClassicPeer]) -> None:
    classic.make_bus()
    native = NativePeer(dbuspeer, classic.mount.path, classic.bus)
    peers.append(native)
    listener = ClassicPeer(classic.address)
    peers.append(listener)
    # native -> classic: the rule's arg0 picks one of two broadcasts whose filters sd-bus computed.
    listener.ask("match type='signal',interface='org.example.Native',arg0='wanted'", "matched")
    native.emit("Tick", "unwanted")
    native.emit("Tick", "wanted")
    assert listener.expect("signal ") == f"{native.unique_name} Tick wanted"
    # classic -> native: a native match with an sd-bus mask selects the classic client's signal.
    mask = BloomFilter.for_match(BLOOM_SIZE, BLOOM_N_HASH, interface="org.example.Echo", member="Tock")
    native.add_match(match.bloom_mask(mask).item)
    emitter = ClassicPeer(classic.address)
    peers.append(emitter)
    emitter.ask("emit Other skipped", "emitted")
    emitter.ask("emit Tock hello", "emitted")
    signal = native.receive()
    assert signal.message.type == MessageType.SIGNAL and signal.message.member == "Tock"
    assert signal.message.body == ("hello",) and signal.message.sender == emitter.name
    # dbus-send's signal reaches the classic listener through the same rule machinery.
    listener.ask("match type='signal',interface='org.example.Send'", "matched")
    classic.run("dbus-send", "--system", "--type=signal", "/x", "org.example.Send.Hi", "string:via-dbus-send")
    assert listener.expect("signal ").endswith("Hi via-dbus-send")


def test_fd_passing_both_ways(classic: ClassicMount, dbuspeer: Path,
                              peers: list[NativePeer | ClassicPeer]) -> None:
    classic.make_bus()
    # The native peer runs under `kdbusfs run`, which lets the daemon install descriptors in it.
    native = NativePeer(dbuspeer, classic.mount.path, classic.bus, launched=True,
                        python=sys.executable)
    peers.append(native)
    native.own("org.example.Native")
    service = ClassicPeer(classic.address)
    peers.append(service)
    service.ask("own org.example.Echo", "owned ")
    service.ask("serve", "serving")
    # native -> classic: a pipe passed in an FDS item is read by the GDBus service.
    serial = native.call("org.example.Echo", "ReadFd", "h", (0,), fd_text="from-native")
    reply = native.receive()
    assert reply.cookie_reply == serial and reply.message.body == ("from-native",)
    # classic -> native: GDBus passes a pipe; the native peer reads it from its installed fd.
    caller = ClassicPeer(classic.address)
    peers.append(caller)
    caller.write("callfd org.example.Native from-classic")
    call = native.receive()
    assert call.message.member == "ReadFd" and call.message.unix_fds == 1
    assert call.fd_text == "from-classic"
    native.reply(call, "s", ("read",))
    assert caller.expect("reply ") == "read"


def test_name_owner_changed_when_a_peer_exits(classic: ClassicMount, dbuspeer: Path,
                                              peers: list[NativePeer | ClassicPeer]) -> None:
    classic.make_bus()
    watcher = ClassicPeer(classic.address)
    peers.append(watcher)
    watcher.ask("match type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
                "arg0='org.example.Native'", "matched")
    native = NativePeer(dbuspeer, classic.mount.path, classic.bus)
    native.own("org.example.Native")
    assert watcher.expect("signal ") == f"{DRIVER} NameOwnerChanged org.example.Native"
    native.process.kill()
    native.process.wait()
    native.close()
    assert watcher.expect("signal ") == f"{DRIVER} NameOwnerChanged org.example.Native"
    # And the other way: a native match sees the classic client's name go when it exits.
    observer = NativePeer(dbuspeer, classic.mount.path, classic.bus)
    peers.append(observer)
    observer.add_match(match.name_removed("org.example.Echo").item)
    leaving = ClassicPeer(classic.address)
    leaving.ask("own org.example.Echo", "owned ")
    leaving.process.kill()
    leaving.close()
    note = observer.notification()
    assert note[0] == str(0x8001) and note[3] == "org.example.Echo"


def test_hundreds_of_name_owner_changed_rules_and_the_limit(classic: ClassicMount,
                                                           peers: list[NativePeer | ClassicPeer]) -> None:
    """GDBus watching many names: each rule one AddMatch, far more than kdbus's 256 entries a
    connection, until dbus-daemon's 512 rules, past which AddMatch is LimitsExceeded."""
    classic.make_bus()
    watcher = ClassicPeer(classic.address)
    peers.append(watcher)
    rule = "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.example.W{}'"
    assert watcher.ask(f"matchmany 300 {rule}", "matched ") == "300"
    owner = ClassicPeer(classic.address)
    peers.append(owner)
    owner.ask("own org.example.Unwatched", "owned ")
    owner.ask("own org.example.W299", "owned ")
    assert watcher.expect("signal ") == f"{DRIVER} NameOwnerChanged org.example.W299"
    assert watcher.ask(f"matchmany 212 {rule.replace('W{}', 'X{}')}", "matched ") == "212"
    refused = watcher.ask("match type='signal',arg0='one.too.many'", "error ")
    assert refused == "org.freedesktop.DBus.Error.LimitsExceeded"
    assert "match rules per classic client (512)" in classic.mount.log()


def test_driver_properties_introspection_and_unknown_interfaces_with_real_tools(
        classic: ClassicMount) -> None:
    classic.make_bus()
    features = classic.run("busctl", "--system", "get-property", DRIVER, "/org/freedesktop/DBus", DRIVER,
                           "Features").stdout
    assert features.strip() == 'as 1 "HeaderFiltering"'
    introspected = classic.run("busctl", "--system", "introspect", DRIVER, "/org/freedesktop/DBus",
                               "--no-pager").stdout
    for member in (".Features", ".GetAll", ".BecomeMonitor", ".GetConnectionSELinuxSecurityContext"):
        assert member in introspected, introspected
    unknown = classic.run("dbus-send", "--system", "--print-reply", f"--dest={DRIVER}",
                          "/org/freedesktop/DBus", "org.example.Nope.GetId", check=False)
    assert unknown.returncode != 0 and "org.freedesktop.DBus.Error.UnknownInterface" in unknown.stderr
    read_only = classic.run("busctl", "--system", "set-property", DRIVER, "/org/freedesktop/DBus", DRIVER,
                            "Features", "as", "0", check=False)
    assert read_only.returncode != 0 and "cannot be set" in read_only.stderr, read_only.stderr


def test_policy_denial_is_a_dbus_error(classic: ClassicMount, dbuspeer: Path, test_user: str,
                                       peers: list[NativePeer | ClassicPeer]) -> None:
    classic.make_bus()
    native = NativePeer(dbuspeer, classic.mount.path, classic.bus)
    peers.append(native)
    native.own("org.example.Native")
    # Another user may connect (the socket and the bus are open to all), but kdbus's default
    # policy lets it talk to root's connection only through a TALK policy, which this bus lacks.
    done = classic.run("busctl", "--system", "call", "org.example.Native", "/x", "org.example.Echo", "Echo",
                       "s", "x", user=test_user, check=False)
    assert done.returncode != 0
    assert "Access denied" in done.stderr or "AccessDenied" in done.stderr, done.stderr
    uid = pwd.getpwnam(test_user).pw_uid
    whoami = classic.run("busctl", "--system", "call", DRIVER, "/org/freedesktop/DBus", DRIVER,
                         "GetConnectionUnixUser", "s", DRIVER, user=test_user).stdout
    assert whoami.strip() == "u 0"
    listed = classic.run("busctl", "--system", "list", "--no-pager", user=test_user).stdout
    assert str(uid) in listed or test_user in listed


# Run as a user by the system python3: connects, then becomes /usr/bin/passwd (setuid root) while a
# child keeps the socket and, once its parent's status says euid 0, authenticates, says Hello and
# asks for a name only root may own; it prints its name and what became of the request. passwd
# waits for a password on a pipe the child holds, until the test closes the child's stdin.
SETUID_PEER = """
import os, re, socket, sys, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
parent, uid = os.getpid(), os.getuid()
password, holder = os.pipe()
if os.fork() == 0:
    for _ in range(500):
        if "\\nUid:\\t%d\\t0\\t" % uid in open("/proc/%d/status" % parent).read():
            break
        time.sleep(0.02)
    else:
        os._exit(3)
    sock.sendall(b"\\0AUTH EXTERNAL " + str(uid).encode().hex().encode() + b"\\r\\nBEGIN\\r\\n"
                 + bytes.fromhex(sys.argv[2]))
    data = b""
    while b"AccessDenied" not in data and data.count(b"NameAcquired") < 2:
        data += sock.recv(4096)
    name = re.search(rb":1\\.[0-9]+", data).group().decode()
    print(name, "denied" if b"AccessDenied" in data else "owned", flush=True)
    sys.stdin.read()
    os._exit(0)
os.close(holder)
os.dup2(password, 0)
os.execv("/usr/bin/passwd", ["passwd"])
"""


def test_a_peer_that_execs_a_setuid_program_keeps_the_identity_it_connected_with(
        classic: ClassicMount, test_user: str, peers: list[NativePeer | ClassicPeer]) -> None:
    classic.make_bus()
    uid = pwd.getpwnam(test_user).pw_uid
    calls = [DBusMessage.method_call(DRIVER, "/org/freedesktop/DBus", DRIVER, "Hello", serial=1),
             DBusMessage.method_call(DRIVER, "/org/freedesktop/DBus", DRIVER, "RequestName", "su",
                                     ("org.freedesktop.systemd1", 4), serial=2)]
    said = b"".join(wire.encode_dbus1(call) for call in calls).hex()
    peer = LinePeer(as_user(test_user, "/usr/bin/python3", "-c", SETUID_PEER, str(classic.socket), said))
    try:
        # Its pid is now passwd's (euid 0, every capability); the connection is still the user's.
        name, verdict = peer.line().split()
        assert verdict == "denied"
        whose = classic.run("busctl", "--system", "call", DRIVER, "/org/freedesktop/DBus", DRIVER,
                            "GetConnectionUnixUser", "s", name).stdout
        assert whose.strip() == f"u {uid}"
    finally:
        assert peer.process.stdin is not None
        peer.process.stdin.close()
        peer.process.wait(15)


def _raw_client(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(15)
    sock.connect(str(path))
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_malformed_message_or_broken_sasl_closes_only_that_client(
        classic: ClassicMount, dbuspeer: Path, peers: list[NativePeer | ClassicPeer]) -> None:
    classic.make_bus()
    native = NativePeer(dbuspeer, classic.mount.path, classic.bus)
    peers.append(native)
    native.own("org.example.Native")
    survivor = ClassicPeer(classic.address)
    peers.append(survivor)
    survivor.ask("own org.example.Echo", "owned ")
    survivor.ask("serve", "serving")
    # Broken SASL: BEGIN before authenticating, as dbus-daemon closes without a word.
    broken = _raw_client(classic.socket)
    broken.sendall(b"\0BEGIN\r\n")
    assert _read_until_closed(broken) == b""
    # Six rejections: each answered, then the end.
    rejected = _raw_client(classic.socket)
    rejected.sendall(b"\0" + b"AUTH FOO\r\n" * 6)
    assert _read_until_closed(rejected) == b"REJECTED EXTERNAL\r\n" * 6
    # A malformed message after a proper Hello ends that client, which loses its connection.
    rude = _raw_client(classic.socket)
    hello = DBusMessage.method_call(DRIVER, "/org/freedesktop/DBus", DRIVER, "Hello", serial=1)
    rude.sendall(b"\0AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n" + wire.encode_dbus1(hello))
    rude.sendall(b"l\x01\x00\x01" + b"\xff" * 12)
    assert b":1." in _read_until_closed(rude)
    # Everyone else carries on.
    serial = native.call("org.example.Echo", "Echo", "s", ("still-there",))
    reply = native.receive()
    assert reply.cookie_reply == serial and reply.message.body == ("echo:still-there",)
    assert "org.example.Echo" in classic.run("busctl", "--system", "list", "--no-pager").stdout


def test_a_user_mount_serves_its_user_s_classic_clients(test_user: str, user_runtime: Path, dbuspeer: Path,
                                                        peers: list[NativePeer | ClassicPeer],
                                                        tmp_path: Path) -> None:
    from .harness import user_python

    home = Path(pwd.getpwnam(test_user).pw_dir)
    mountpoint = home / "kdbus"
    if is_mounted(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    subprocess.run(as_user(test_user, "mkdir", "-p", str(mountpoint)), check=True)
    socket_path = home / "classic_bus_socket"
    log_dir = world_tempdir("kdbusfs-userlog-")
    mount = start_daemon(mountpoint, log_dir / "daemon.log", extra=("-o", f"dbus_socket={socket_path}"),
                         env={"PYTHONPATH": str(user_runtime)}, python=user_python(), user=test_user)
    try:
        wait_for(socket_path.exists, what="the user's classic socket")
        uid = pwd.getpwnam(test_user).pw_uid
        served = ClassicMount(mount, socket_path, f"{uid}-user")
        served.run("busctl", "--system", "list", "--no-pager", user=test_user)
        native = NativePeer(dbuspeer, mountpoint, served.bus, user=test_user)
        peers.append(native)
        native.own("org.example.Native")
        busctl = subprocess.Popen(as_user(test_user, "busctl", "--system", "call", "org.example.Native",
                                          "/org/example/Echo", "org.example.Echo", "Echo", "s", "mine",
                                          env={"DBUS_SYSTEM_BUS_ADDRESS": served.address}),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        call = native.receive()
        native.reply(call, "s", ("native:mine",))
        out, err = busctl.communicate(timeout=30)
        assert busctl.returncode == 0, err
        assert out.strip() == 's "native:mine"'
        # The socket is the user's alone (mode 0600) on a mount not open to others.
        assert os.stat(socket_path).st_mode & 0o777 == 0o600
        served.assert_healthy()
    finally:
        for peer in peers:
            peer.close()
        peers.clear()
        code = mount.stop()
        log = mount.log()
        shutil.rmtree(log_dir, ignore_errors=True)
        assert code == 0, f"daemon exited with {code}:\n{log}"
        assert not socket_path.exists()


def test_dbus_monitor_sees_calls_between_others(classic: ClassicMount, dbuspeer: Path,
                                                peers: list[NativePeer | ClassicPeer]) -> None:
    classic.make_bus()
    native = NativePeer(dbuspeer, classic.mount.path, classic.bus)
    peers.append(native)
    native.own("org.example.Native")
    # dbus-monitor asks for BecomeMonitor: its connection becomes a kdbus monitor (root owns the bus).
    monitor = LinePeer(["dbus-monitor", "--system"], env={"DBUS_SYSTEM_BUS_ADDRESS": classic.address})
    try:
        monitor.expect("signal ")  # NameAcquired, then NameLost of its unique name: it is monitoring
        monitor.expect("   string")
        assert "NameLost" in monitor.expect("signal ")
        busctl = subprocess.Popen(["busctl", "--system", "call", "org.example.Native", "/org/example/Echo",
                                   "org.example.Echo", "Echo", "s", "watched"],
                                  env={"DBUS_SYSTEM_BUS_ADDRESS": classic.address}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        call = native.receive()
        native.reply(call, "s", ("seen",))
        assert busctl.communicate(timeout=30)[0].strip() == 's "seen"'
        seen = monitor.expect("method call ")
        assert "destination=org.example.Native" in seen and "member=Echo" in seen
        assert monitor.expect("   string") == '"watched"'
        assert f"sender={native.unique_name}" in monitor.expect("method return ")
    finally:
        monitor.process.terminate()
        monitor.close()


def test_a_socket_another_bus_listens_on_stops_the_mount(tmp_path: Path) -> None:
    mountpoint = tmp_path / "kdbus"
    mountpoint.mkdir()
    path = tmp_path / "bus"
    taken = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    taken.bind(str(path))
    taken.listen(1)
    try:
        proc = subprocess.run([sys.executable, "-m", "kdbusfs", "-f", "-o", f"dbus_socket={path}",
                               str(mountpoint)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1 and "another bus listens there" in proc.stderr, proc.stderr
        assert not is_mounted(mountpoint) and path.exists()
    finally:
        taken.close()


def test_classic_drop_ins_verify(tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "kdbusfs", "install-helpers", "--root", str(root)], check=True,
                   capture_output=True)
    docs = root / "usr/local/share/doc/kdbusfs"
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    cases = (("etc/systemd/system/sys-fs-kdbus.mount", "classic-system-bus.conf", []),
             ("etc/systemd/user/kdbusfs.service", "classic-session-bus.conf", ["--user"]))
    for unit, drop_in, extra in cases:
        units = tmp_path / ("user" if extra else "system")
        name = Path(unit).name
        (units / f"{name}.d").mkdir(parents=True)
        shutil.copy(root / unit, units / name)
        shutil.copy(docs / drop_in, units / f"{name}.d" / drop_in)
        proc = subprocess.run(["systemd-analyze", *extra, "verify", "--man=no", str(units / name)],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0 and drop_in not in proc.stderr and name not in proc.stderr, proc.stderr
    assert "dbus_socket=/run/dbus/system_bus_socket" in (docs / "classic-system-bus.conf").read_text()


def test_a_signal_sent_right_before_exit_is_delivered(classic: ClassicMount,
                                                       peers: list[NativePeer | ClassicPeer]) -> None:
    # dbus-send sends its signal and closes at once, without reading what the bus wrote to it:
    # the endpoint's write fails, and what it sent must still be taken (dbus-daemon's behaviour).
    classic.make_bus()
    listener = ClassicPeer(classic.address)
    peers.append(listener)
    listener.ask("match type='signal',interface='org.example.Send'", "matched")
    for i in range(10):
        classic.run("dbus-send", "--system", "--type=signal", "/x", "org.example.Send.Hi", f"string:n{i}")
        assert listener.expect("signal ").endswith(f"Hi n{i}")


# -- classic-limits (issue 14): large bodies, activation -------------------------------------------
# One block: imports are local so that this block and others' appended beside it stay apart.

@pytest.fixture(scope="module")
def bigpeer(bin_dir: Path) -> Path:
    return compile_client("bigpeer", bin_dir)


def test_a_16_mib_body_goes_from_a_classic_client_to_a_native_one_and_back(
        classic: ClassicMount, bigpeer: Path, peers: list[LinePeer], tmp_path: Path) -> None:
    import random

    from kdbusfs.classic import fastwire

    from .classic_clients import SYSTEM_PYTHON

    classic.make_bus()
    received = tmp_path / "received"
    # Under `kdbusfs run`: the memfds of what it receives are installed in it.
    native = LinePeer([sys.executable, "-m", "kdbusfs", "run", "--mount", str(classic.mount.path), "--",
                       str(bigpeer), str(classic.mount.path), classic.bus, "org.example.Big", str(received)])
    peers.append(native)
    native_id = int(native.expect("id "))
    size, seed = 16 << 20, 14
    env = {"DBUS_SYSTEM_BUS_ADDRESS": classic.address, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    caller = LinePeer([SYSTEM_PYTHON, str(Path(__file__).with_name("classic_big.py")), "org.example.Big",
                       str(size), str(seed)], env=env)
    peers.append(caller)
    native.write("recv 60000")
    _, src, cookie, _, parts = native.line(timeout=60).split()
    # sd-bus's layout: the header's vector, the body in a memfd, the footer's vector.
    assert parts.split(",")[1] == f"memfd:{size}", parts
    call = wire.decode(received.read_bytes())
    data = random.Random(seed).randbytes(size)
    assert call.member == "Echo" and call.signature == "ay" and call.body == (data,)
    reply = DBusMessage.method_return(call, "ay", (data,), serial=7).replace(sender=f":1.{native_id}")
    head, body, tail = fastwire.gvariant_parts(reply)
    assert body == data  # so the memfd it received is the reply's body as it is
    assert native.ask(f"reply {src} {cookie} 7 {head.hex()} {tail.hex()}") == "ok"
    assert caller.line(timeout=60) == f"ok {size}"


def test_start_service_by_name_with_a_real_activator_and_what_waited_reaches_the_service(
        classic: ClassicMount, dbuspeer: Path, peers: list[NativePeer | ClassicPeer]) -> None:
    from kdbusfs.client import Connection, Kind

    classic.make_bus()
    name = "org.example.Activated"
    env = {"DBUS_SYSTEM_BUS_ADDRESS": classic.address}
    endpoint = classic.mount.path / classic.bus / "bus"
    with Connection.hello(endpoint, kind=Kind.ACTIVATOR, name=name) as activator:
        # A classic call to the name waits at its activator (the service is not running yet).
        busctl = subprocess.Popen(["busctl", "--system", "call", name, "/org/example/Echo",
                                   "org.example.Echo", "Echo", "s", "early"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        waiting = activator.recv(timeout=15, peek=True)
        assert waiting.dst_name == name and wire.decode(waiting.payload).member == "Echo"
        # An activatable name that nobody runs: DBUS_START_REPLY_SUCCESS (1), as from dbus-daemon.
        started = classic.run("dbus-send", "--system", "--print-reply", f"--dest={DRIVER}",
                              "/org/freedesktop/DBus", f"{DRIVER}.StartServiceByName", f"string:{name}",
                              "uint32:0").stdout
        assert "uint32 1" in started, started
        # The service starts and takes the name over from its activator: what waited comes to it.
        service = NativePeer(dbuspeer, classic.mount.path, classic.bus)
        peers.append(service)
        service.own(name)
        call = service.receive()
        assert call.message.member == "Echo" and call.message.body == ("early",)
        service.reply(call, "s", ("late but here",))
        out, err = busctl.communicate(timeout=30)
        assert busctl.returncode == 0 and out.strip() == 's "late but here"', err
        # So does the Ping StartServiceByName queued to start it (sent expecting no reply).
        ping = service.receive()
        assert (ping.message.interface, ping.message.member) == ("org.freedesktop.DBus.Peer", "Ping")
        # Now running: DBUS_START_REPLY_ALREADY_RUNNING (2).
        again = classic.run("gdbus", "call", "--system", "-d", DRIVER, "-o", "/org/freedesktop/DBus", "-m",
                            f"{DRIVER}.StartServiceByName", name, "0").stdout
        assert again.strip() == "(uint32 2,)", again


def _pending_connections(path: Path) -> int:
    """Connections the kernel holds on the listening socket `path` until the daemon accepts them."""
    listed = subprocess.run(["ss", "-xlH", "src", str(path)], capture_output=True, text=True,
                            check=True).stdout
    return int(listed.split()[2])


def test_a_burst_of_clients_connecting_at_once_all_get_in(classic: ClassicMount) -> None:
    """A boot's burst: many clients of one uid connect before any says a word. dbus-daemon takes
    them all; a per-uid bound of 16 clients that had not said Hello closed the oldest as the 17th
    came (20 concurrent dbus-send lost 3, 200 lost 181, to 'Did not receive a reply')."""
    classic.make_bus()
    burst = [_raw_client(classic.socket) for _ in range(40)]
    wait_for(lambda: _pending_connections(classic.socket) == 0, what="the daemon accepting the burst")
    hello = DBusMessage.method_call(DRIVER, "/org/freedesktop/DBus", DRIVER, "Hello", serial=1)
    for sock in burst:
        sock.sendall(b"\0AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n" + wire.encode_dbus1(hello))
    closed = []
    for index, sock in enumerate(burst):
        data = b""
        while b":1." not in data:
            chunk = sock.recv(65536)
            if not chunk:
                closed.append(index)
                break
            data += chunk
        sock.close()
    assert not closed, f"closed before their Hello was answered: {closed}"
