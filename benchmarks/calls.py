"""Synchronous method-call round trips: kdbusfs against dbus-daemon and a raw unix socket.

The same pattern everywhere: a caller process sends a call carrying PAYLOAD bytes and waits for an
8-byte answer from a callee process that reads the whole payload. kdbusfs: KDBUS_SEND_SYNC_REPLY
by well-known name, payload as a PAYLOAD_VEC (c/bench_kdbus.c); dbus-daemon: libdbus
send_with_reply_and_block with a byte array (c/bench_dbus.c); unix: a socketpair (c/bench_unix.c).
Each figure is the median of several timed runs. Every process (daemons and clients) is placed the
same way for a whole row: all pinned to CPU 0, then unpinned.

The "FUSE floor" column is the most any FUSE daemon in Python could reach with this client pattern:
the raw FUSE round-trip rate (raw_fuse.py, which answers each ioctl with no work at all) divided
by the FUSE requests one kdbus call costs: the caller's SEND and FREE, and the callee's RECV that
finds nothing, one POLL, the RECV of the call, its FREE and the SEND of the reply (counted in the
daemon: 7.0 per call).

Needs root (the kdbusfs mount), gcc, dbus-daemon and libdbus-1-dev:
    apt-get install -y gcc dbus-daemon libdbus-1-dev pkg-config
usage: python benchmarks/calls.py [--seconds S] [--runs N] [--payloads 8,4096,65536,1048576]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ioctl_rate import compile_c, mounted, raw_round_trips

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# FUSE requests per kdbus call with bench_kdbus.c's pattern (see the module's docstring).
FUSE_REQUESTS_PER_CALL = 7

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


@contextlib.contextmanager
def buses(work: Path, pin: list[str]) -> Iterator[tuple[Path, Path]]:
    """A kdbusfs mount and a dbus-daemon, both placed with `pin`: (mount point, dbus socket)."""
    mnt, sock = work / "kdbus", work / "dbus.sock"
    mnt.mkdir(exist_ok=True)
    (work / "dbus.conf").write_text(DBUS_CONFIG.format(socket=sock))
    kdbus = subprocess.Popen([*pin, sys.executable, "-m", "kdbusfs", "-f", str(mnt)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dbusd = subprocess.Popen([*pin, "dbus-daemon", f"--config-file={work / 'dbus.conf'}", "--nofork",
                              "--nopidfile"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: mounted(mnt), "kdbusfs")
        wait_for(sock.exists, "dbus-daemon")
        yield mnt, sock
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        for proc in (kdbus, dbusd):
            proc.terminate()
            proc.wait(timeout=10)
        if sock.exists():
            os.unlink(sock)


def median_rate(cmd: list[str], runs: int) -> float:
    rates = []
    for _ in range(runs):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout
        rates.append(float(out.split()[2]))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--payloads", default="8,4096,65536,1048576")
    args = parser.parse_args()
    payloads = [int(p) for p in args.payloads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdbusfs-calls-") as tmp:
        work = Path(tmp)
        bins = build(work)
        for label, pin in (("pinned to CPU 0", ["taskset", "-c", "0"]), ("unpinned", [])):
            floor = raw_round_trips(work, pin, args.seconds, args.runs) / FUSE_REQUESTS_PER_CALL
            with buses(work, pin) as (mnt, sock):
                for size in payloads:
                    unix = median_rate([*pin, str(bins["bench_unix"]), str(size), str(args.seconds)],
                                       args.runs)
                    dbus = median_rate([*pin, str(bins["bench_dbus"]), f"unix:path={sock}", str(size),
                                        str(args.seconds)], args.runs)
                    kdbusfs = median_rate([*pin, str(bins["bench_kdbus"]), str(mnt), str(size),
                                           str(args.seconds)], args.runs)
                    rows.append((label, size, unix, dbus, floor, kdbusfs))
    print(f"calls per second, median of {args.runs} runs of {args.seconds:g} s\n")
    print("| placement | payload | unix socket | dbus-daemon | FUSE floor | kdbusfs | kdbusfs / dbus-daemon "
          "| kdbusfs / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for label, size, unix, dbus, floor, kdbusfs in rows:
        print(f"| {label} | {size} B | {unix:.0f} | {dbus:.0f} | {floor:.0f} | {kdbusfs:.0f} "
              f"| {kdbusfs / dbus:.2f}x | {kdbusfs / floor:.2f}x |")


if __name__ == "__main__":
    main()
