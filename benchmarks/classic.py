"""Classic D-Bus clients' method calls: through kdbusfs's classic socket, dbus-daemon and dbus-broker.

The same two libdbus processes everywhere (c/bench_dbus.c): a callee that owns a name and answers
each call (a byte array of PAYLOAD bytes) with a uint64, and a caller making synchronous calls for
SECONDS. kdbusfs: a root mount with `-o dbus_socket=`, both clients classic ones on its bus (each a
kdbus connection inside the daemon: no FUSE round trip on their path); dbus-daemon and dbus-broker
with the same permissive configuration. Each figure is the median of several timed runs; each run
measures every column once, starting one column later each time. Every process (brokers, daemon
and clients) is placed the same way for a whole row: all pinned to CPU 0, then unpinned.

dbus-broker is started by dbus-broker-launch as systemd would start it (its listening socket
passed as LISTEN_FDS), in a mount namespace of its own where a journal socket this script reads
and discards stands in for journald's, and with the dbus-daemon column's bus as the "systemd" bus
it wants to talk to (it only watches it here: nothing is activated).

Needs root (the kdbusfs mount), gcc, pkg-config, libdbus-1-dev, dbus-daemon, dbus-broker:
    apt-get install -y gcc pkg-config libdbus-1-dev dbus-daemon dbus-broker
usage: python benchmarks/classic.py [--seconds S] [--runs N] [--payloads 8,1048576]
                                    [--placements pinned,unpinned]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from calls import PLACEMENTS, Command, answers, dbus_daemon, medians_in_turn, rate, wait_for
from ioctl_rate import compile_c, mounted

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# dbus-broker takes its socket from the launcher: no <listen> here.
BROKER_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
  <limit name="max_message_size">268435456</limit>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
</busconfig>
"""


@contextlib.contextmanager
def journal_stand_in(work: Path) -> Iterator[Path]:
    """A directory holding a datagram socket read (and discarded) by a thread of this process."""
    directory = work / "journal"
    directory.mkdir(exist_ok=True)
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(directory / "socket"))
    stop = threading.Event()

    def drain() -> None:
        sink.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                sink.recv(65536)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield directory
    finally:
        stop.set()
        thread.join()
        sink.close()
        (directory / "socket").unlink(missing_ok=True)


@contextlib.contextmanager
def dbus_broker(work: Path, pin: list[str], systemd_bus: Path, journal: Path) -> Iterator[Path]:
    sock = work / "dbus-broker.sock"
    config = work / "dbus-broker.conf"
    config.write_text(BROKER_CONFIG)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.listen(128)
    # The launcher finds journald's socket in its own mount namespace, where ours stands in.
    fd = listener.fileno()
    # Socket activation's convention: the socket is fd 3, LISTEN_PID the launcher's pid (the shell's,
    # which execs it).
    script = (f"mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && "
              f"mount --bind {journal} /run/systemd/journal && exec 3<&{fd} {fd}<&- && "
              f"LISTEN_PID=$$ LISTEN_FDS=1 DBUS_SESSION_BUS_ADDRESS=unix:path={systemd_bus} "
              f"exec {' '.join(pin)} dbus-broker-launch --scope user --config-file {config}")
    try:
        process = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                   pass_fds=(fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        listener.close()
    try:
        # The socket listens from the start: the broker answers once a client gets a name.
        wait_for(lambda: subprocess.run(["busctl", f"--address=unix:path={sock}", "list"],
                                        capture_output=True).returncode == 0, "dbus-broker")
        yield sock
    finally:
        process.terminate()
        process.wait(timeout=10)
        sock.unlink(missing_ok=True)


@contextlib.contextmanager
def kdbusfs_classic(work: Path, pin: list[str]) -> Iterator[Path]:
    mnt = work / "kdbus"
    mnt.mkdir(exist_ok=True)
    sock = work / "kdbusfs.sock"
    daemon = subprocess.Popen([*pin, sys.executable, "-m", "kdbusfs", "-f", "-o", f"dbus_socket={sock}",
                               str(mnt)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ready() -> bool:
        if daemon.poll() is not None:
            assert daemon.stderr is not None
            raise RuntimeError(f"kdbusfs exited: {daemon.stderr.read().decode(errors='replace')}")
        return mounted(mnt) and answers(sock)

    try:
        wait_for(ready, "kdbusfs")
        yield sock
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        daemon.terminate()
        daemon.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--payloads", default="8,1048576")
    parser.add_argument("--placements", default="pinned,unpinned", help="pinned, unpinned or both")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("classic.py needs root (the kdbusfs mount, dbus-broker's mount namespace)")
    payloads = [int(p) for p in args.payloads.split(",")]
    wanted = args.placements.split(",")
    labels = ("kdbusfs", "dbus-daemon", "dbus-broker")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdbusfs-classic-") as tmp:
        work = Path(tmp)
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "dbus-1"], capture_output=True, text=True,
                               check=True).stdout.split()
        client = compile_c("bench_dbus", work, *flags)
        for placement, pin in PLACEMENTS:
            if placement.split()[0] not in wanted:
                continue
            with contextlib.ExitStack() as stack:
                daemon_sock = stack.enter_context(dbus_daemon(work, pin))
                journal = stack.enter_context(journal_stand_in(work))
                sockets = (stack.enter_context(kdbusfs_classic(work, pin)), daemon_sock,
                           stack.enter_context(dbus_broker(work, pin, daemon_sock, journal)))
                for size in payloads:
                    commands: list[Command] = [
                        ([*pin, str(client), f"unix:path={sock}", str(size), str(args.seconds)], {})
                        for sock in sockets]
                    rows.append((placement, size, medians_in_turn(commands, args.runs, rate)))
    print(f"classic-client calls per second, median of {args.runs} runs of {args.seconds:g} s\n")
    print("| placement | payload | " + " | ".join(labels) + " | kdbusfs / dbus-daemon | "
          "kdbusfs / dbus-broker |")
    print("|---" * (4 + len(labels)) + "|")
    for placement, size, (kdbus, daemon, broker) in rows:
        print(f"| {placement} | {size} B | {kdbus:.0f} | {daemon:.0f} | {broker:.0f} | "
              f"{kdbus / daemon:.2f}x | {kdbus / broker:.2f}x |")


if __name__ == "__main__":
    main()
