"""kdbusctl as a user runs it, against real mounts: root's (run as root) and the test user's (run as
that user), with peers made by kdbusfs.client (ctl_peer.py) and C clients (echo, sink).

Nothing waits by sleeping: monitor and capture announce on stderr when they listen, peers print
when they are ready, and each wait reads lines until the one expected (with a deadline)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdbusfs.client import make_bus
from kdbusfs.dbus import DBusMessage, MessageType, wire

from .ctl_harness import (
    C_NAME,
    NAME,
    PEER,
    Running,
    Site,
    json_document,
    pcap_packets,
    start_peers,
)
from .harness import REPO, Mount, compile_client, world_tempdir


@pytest.fixture(scope="module")
def tools() -> Iterator[Path]:
    path = world_tempdir("kdbusfs-ctl-")
    for name in ("echo", "sink"):
        compile_client(name, path, ("-pthread",))
    shutil.copy(PEER, path / PEER.name)
    (path / PEER.name).chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["root", "user"])
def site(request: pytest.FixtureRequest, tools: Path) -> Iterator[Site]:
    if request.param == "root":
        here = Site(request.getfixturevalue("root_mount"), None, None, tools)
    else:
        here = Site(request.getfixturevalue("user_mount"), request.getfixturevalue("test_user"),
                    request.getfixturevalue("user_runtime"), tools)
    yield here
    for running in reversed(here.running):
        running.quit()
    assert here.mount.alive() and "Traceback" not in here.mount.log(), here.mount.log()


def test_list_shows_ids_names_and_metadata(site: Site) -> None:
    peers = start_peers(site)
    rows = json.loads(site.ctl("--bus", str(peers.bus), "list", "--json").stdout)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    user = site.user or "root"
    for connection, process, description in ((peers.server, peers.peer, "ctl-server"),
                                             (peers.echo_id, peers.echo, None)):
        row = by_name[f":1.{connection}"][0]
        assert row["pid"] == process.process.pid, row
        assert row["process"] == Path(f"/proc/{row['pid']}/comm").read_text().strip()
        assert (row["state"], row["user"], row["uid"], row["description"]) == ("ordinary", user, site.uid,
                                                                                description)
    assert by_name[f":1.{peers.echo_id}"][0]["process"] == "echo"
    assert by_name[f":1.{peers.activator}"][0]["state"] == "activator"
    states = {name: [(r["state"], r["id"]) for r in rows] for name, rows in by_name.items()}
    assert states[NAME] == [("primary", peers.server), ("queued", peers.queued)]
    assert states["org.example.Lazy"] == [("activatable", peers.activator)]
    assert states[C_NAME] == [("primary", peers.echo_id)]

    text = site.ctl("--bus", str(peers.bus), "list").stdout.splitlines()
    assert text[0].split() == ["NAME", "PID", "PROCESS", "USER", "CONNECTION", "STATE", "DESCRIPTION"]
    assert [line.split()[4:6] for line in text if line.startswith(NAME + " ")] == [
        [f":1.{peers.server}", "primary"], [f":1.{peers.queued}", "queued"]]
    unique = site.ctl("--bus", str(peers.bus), "list", "--unique", "--no-legend").stdout.split()
    connections = {peers.server, peers.queued, peers.activator, peers.echo_id}
    assert {f":1.{connection}" for connection in connections} <= set(unique)
    assert NAME not in unique
    acquired = json.loads(site.ctl("--bus", str(peers.bus), "list", "--acquired", "--json").stdout)
    assert sorted((r["name"], r["state"]) for r in acquired) == [
        (C_NAME, "primary"), (NAME, "primary"), (NAME, "queued")]
    # Options after the verb, and the verb's filter on its own.
    activatable = json.loads(site.ctl("list", "--activatable", "--json", "--bus", str(peers.bus)).stdout)
    assert [(r["name"], r["id"]) for r in activatable] == [("org.example.Lazy", peers.activator)]


def test_status_shows_a_connections_metadata_and_the_bus_creator(site: Site) -> None:
    peers = start_peers(site)
    bus = str(peers.bus)
    status = json.loads(site.ctl("--bus", bus, "status", NAME, "--json").stdout)
    meta = status["metadata"]
    assert (status["id"], status["unique_name"], status["kind"]) == (peers.server, f":1.{peers.server}",
                                                                      "ordinary")
    assert meta["pid"] == peers.peer.process.pid and meta["tid"] >= meta["pid"]
    assert (meta["uid"], meta["euid"], meta["description"]) == (site.uid, site.uid, "ctl-server")
    assert meta["comm"] == Path(f"/proc/{meta['pid']}/comm").read_text().strip()
    assert meta["well_known_names"] == [NAME] and "effective" in meta["capabilities"]
    assert meta["exe"] == os.readlink(f"/proc/{meta['pid']}/exe")

    text = site.ctl("--bus", bus, "status", f":1.{peers.echo_id}").stdout.splitlines()
    pairs = dict(line.split("=", 1) for line in text)
    assert pairs["UniqueName"] == f":1.{peers.echo_id}" and pairs["Comm"] == "echo"
    assert pairs["UID"] == str(site.uid) and pairs["PID"] == str(peers.echo.process.pid)
    assert pairs["WellKnownNames"] == f"{C_NAME}(primary)"
    assert json.loads(site.ctl("--bus", bus, "status", str(peers.activator), "--json").stdout)["kind"] == \
        "activator"

    creator = json.loads(site.ctl("--bus", bus, "status", "--json").stdout)
    assert creator["bus_name"] == peers.bus.parent.name == f"{site.uid}-ctl"
    assert creator["endpoint"] == bus and creator["bloom"] == {"size": 64, "n_hash": 8}
    assert "BusName=" + peers.bus.parent.name in site.ctl("--bus", bus, "status").stdout.splitlines()


def _monitor(site: Site, bus: Path, *args: str) -> Running:
    monitor = site.start_ctl("--bus", str(bus), "monitor", *args)
    monitor.err.expect(lambda line: line.startswith("Monitoring "), "the monitor's ready line")
    return monitor


def test_monitor_prints_a_call_its_reply_and_a_broadcast(site: Site) -> None:
    peers = start_peers(site)
    text = _monitor(site, peers.bus)
    as_json = _monitor(site, peers.bus, "--json")
    # Only what matches: the Clock signal, then it stops by itself.
    matched = _monitor(site, peers.bus, "--num-matches", "1", "type='signal',interface='org.example.Clock'")

    reply = site.ctl("--bus", str(peers.bus), "call", NAME, "/org/example", "org.example.Echo", "Ping",
                     "sa{sv}", "hello", "1", "n", "u", "7").stdout
    assert reply == 's "pong sa{sv} \\"hello\\" 1 \\"n\\" u 7"\n'
    site.ctl("--bus", str(peers.bus), "emit", "/org/example", "org.example.Clock", "Tick", "s", "noon")
    peers.peer.stdout().expect(lambda line: line == 'signal Tick {"type": "s", "data": ["noon"]}',
                               "the signal at the peer's bloom match")

    out = text.stdout()
    call = out.expect(lambda line: "Type=method_call" in line, "the call")
    assert "Version=2" in call and "Endian=l" in call
    out.expect(lambda line: "Member=Ping" in line and f"Destination={NAME}" in line, "its addresses")
    out.expect(lambda line: line.strip() == 'STRING "hello";', "its first argument")
    out.expect(lambda line: line.strip() == "UINT32 7;", "its variant")
    returned = out.expect(lambda line: "Type=method_return" in line, "the reply")
    assert "ReplyCookie=1" in returned
    out.expect(lambda line: f"Sender=:1.{peers.server}" in line, "the reply's sender")
    out.expect(lambda line: "Member=Tick" in line and "Interface=org.example.Clock" in line, "the signal")
    out.expect(lambda line: line.strip() == 'STRING "noon";', "the signal's argument")
    assert text.wait(signal.SIGTERM) == 0, text.err.rest()

    records: list[dict[str, Any]] = []
    while not any(r.get("member") == "Tick" for r in records):
        records.append(json.loads(as_json.stdout().expect(lambda line: True, "a JSON message")))
    assert as_json.wait(signal.SIGINT) == 0
    call_record = next(r for r in records if r["type"] == "method_call")
    assert call_record["decoded"] and call_record["version"] == 2
    assert call_record["body"] == {"type": "sa{sv}", "data": ["hello", {"n": {"type": "u", "data": 7}}]}
    assert call_record["kdbus"]["dst_name"] == NAME and call_record["metadata"]["uid"] == site.uid
    reply_record = next(r for r in records if r["type"] == "method_return")
    assert reply_record["reply_serial"] == call_record["serial"]
    assert reply_record["kdbus"]["src_id"] == peers.server
    signal_record = next(r for r in records if r["member"] == "Tick")
    assert signal_record["kdbus"]["dst_id"] == 2**64 - 1 and signal_record["body"]["data"] == ["noon"]
    assert any(r["type"] == "notification" and r["member"] == "NameOwnerChanged" for r in records)

    assert matched.wait() == 0
    assert [line for line in matched.stdout().rest() if line.startswith("‣")] == [
        next(line for line in text.stdout().lines if "Type=signal" in line and "Notification" not in line)]


def test_capture_is_read_back_by_tshark(site: Site, tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("the capture test needs tshark: DEBIAN_FRONTEND=noninteractive apt-get install -y tshark")
    peers = start_peers(site)
    output = world_tempdir("kdbusfs-capture-") / "bus.pcapng"
    output.parent.chmod(0o777)
    # A raw call and its raw reply (C client to the Python peer); a D-Bus call (with kdbusctl's
    # ID_ADD and ID_REMOVE) and its reply; a signal (with its emitter's ID_ADD and ID_REMOVE).
    capture = site.start_ctl("--bus", str(peers.bus), "capture", "--num-matches", "9", output=output)
    capture.err.expect(lambda line: line.startswith("Monitoring "), "the capture's ready line")
    peers.echo.tell("call " + NAME + " hello-raw")
    assert peers.echo.stdout().expect(lambda line: line.startswith("reply "), "the raw reply") == \
        "reply raw:hello-raw"
    site.ctl("--bus", str(peers.bus), "call", NAME, "/org/example", "org.example.Echo", "Ping", "u", "42")
    site.ctl("--bus", str(peers.bus), "emit", "/org/example", "org.example.Clock", "Tick", "s", "noon")
    assert capture.wait() == 0

    frames = subprocess.run([tshark, "-r", str(output), "-T", "fields", "-E", "separator=|", "-e",
                             "dbus.message_type", "-e", "dbus.member", "-e", "dbus.signature", "-e",
                             "dbus.sender"], capture_output=True, text=True, timeout=120)
    assert frames.returncode == 0, frames.stderr
    rows = [line.split("|") for line in frames.stdout.splitlines()]
    assert len(rows) == 9, frames.stdout
    kinds = sorted((int(kind), member) for kind, member, *_ in rows)
    assert kinds == sorted([(1, "Payload"), (2, ""), (1, "Ping"), (2, ""), (4, "Tick")]
                           + [(4, "NameOwnerChanged")] * 4), rows
    assert {(row[1], row[2]) for row in rows if row[1] in ("Payload", "Ping", "Tick")} == {
        ("Payload", "ay"), ("Ping", "u"), ("Tick", "s")}
    detail = subprocess.run([tshark, "-r", str(output), "-V"], capture_output=True, text=True, timeout=120)
    assert detail.stdout.count("\nD-Bus\n") == 9, detail.stdout
    assert "Malformed" not in detail.stdout and "(Error/" not in detail.stdout
    assert "(Warning/" not in detail.stdout, detail.stdout

    messages = [wire.decode_dbus1(packet) for packet in pcap_packets(output.read_bytes())]
    raw_call = next(m for m in messages if m.member == "Payload")
    assert raw_call.body == (b"hello-raw",) and raw_call.sender == f":1.{peers.echo_id}"
    raw_reply = next(m for m in messages if m.type == MessageType.METHOD_RETURN and m.signature == "ay")
    assert raw_reply.body == (b"raw:hello-raw",) and raw_reply.reply_serial == raw_call.serial
    ping = next(m for m in messages if m.member == "Ping")
    assert ping.body == (42,) and ping.destination == NAME
    shutil.rmtree(output.parent, ignore_errors=True)


def test_call_and_emit_reach_a_c_client(site: Site) -> None:
    peers = start_peers(site)
    bus = str(peers.bus)
    sink = site.start([str(site.tools / "sink"), str(site.mount.path), peers.bus.parent.name])
    sink_id = int(sink.stdout().expect(lambda line: line.startswith("id "), "the sink")[3:])

    # The C client echoes the payload raw: not a D-Bus message, so shown in hex.
    echoed = site.ctl("--bus", bus, "call", C_NAME, "/c", "org.example.CEcho", "Echo", "s", "hi").stdout
    assert echoed.startswith("00000000  65 63 68 6f 3a 6c 01 00 02") and "|echo:l" in echoed
    record = json.loads(site.ctl("--bus", bus, "--json", "call", f":1.{peers.echo_id}", "/c",
                                 "org.example.CEcho", "Echo").stdout)
    payload = bytes.fromhex(record["payload_hex"])
    assert payload.startswith(b"echo:")
    call = wire.decode(payload[5:])
    assert (call.type, call.member, call.destination, call.path) == (MessageType.METHOD_CALL, "Echo",
                                                                     f":1.{peers.echo_id}", "/c")
    # Without expecting a reply, kdbusctl returns at once and prints nothing.
    quiet = site.ctl("--bus", bus, "call", "--no-expect-reply", C_NAME, "/c", "org.example.CEcho", "X")
    assert quiet.stdout == ""

    site.ctl("--bus", bus, "emit", "/org/example", "org.example.Clock", "Tick", "su", "noon", "12")
    site.ctl("--bus", bus, "emit", "--destination", f":1.{sink_id}", "/c", "org.example.Direct", "Hi")
    signals: list[tuple[int, int, int, DBusMessage]] = []
    while len(signals) < 2:
        line = sink.stdout().expect(lambda text: text.startswith("msg ") and not text.startswith("msg 0 "),
                                    "a signal at the C client")
        _, _, dst, flags, cookie, data = line.split()
        signals.append((int(dst), int(flags), int(cookie), wire.decode(bytes.fromhex(data))))
    (tick_dst, tick_flags, tick_cookie, tick), (direct_dst, _, _, direct) = signals
    # A broadcast (DST_ID_BROADCAST) with KDBUS_MSG_SIGNAL, its D-Bus serial its kdbus cookie.
    assert tick_dst == 2**64 - 1 and tick_flags & 4 and tick.serial == tick_cookie
    assert (tick.type, tick.path, tick.interface, tick.member, tick.signature, tick.body) == (
        MessageType.SIGNAL, "/org/example", "org.example.Clock", "Tick", "su", ("noon", 12))
    assert direct_dst == sink_id and (direct.member, direct.destination) == ("Hi", f":1.{sink_id}")

    # A D-Bus error reply is a failure, reported in one line.
    failed = site.ctl("--bus", bus, "call", NAME, "/org/example", "org.example.Echo", "Fail", ok=False)
    assert failed.returncode == 1 and failed.stderr == "kdbusctl: call failed: org.example.Error.Nope: nope\n"


def test_stats_count_what_was_sent_and_received(site: Site) -> None:
    peers = start_peers(site)
    bus = str(peers.bus)
    calls = 3
    for _ in range(calls):
        site.ctl("--bus", bus, "call", C_NAME, "/c", "org.example.CEcho", "Echo", "s", "hello")
    snapshot = json.loads(site.ctl("--bus", bus, "stats", "--json").stdout)
    assert snapshot["format"] == 1 and snapshot["bus"]["name"] == peers.bus.parent.name
    echo = next(c for c in snapshot["connections"] if c["id"] == peers.echo_id)
    # The C client took each call and answered each with "echo:" and the call's payload.
    assert (echo["messages_received"], echo["messages_sent"]) == (calls, calls)
    assert echo["bytes_received"] > 0 and echo["bytes_sent"] == echo["bytes_received"] + calls * len("echo:")
    assert (echo["queued_messages"], echo["messages_dropped"], echo["pending_replies"]) == (0, 0, 0)
    assert echo["names"] == [C_NAME] and echo["pid"] == peers.echo.process.pid and echo["comm"] == "echo"
    totals = snapshot["bus"]
    # The callers (kdbusctl's connections, gone since) count in the bus's totals.
    assert totals["messages_sent"] >= 2 * calls and totals["messages_received"] >= 2 * calls
    assert totals["connections"] == len(snapshot["connections"])
    table = site.ctl("--bus", bus, "stats").stdout
    assert f":1.{peers.echo_id}" in table and "DROPPED" in table


def test_make_bus_keeps_a_bus_until_interrupted(site: Site) -> None:
    maker = site.start_ctl("--root", str(site.mount.path), "make-bus", "made")
    endpoint = Path(maker.stdout().expect(lambda line: line.startswith("/"), "the bus path"))
    assert endpoint == site.mount.path / f"{site.uid}-made" / "bus"
    status = json.loads(site.ctl("--bus", str(endpoint), "status", "--json").stdout)
    assert status["bus_name"] == f"{site.uid}-made"
    listed = json.loads(site.ctl("--root", str(site.mount.path), "--bus", "made", "list", "--json").stdout)
    assert [row["description"] for row in listed] == ["kdbusctl"]
    taken = site.ctl("--root", str(site.mount.path), "make-bus", "made", ok=False)
    assert taken.returncode == 1 and taken.stderr.startswith("kdbusctl: a bus 'made' exists")
    monitor = _monitor(site, endpoint)
    assert maker.wait(signal.SIGTERM) == 0
    # The bus went with its maker, and a monitor of it says so.
    assert monitor.wait() == 1
    assert monitor.err.rest()[1:] == [f"kdbusctl: the bus {endpoint} went away"]
    gone = site.ctl("--bus", str(endpoint), "list", ok=False)
    assert gone.returncode == 1
    assert gone.stderr == f"kdbusctl: no bus at {endpoint}: No such file or directory\n"

    as_json = site.start_ctl("--root", str(site.mount.path), "--json", "make-bus", "--world", "open")
    made = json_document(as_json.stdout())
    assert made == {"bus": f"{site.uid}-open", "endpoint": str(site.mount.path / f"{site.uid}-open" / "bus")}
    # --world: KDBUS_MAKE_ACCESS_GROUP | KDBUS_MAKE_ACCESS_WORLD.
    assert json.loads(site.ctl("--bus", made["endpoint"], "status", "--json").stdout)["flags"] == 3
    assert as_json.wait(signal.SIGINT) == 0


BAD_INPUT: list[tuple[list[str], str]] = [
    (["--bus", "{root}/nonexistent/bus", "list"], "no bus at {root}/nonexistent/bus: No such file"),
    (["--bus", "{root}", "list"], "is a kdbus domain, not a bus; name one of its buses"),
    (["--root", "{root}", "--bus", "nosuch", "list"], "no bus 'nosuch' in {root} (buses there:"),
    (["--root", "{root}/{bus}", "--bus", "x", "list"], "is not a kdbus domain"),
    (["--bus", "{bus_file}", "--system", "list"], "choose the bus with one of --bus, --system and --user"),
    (["--bus", "{bus_file}", "status", "org.example.Nobody"], "no owner of 'org.example.Nobody' on this bus"),
    (["--bus", "{bus_file}", "status", ":1.99999"], "no connection :1.99999 on this bus"),
    (["--bus", "{bus_file}", "status", "not a name"], "is neither a connection (:1.N or N) nor a well-known"),
    (["--bus", "{bus_file}", "call", NAME, "/o", "org.x.Y", "M", "a{vs}", "0"], "a dict key must be a basic"),
    (["--bus", "{bus_file}", "call", NAME, "/o", "org.x.Y", "M", "as", "3", "a"], "not an element count"),
    (["--bus", "{bus_file}", "call", NAME, "/o", "org.x.Y", "M", "s"], "too few arguments"),
    (["--bus", "{bus_file}", "call", NAME, "not/a", "org.x.Y", "M"], "'not/a' is not a valid object path"),
    (["--bus", "{bus_file}", "call", NAME, "/o", "nodots", "M"], "'nodots' is not a valid interface name"),
    (["--bus", "{bus_file}", "call", "org.example.Nobody", "/o", "org.x.Y", "M"], "ESRCH (the name has no"),
    (["--bus", "{bus_file}", "call", "--no-auto-start", "org.example.Lazy", "/o", "org.x.Y", "M"],
     "EADDRNOTAVAIL (the name is held by an activator only)"),
    (["--bus", "{bus_file}", "call", "--timeout", "0.3", ":1.{queued}", "/o", "org.x.Y", "M"],
     "no reply from :1.{queued} within 0.3 s"),
    (["--bus", "{bus_file}", "emit", "/o", "org.x.Y", "M", "i", "many"], "'many' is not an integer for 'i'"),
    (["--bus", "{bus_file}", "monitor", "type='bogus'"], "unknown message type 'bogus'"),
    (["--bus", "{bus_file}", "monitor", "--num-matches", "0"], "--num-matches wants a positive number"),
    (["--bus", "{bus_file}", "capture", "--json"], "capture writes pcapng; --json applies to monitor"),
    (["--bus", "{bus_file}", "frobnicate"], "invalid choice: 'frobnicate'"),
    (["--bus", "{bus_file}", "call", NAME], "the following arguments are required: OBJECT, INTERFACE"),
    (["--bus", "{bus_file}", "list", "--num-matches", "3"], "unrecognized arguments: --num-matches 3"),
]


def test_bad_input_gives_one_line_and_a_failure(site: Site) -> None:
    peers = start_peers(site)
    values = {"root": str(site.mount.path), "bus": peers.bus.parent.name, "bus_file": str(peers.bus),
              "queued": str(peers.queued)}

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text

    for args, wanted in BAD_INPUT:
        filled = [fill(arg) for arg in args]
        proc = site.ctl(*filled, ok=False)
        assert proc.returncode != 0 and proc.stdout == "", (filled, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kdbusctl"), (filled, proc.stderr)
        assert fill(wanted) in proc.stderr, (filled, proc.stderr)


def test_a_bus_another_user_may_not_see(root_mount: Mount, user_mount: Mount, test_user: str,
                                        user_runtime: Path, tools: Path) -> None:
    root = Site(root_mount, None, None, tools)
    user = Site(user_mount, test_user, user_runtime, tools)
    with make_bus(root_mount.path, "private") as private, make_bus(root_mount.path, "open",
                                                                   world_access=True) as public:
        denied = user.ctl("--bus", str(private.endpoint), "list", ok=False)
        assert denied.returncode == 1
        assert denied.stderr == f"kdbusctl: may not open the bus {private.endpoint}: permission denied\n"
        # A world-accessible bus: the user may list it, but monitoring needs the owner's rights.
        assert "kdbusctl" in user.ctl("--bus", str(public.endpoint), "list").stdout
        monitor = user.ctl("--bus", str(public.endpoint), "monitor", ok=False)
        assert monitor.returncode == 1 and monitor.stderr == (
            f"kdbusctl: a monitor connection to {public.endpoint} needs bus owner rights (the bus creator's "
            "user, or CAP_IPC_OWNER)\n")
        # Statistics show every connection's process: the owner's and root's only.
        stats = user.ctl("--bus", str(public.endpoint), "stats", ok=False)
        assert stats.returncode == 1 and stats.stderr == (
            f"kdbusctl: may not read {public.endpoint.parent / 'stats'}: statistics are the bus owner's "
            "and root's\n")
        assert json.loads(root.ctl("--bus", str(public.endpoint), "stats", "--json").stdout)["format"] == 1
    peers = start_peers(user)
    try:
        # The user's mount admits only that user (no allow_other), root included.
        shut_out = root.ctl("--bus", str(peers.bus), "list", ok=False)
        assert shut_out.returncode == 1
        assert shut_out.stderr == f"kdbusctl: may not open the bus {peers.bus}: permission denied\n"
    finally:
        for running in user.running:
            running.quit()


def test_the_default_bus_is_the_users_own(user_mount: Mount, test_user: str, user_runtime: Path,
                                          tools: Path) -> None:
    if Path("/sys/fs/kdbus/0-system/bus").exists():
        pytest.skip("a system bus exists here, and it comes first")
    user = Site(user_mount, test_user, user_runtime, tools)
    try:
        peers = start_peers(user, suffix="user")
        assert peers.bus == Path(pwd.getpwnam(test_user).pw_dir) / "kdbus" / f"{user.uid}-user" / "bus"
        for options in ([], ["--user"]):
            rows = json.loads(user.ctl(*options, "list", "--json").stdout)
            assert {row["description"] for row in rows} >= {"ctl-server", "kdbusctl"}
        system = user.ctl("--system", "list", ok=False)
        assert system.returncode == 1
        assert system.stderr.startswith("kdbusctl: no bus at /sys/fs/kdbus/0-system/bus")
    finally:
        for running in reversed(user.running):
            running.quit()
    missing = user.ctl("list", ok=False)
    assert missing.returncode == 1 and missing.stderr.startswith("kdbusctl: no bus found: neither")


def test_man_page_renders_without_warnings() -> None:
    page = REPO / "man" / "kdbusctl.1"
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    proc = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for verb in ("list", "status", "monitor", "capture", "call", "emit", "make-bus"):
        assert f"\n       {verb}" in proc.stdout, verb
    groff = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True)
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr
