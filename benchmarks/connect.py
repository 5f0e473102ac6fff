"""Daemon CPU per connection from a fresh process, as the bus fills up, and time to connect clients.

A C client (benchmarks/c/bench_connect.c) makes a bus and forks clients one after another; each
opens the bus (LOOKUP + OPEN), sends HELLO and stays connected. The daemon's CPU time (all its
threads, user + system, from /proc/PID/task/*/schedstat) is read after every block of BLOCK
connections: the figure is microseconds of daemon CPU per connection within that block, so a cost
that grows with the number of connections shows as a rising row. "connect 1,000" is the wall time
for the first 1,000 clients to connect (fork included). Figures are medians of several runs.

With --compare TREE, a second daemon runs from another checkout of kdbusfs (e.g. a worktree of an
older commit: `git worktree add /tmp/kdbusfs-before HEAD`), alternating with this tree run by run,
so that both see the same machine conditions.

Every process (daemon and clients) is placed the same way for a whole row: all pinned to CPU 0,
then unpinned. Needs root (the mount) and gcc.
usage: python benchmarks/connect.py [--total N] [--block N] [--runs N] [--compare TREE]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ioctl_rate import compile_c, mounted

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLACEMENTS = (("pinned to CPU 0", ["taskset", "-c", "0"]), ("unpinned", []))
# Connections besides the benchmark's clients: headroom over the per-user limit.
SPARE_CONNECTIONS = 64


def run_once(binary: Path, tree: Path, mountpoint: Path, pin: list[str], total: int,
             block: int) -> list[tuple[int, int, int]]:
    """One daemon from `tree`, one bench_connect run: (last connection, cpu ns, wall ns) per block."""
    daemon = subprocess.Popen(
        [*pin, sys.executable, "-m", "kdbusfs", "-f", "-o", f"max_connections={total + SPARE_CONNECTIONS}",
         str(mountpoint)],
        cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not mounted(mountpoint):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon from {tree} did not mount")
            time.sleep(0.02)
        out = subprocess.run([*pin, str(binary), str(mountpoint), str(daemon.pid), str(total), str(block)],
                             check=True, capture_output=True, text=True, timeout=1200).stdout
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        daemon.terminate()
        daemon.wait(timeout=60)
    blocks = []
    for line in out.splitlines():
        _, _first, last, cpu, wall = line.split()
        blocks.append((int(last), int(cpu), int(wall)))
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=2000, help="clients connected in one run")
    parser.add_argument("--block", type=int, default=200, help="connections per measured block")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--compare", type=Path, help="another kdbusfs checkout to run alternately")
    parser.add_argument("--placements", default="pinned,unpinned", help="pinned, unpinned or both")
    args = parser.parse_args()
    trees = [("this tree", REPO)]
    if args.compare is not None:
        trees.insert(0, (f"{args.compare}", args.compare.resolve()))
    wanted = args.placements.split(",")
    placements = [(label, pin) for label, pin in PLACEMENTS if label.split()[0] in wanted]
    # results[placement][tree] = list of runs, each a list of blocks
    results: dict[str, dict[str, list[list[tuple[int, int, int]]]]] = {}
    with tempfile.TemporaryDirectory(prefix="kdbusfs-connect-") as tmp:
        work = Path(tmp)
        binary = compile_c("bench_connect", work)
        mountpoint = work / "kdbus"
        mountpoint.mkdir()
        for placement, pin in placements:
            per_tree: dict[str, list[list[tuple[int, int, int]]]] = {label: [] for label, _ in trees}
            for run in range(args.runs):
                # Alternate which tree goes first, so neither always meets a warmer machine.
                order = trees if run % 2 == 0 else list(reversed(trees))
                for label, tree in order:
                    per_tree[label].append(run_once(binary, tree, mountpoint, pin, args.total, args.block))
                    print(f"# {placement}, run {run + 1}/{args.runs}, {label}: done", file=sys.stderr)
            results[placement] = per_tree
    print(f"daemon CPU per fresh-process connection (open + LOOKUP + HELLO), µs, median of {args.runs} "
          f"runs; blocks of {args.block}\n")
    header = " | ".join(f"{placement}: {label}" for placement in results for label, _ in trees)
    print(f"| connections | {header} |")
    print("|---" * (1 + len(results) * len(trees)) + "|")
    lasts = [last for last, _, _ in next(iter(next(iter(results.values())).values()))[0]]
    for index, last in enumerate(lasts):
        first = lasts[index - 1] + 1 if index else 1
        size = last - first + 1
        cells = []
        for per_tree in results.values():
            for label, _ in trees:
                cells.append(f"{statistics.median(r[index][1] for r in per_tree[label]) / size / 1000:.0f}")
        print(f"| {first}-{last} | {' | '.join(cells)} |")
    rows = [(f"wall time to connect {args.total:,} clients, s", args.total),
            (f"daemon CPU for {args.total:,} connections, s", -1)]
    if args.total > 1000:
        rows.insert(0, ("wall time to connect 1,000 clients, s", 1000))
    for what, cutoff in rows:
        cells = []
        for per_tree in results.values():
            for label, _ in trees:
                if cutoff < 0:
                    value = statistics.median(sum(b[1] for b in r) for r in per_tree[label])
                else:
                    value = statistics.median(sum(b[2] for b in r if b[0] <= cutoff) for r in per_tree[label])
                cells.append(f"{value / 1e9:.2f}")
        print(f"| {what} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
