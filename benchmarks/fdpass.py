"""Calls that pass a descriptor: kdbusfs with and without `kdbusfs run`, against dbus-daemon.

Each synchronous method call carries one descriptor: a pipe (in FDS for kdbus, a UNIX_FD argument
for D-Bus) or a sealed memfd of 1 MiB or 16 MiB (PAYLOAD_MEMFD for kdbus), which the callee maps
and reads a byte per page of before closing it. Under `kdbusfs run` both the caller and the callee
get the descriptors installed (that is what the launcher is for); without it they receive -1, so
the "plain" column is what the same traffic costs when no descriptor reaches anyone (and memfds
are not read): the price of installation is the ratio of the two. dbus-daemon passes the
descriptors over its unix sockets.

Clients: c/bench_kdbus.c and c/bench_dbus.c with a descriptor KIND. Every process (daemons and clients) is
pinned to CPU 0, then all are unpinned. Needs root and dbus-daemon's development files.
usage: python benchmarks/fdpass.py [--seconds S] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from calls import REPO, Kdbusfs, build, dbus_daemon, kdbusfs_mounted, rate

CASES = (("fd", 0), ("memfd", 1 << 20), ("memfd", 16 << 20))


def median_rate(cmd: list[str], runs: int) -> float:
    return statistics.median(rate(cmd) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdbusfs-fdpass-") as tmp:
        work = Path(tmp)
        bins = build(work)
        kdbus_bin, dbus_bin = bins["bench_kdbus"], bins["bench_dbus"]
        for label, pin in (("pinned to CPU 0", ["taskset", "-c", "0"]), ("unpinned", [])):
            with dbus_daemon(work, pin) as sock, \
                    kdbusfs_mounted(Kdbusfs("kdbusfs", REPO, None), work / "kdbus", pin) as mnt:
                for kind, size in CASES:
                    case = [str(size), str(args.seconds), kind]
                    dbus = median_rate([*pin, str(dbus_bin), f"unix:path={sock}", *case], args.runs)
                    plain = median_rate([*pin, str(kdbus_bin), str(mnt), *case], args.runs)
                    launched = median_rate([*pin, sys.executable, "-m", "kdbusfs", "run", "--mount", str(mnt),
                                            "--", str(kdbus_bin), str(mnt), *case], args.runs)
                    rows.append((label, kind, size, dbus, plain, launched))
    print(f"calls per second, median of {args.runs} runs of {args.seconds:g} s\n")
    print("| placement | descriptor | dbus-daemon | kdbusfs plain (-1) | kdbusfs run (installed) "
          "| run / plain | run / dbus-daemon |")
    print("|---|---|---|---|---|---|---|")
    for label, kind, size, dbus, plain, launched in rows:
        what = "pipe" if kind == "fd" else f"memfd {size >> 20} MiB"
        print(f"| {label} | {what} | {dbus:.0f} | {plain:.0f} | {launched:.0f} | {launched / plain:.2f}x "
              f"| {launched / dbus:.2f}x |")


if __name__ == "__main__":
    main()
