"""Broadcast deliveries per second: kdbusfs against dbus-daemon, 1 and 10 subscribers.

One sender emits COUNT signals carrying PAYLOAD bytes; every subscriber's match selects them (a
bloom mask on kdbusfs, a match rule on dbus-daemon) and each reads every payload. The sender keeps
at most 64 signals in flight per subscriber, so nothing is dropped on either bus. Figures are
deliveries per second (signals x subscribers / elapsed), median of several runs, every process
pinned to CPU 0, then unpinned.

The "FUSE floor" column bounds any FUSE daemon in Python: each delivery costs at least the
subscriber's RECV and FREE plus its share of the sender's SEND, 2 + 1/subscribers requests at the
raw FUSE round-trip rate (raw_fuse.py, no work per request; wake-ups not even counted).

Needs root, gcc, dbus-daemon, libdbus-1-dev, pkg-config.
usage: python benchmarks/signals.py [--count N] [--runs N] [--payloads 8,4096,65536] [--subscribers 1,10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from calls import Kdbusfs, dbus_daemon, kdbusfs_mounted
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


def rate(cmd: list[str], runs: int) -> float:
    return statistics.median(
        float(subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout.split()[3])
        for _ in range(runs)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--payloads", default="8,4096,65536")
    parser.add_argument("--subscribers", default="1,10")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdbusfs-signals-") as tmp:
        work = Path(tmp)
        kdbus_bin, dbus_bin = build(work)
        for label, pin in (("pinned to CPU 0", ["taskset", "-c", "0"]), ("unpinned", [])):
            raw = raw_round_trips(work, pin, 2.0, args.runs)
            with dbus_daemon(work, pin) as sock, \
                    kdbusfs_mounted(Kdbusfs("kdbusfs", REPO, None), work / "kdbus", pin) as mnt:
                for subs in (int(n) for n in args.subscribers.split(",")):
                    for size in (int(p) for p in args.payloads.split(",")):
                        common = [str(subs), str(size), str(args.count)]
                        d = rate([*pin, str(dbus_bin), f"unix:path={sock}", *common], args.runs)
                        k = rate([*pin, str(kdbus_bin), str(mnt), *common], args.runs)
                        rows.append((label, subs, size, d, raw / (2 + 1 / subs), k))
    print(f"deliveries per second, median of {args.runs} runs of {args.count} signals\n")
    print("| placement | subscribers | payload | dbus-daemon | FUSE floor | kdbusfs | kdbusfs / dbus-daemon "
          "| kdbusfs / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for label, subs, size, d, floor, k in rows:
        print(f"| {label} | {subs} | {size} B | {d:.0f} | {floor:.0f} | {k:.0f} | {k / d:.2f}x "
              f"| {k / floor:.2f}x |")


if __name__ == "__main__":
    main()
