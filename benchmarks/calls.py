"""Synchronous method-call round trips: kdbusfs against dbus-daemon and a raw unix socket.

The same pattern everywhere: a caller process sends a call carrying PAYLOAD bytes and waits for an
8-byte answer from a callee process that reads the whole payload. kdbusfs: KDBUS_SEND_SYNC_REPLY
by well-known name, payload as a PAYLOAD_VEC (c/bench_kdbus.c); dbus-daemon: libdbus
send_with_reply_and_block with a byte array (c/bench_dbus.c); unix: a socketpair (c/bench_unix.c).
Each figure is the median of several timed runs. Every process (daemons and clients) is placed the
same way for a whole row: all pinned to one CPU (--cpu, 0 unless told), then unpinned.

The "FUSE floor" column is the most any FUSE daemon in Python could reach with this client pattern:
the raw FUSE round-trip rate (raw_fuse.py, which answers each ioctl with no work at all) divided
by the FUSE requests one kdbus call costs: the caller's SEND and FREE, and the callee's RECV that
finds nothing, one POLL, the RECV of the call, its FREE and the SEND of the reply (counted in the
daemon: 7.0 per call).

With --user NAME, kdbusfs is also measured on NAME's own mount: the daemon and both kdbus clients
run as NAME (the mount goes through fusermount3, so /dev/fuse must be mode 0666, and NAME must be
able to read this tree and run its interpreter). Without CAP_SYS_ADMIN there is no passthrough:
pool bytes reach the clients' mappings by FUSE_NOTIFY_STORE, which is what this column measures.
With --compare TREE, kdbusfs also runs from another checkout (e.g. `git worktree add /tmp/before
HEAD`), on the same kinds of mount. All daemons of a row stay mounted side by side, and each run
measures every column once, in an order that rotates from run to run, so that every column meets
the same machine conditions.

With --metadata, each kdbusfs column gets a second one beside it, "metadata receiver": both clients
connect as kdbus-era sd-bus did (a description, every item allowed to be sent) and ask for the
TIMESTAMP, CREDS, PIDS, TID_COMM, PID_COMM, NAMES and CONN_DESCRIPTION of whoever sends to them, so
each call and each reply carries those (bench_kdbus.c's "metadata" mode, which checks they arrive).

Needs root (the kdbusfs mount), gcc, dbus-daemon and libdbus-1-dev:
    apt-get install -y gcc dbus-daemon libdbus-1-dev pkg-config
usage: python benchmarks/calls.py [--seconds S] [--runs N] [--payloads 8,4096,65536,1048576]
                                  [--placements pinned,unpinned] [--user NAME] [--compare TREE]
                                  [--cpu N] [--metadata]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ioctl_rate import compile_c, mounted, raw_round_trips

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# FUSE requests per kdbus call with bench_kdbus.c's pattern (see the module's docstring).
FUSE_REQUESTS_PER_CALL = 7
PLACEMENTS: tuple[tuple[str, list[str]], ...] = (
    ("pinned to CPU 0", ["taskset", "-c", "0"]), ("unpinned", []))

DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_message_size">268435456</limit>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
</busconfig>
"""


def build(out: Path) -> dict[str, Path]:
    binaries = {name: compile_c(name, out) for name in ("bench_unix", "bench_kdbus")}
    dbus = subprocess.run(["pkg-config", "--cflags", "--libs", "dbus-1"], capture_output=True, text=True,
                          check=True).stdout.split()
    binaries["bench_dbus"] = compile_c("bench_dbus", out, *dbus)
    return binaries


def wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def answers(path: Path) -> bool:
    """Whether a bus accepts connections at `path` (its socket file comes before it listens)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


@dataclass(frozen=True)
class Kdbusfs:
    """One kdbusfs column: a daemon from `tree`, as root or as `user` (None: root's mount)."""

    label: str
    tree: Path
    user: str | None

    def identity(self) -> dict[str, Any]:
        """Popen arguments that run a process as the column's user."""
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        env = {"HOME": entry.pw_dir, "USER": self.user, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}


@contextlib.contextmanager
def kdbusfs_mounted(column: Kdbusfs, mnt: Path, pin: list[str]) -> Iterator[Path]:
    mnt.mkdir(exist_ok=True)
    if column.user is not None:
        # fusermount3 mounts only where the user may write.
        entry = pwd.getpwnam(column.user)
        os.chown(mnt, entry.pw_uid, entry.pw_gid)
    daemon = subprocess.Popen([*pin, sys.executable, "-m", "kdbusfs", "-f", str(mnt)], cwd=column.tree,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **column.identity())

    def ready() -> bool:
        if daemon.poll() is not None:
            assert daemon.stderr is not None
            raise RuntimeError(f"{column.label}: kdbusfs exited with {daemon.returncode}: "
                               f"{daemon.stderr.read().decode(errors='replace')}")
        return mounted(mnt)

    try:
        wait_for(ready, column.label)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        daemon.terminate()
        daemon.wait(timeout=10)


@contextlib.contextmanager
def dbus_daemon(work: Path, pin: list[str]) -> Iterator[Path]:
    sock = work / "dbus.sock"
    (work / "dbus.conf").write_text(DBUS_CONFIG.format(socket=sock))
    dbusd = subprocess.Popen([*pin, "dbus-daemon", f"--config-file={work / 'dbus.conf'}", "--nofork",
                              "--nopidfile"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: answers(sock), "dbus-daemon")
        yield sock
    finally:
        dbusd.terminate()
        dbusd.wait(timeout=10)
        if sock.exists():
            os.unlink(sock)


# A command to time, and the Popen arguments that run it as its column's user.
Command = tuple[list[str], dict[str, Any]]


def medians_in_turn(commands: list[Command], runs: int, measure: Callable[..., float]) -> list[float]:
    """Each command's median rate over `runs` runs. The commands are measured in turn, each run
    starting one command later, so that none always follows the same one while the machine's
    speed drifts."""
    rates: list[list[float]] = [[] for _ in commands]
    for run in range(runs):
        for i in range(len(commands)):
            index = (i + run) % len(commands)
            cmd, identity = commands[index]
            rates[index].append(measure(cmd, **identity))
    return [statistics.median(r) for r in rates]


# A table row: its leading cells (placement, sizes, baselines), then the dbus-daemon and floor rates
# the kdbusfs columns are compared with, then the kdbusfs columns' rates.
Row = tuple[list[str], float, float, list[float]]


def print_table(heads: list[str], labels: list[str], rows: list[Row]) -> None:
    """A markdown table: the leading columns `heads`, then each kdbusfs column (`labels`) with its
    ratios to dbus-daemon and to the FUSE floor."""
    head = "".join(f" {label} | {label} / dbus-daemon | {label} / floor |" for label in labels)
    print("| " + " | ".join(heads) + " |" + head)
    print("|---" * (len(heads) + 3 * len(labels)) + "|")
    for lead, dbus, floor, kdbus in rows:
        cells = "".join(f" {k:.0f} | {k / dbus:.2f}x | {k / floor:.2f}x |" for k in kdbus)
        print("| " + " | ".join(lead) + " |" + cells)


def rate(cmd: list[str], **identity: Any) -> float:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, **identity).stdout
    return float(out.split()[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--payloads", default="8,4096,65536,1048576")
    parser.add_argument("--placements", default="pinned,unpinned", help="pinned, unpinned or both")
    parser.add_argument("--user", help="also measure kdbusfs on this (unprivileged) user's own mount")
    parser.add_argument("--compare", type=Path, help="another kdbusfs checkout, measured alongside")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU of the pinned placement")
    parser.add_argument("--metadata", action="store_true",
                        help="also each kdbusfs column with receivers asking for sd-bus's metadata")
    args = parser.parse_args()
    payloads = [int(p) for p in args.payloads.split(",")]
    wanted = args.placements.split(",")
    trees = [("kdbusfs", REPO)]
    if args.compare is not None:
        trees.append((f"kdbusfs ({args.compare.name})", args.compare.resolve()))
    columns = [Kdbusfs(label, tree, None) for label, tree in trees]
    if args.user is not None:
        columns += [Kdbusfs(f"{label}, user mount", tree, args.user) for label, tree in trees]
    # (label suffix, bench_kdbus.c's KIND argument) for each kdbusfs column.
    modes: list[tuple[str, list[str]]] = [("", [])]
    if args.metadata:
        modes.append((", metadata receiver", ["metadata"]))
    labels = [f"{column.label}{suffix}" for column in columns for suffix, _ in modes]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kdbusfs-calls-") as tmp:
        work = Path(tmp)
        # The user's daemon and clients reach the binaries and mount points through here.
        work.chmod(0o755)
        bins = build(work)
        placements = [(f"pinned to CPU {args.cpu}", ["taskset", "-c", str(args.cpu)]), PLACEMENTS[1]]
        for label, pin in placements:
            if label.split()[0] not in wanted:
                continue
            floor = raw_round_trips(work, pin, args.seconds, args.runs) / FUSE_REQUESTS_PER_CALL
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(dbus_daemon(work, pin))
                mounts = [stack.enter_context(kdbusfs_mounted(column, work / f"kdbus{i}", pin))
                          for i, column in enumerate(columns)]
                for size in payloads:
                    timing = [str(size), str(args.seconds)]
                    commands: list[Command] = [
                        ([*pin, str(bins["bench_unix"]), *timing], {}),
                        ([*pin, str(bins["bench_dbus"]), f"unix:path={sock}", *timing], {}),
                    ]
                    commands += [([*pin, str(bins["bench_kdbus"]), str(mnt), *timing, *kind],
                                  column.identity())
                                 for column, mnt in zip(columns, mounts, strict=True) for _, kind in modes]
                    unix, dbus, *kdbus = medians_in_turn(commands, args.runs, rate)
                    rows.append(([label, f"{size} B", f"{unix:.0f}", f"{dbus:.0f}", f"{floor:.0f}"],
                                 dbus, floor, kdbus))
    user = f"; user mount: {args.user}'s own" if args.user is not None else ""
    print(f"calls per second, median of {args.runs} runs of {args.seconds:g} s{user}\n")
    print_table(["placement", "payload", "unix socket", "dbus-daemon", "FUSE floor"], labels, rows)


if __name__ == "__main__":
    main()
