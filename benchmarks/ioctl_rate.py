"""ioctl round trips per second through kdbusfs against the raw FUSE floor, and HELLO+BYEBYE rate.

Each figure is the median of several timed runs of a C client (benchmarks/c/bench_ioctl.c). Every
process (daemon and client) is placed the same way for all figures of a row: first all pinned to
CPU 0, then unpinned. On VMs a wake-up across CPUs costs tens of microseconds, so the two rows differ.

usage: python benchmarks/ioctl_rate.py [--seconds S] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def compile_c(name: str, out: Path, *libs: str) -> Path:
    """benchmarks/c/NAME.c built into `out`, against include/kdbus.h."""
    binary = out / name
    subprocess.run(["gcc", "-O2", "-std=gnu11", f"-I{REPO / 'include'}", "-o", str(binary),
                    str(HERE / "c" / f"{name}.c"), *libs], check=True)
    return binary


def build(out: Path) -> Path:
    return compile_c("bench_ioctl", out)


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def start(cmd: list[str], mountpoint: Path, pin: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*pin, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not mounted(mountpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{cmd} did not mount")
        time.sleep(0.02)
    return proc


def stop(proc: subprocess.Popen[bytes], mountpoint: Path) -> None:
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
    proc.terminate()
    proc.wait(timeout=10)


def measure(binary: Path, mode: str, path: Path, pin: list[str], seconds: float, runs: int) -> float:
    rates = []
    for _ in range(runs):
        out = subprocess.run([*pin, str(binary), mode, str(path), str(seconds)], check=True,
                             capture_output=True, text=True).stdout
        rates.append(float(out.split()[1]))
    return statistics.median(rates)


def raw_round_trips(work: Path, pin: list[str], seconds: float, runs: int) -> float:
    """FUSE ioctl round trips per second through the raw floor server (raw_fuse.py), placed with
    `pin`: what any FUSE daemon written in Python pays per request before doing any work."""
    binary = build(work)
    mountpoint = work / "raw"
    mountpoint.mkdir(exist_ok=True)
    raw = start([sys.executable, str(HERE / "raw_fuse.py"), str(mountpoint)], mountpoint, pin)
    try:
        return measure(binary, "raw", mountpoint / "f", pin, seconds, runs)
    finally:
        stop(raw, mountpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timed run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdbusfs-bench-") as tmp:
        work = Path(tmp)
        binary = build(work)
        kdbus_mnt, raw_mnt = work / "kdbus", work / "raw"
        kdbus_mnt.mkdir()
        raw_mnt.mkdir()
        rows = []
        for label, pin in (("pinned to CPU 0", ["taskset", "-c", "0"]), ("unpinned", [])):
            kdbus = start([sys.executable, "-m", "kdbusfs", "-f", str(kdbus_mnt)], kdbus_mnt, pin)
            raw = start([sys.executable, str(HERE / "raw_fuse.py"), str(raw_mnt)], raw_mnt, pin)
            try:
                figures = {
                    "raw": measure(binary, "raw", raw_mnt / "f", pin, args.seconds, args.runs),
                    "noop": measure(binary, "noop", kdbus_mnt, pin, args.seconds, args.runs),
                    "free": measure(binary, "free", kdbus_mnt, pin, args.seconds, args.runs),
                    "hello": measure(binary, "hello", kdbus_mnt, pin, args.seconds, args.runs),
                }
            finally:
                stop(kdbus, kdbus_mnt)
                stop(raw, raw_mnt)
            rows.append((label, figures))
    print(f"median of {args.runs} runs of {args.seconds:g} s each\n")
    print("| placement | raw FUSE ioctl/s | kdbusfs FREE no-op/s | kdbusfs FREE ENXIO/s "
          "| vs floor | HELLO+BYEBYE conns/s |")
    print("|---|---|---|---|---|---|")
    for label, f in rows:
        print(f"| {label} | {f['raw']:.0f} | {f['noop']:.0f} | {f['free']:.0f} "
              f"| {f['noop'] / f['raw']:.2f}x | {f['hello']:.0f} |")


if __name__ == "__main__":
    main()
