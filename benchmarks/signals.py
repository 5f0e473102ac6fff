"""Broadcast deliveries per second: kdbusfs against dbus-daemon, 1 and 10 subscribers.

One sender emits COUNT signals carrying PAYLOAD bytes; every subscriber's match selects them (a
bloom mask on kdbusfs, a match rule on dbus-daemon) and each reads every payload. The sender keeps
at most 64 signals in flight per subscriber, so nothing is dropped on either bus. Figures are
deliveries per second (signals x subscribers / elapsed), median of several runs, every process
pinned to CPU 0, then unpinned.

The "FUSE floor" column bounds any FUSE daemon in Python: each delivery costs at least the
subscriber's RECV and FREE plus its share of the sender's SEND, 2 + 1/subscribers requests at the
raw FUSE round-trip rate (raw_fuse.py, no work per request; wake-ups not even counted).

With --user NAME, kdbusfs is also measured on NAME's own mount (the daemon, sender and subscribers
run as NAME, pool bytes reach them by NOTIFY_STORE); with --compare TREE, another checkout's daemon
beside this one's. Every kdbusfs column of a row is measured in turn, run after run.

Needs root, gcc, dbus-daemon, libdbus-1-dev, pkg-config.
usage: python benchmarks/signals.py [--count N] [--runs N] [--payloads 8,4096,65536] [--subscribers 1,10]
                                    [--user NAME] [--compare TREE]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from calls import Command, Kdbusfs, Row, dbus_daemon, kdbusfs_mounted, medians_in_turn, print_table
from ioctl_rate import raw_round_trips

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def build(out: Path) -> tuple[Path, Path]:
    flags = ["gcc", "-O2", "-std=gnu11", f"-I{REPO / 'include'}"]
    kdbus = out / "bench_signal_kdbus"
    subprocess.run([*flags, "-o", str(kdbus), str(HERE / "c" / "bench_signal_kdbus.c")], check=True)
    libs = subprocess.run(["pkg-config", "--cflags", "--libs", "dbus-1"], capture_output=True, text=True,
                          check=True).stdout.split()
    dbus = out / "bench_signal_dbus"
    subprocess.run([*flags, "-o", str(dbus), str(HERE / "c" / "bench_signal_dbus.c"), *libs], check=True)
    return kdbus, dbus


def rate(cmd: list[str], **identity: Any) -> float:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, **identity).stdout
    return float(out.split()[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--payloads", default="8,4096,65536")
    parser.add_argument("--subscribers", default="1,10")
    parser.add_argument("--user", help="also measure kdbusfs on this (unprivileged) user's own mount")
    parser.add_argument("--compare", type=Path, help="another kdbusfs checkout, measured alongside")
    args = parser.parse_args()
    trees = [("kdbusfs", REPO)]
    if args.compare is not None:
        trees.append((f"kdbusfs ({args.compare.name})", args.compare.resolve()))
    columns = [Kdbusfs(label, tree, None) for label, tree in trees]
    if args.user is not None:
        columns += [Kdbusfs(f"{label}, user mount", tree, args.user) for label, tree in trees]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kdbusfs-signals-") as tmp:
        work = Path(tmp)
        # A user's daemon and clients reach the binaries and mount points through here.
        work.chmod(0o755)
        kdbus_bin, dbus_bin = build(work)
        for label, pin in (("pinned to CPU 0", ["taskset", "-c", "0"]), ("unpinned", [])):
            raw = raw_round_trips(work, pin, 2.0, args.runs)
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(dbus_daemon(work, pin))
                mounts = [stack.enter_context(kdbusfs_mounted(column, work / f"kdbus{i}", pin))
                          for i, column in enumerate(columns)]
                for subs in (int(n) for n in args.subscribers.split(",")):
                    for size in (int(p) for p in args.payloads.split(",")):
                        common = [str(subs), str(size), str(args.count)]
                        commands: list[Command] = [
                            ([*pin, str(dbus_bin), f"unix:path={sock}", *common], {})]
                        commands += [([*pin, str(kdbus_bin), str(mnt), *common], column.identity())
                                     for column, mnt in zip(columns, mounts, strict=True)]
                        dbus, *kdbus = medians_in_turn(commands, args.runs, rate)
                        floor = raw / (2 + 1 / subs)
                        rows.append(([label, str(subs), f"{size} B", f"{dbus:.0f}", f"{floor:.0f}"],
                                     dbus, floor, kdbus))
    user = f"; user mount: {args.user}'s own" if args.user is not None else ""
    print(f"deliveries per second, median of {args.runs} runs of {args.count} signals{user}\n")
    print_table(["placement", "subscribers", "payload", "dbus-daemon", "FUSE floor"],
                [c.label for c in columns], rows)


if __name__ == "__main__":
    main()
