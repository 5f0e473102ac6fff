"""`kdbusfs install-helpers`: put the mount(8)/umount(8) helpers, systemd units and man pages where
mount(8), systemd and man look, pointing them at this installation's `kdbusfs` command."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

# (file in mount-helper/ or man/, installed paths relative to the root, mode)
FILES = (
    ("mount-helper/mount.kdbusfs", ("sbin/mount.fuse.kdbusfs", "sbin/mount.kdbusfs"), 0o755),
    ("mount-helper/umount.kdbusfs", ("sbin/umount.fuse.kdbusfs", "sbin/umount.kdbusfs"), 0o755),
    ("mount-helper/sys-fs-kdbus.mount", ("etc/systemd/system/sys-fs-kdbus.mount",), 0o644),
    ("mount-helper/kdbusfs.service", ("etc/systemd/user/kdbusfs.service",), 0o644),
    # An example to copy, not a unit to enable: documentation.
    ("mount-helper/kdbus-client.service", ("usr/local/share/doc/kdbusfs/kdbus-client.service",), 0o644),
    # Drop-ins for classic D-Bus clients (they replace dbus-daemon, so they are not installed live).
    ("mount-helper/classic-system-bus.conf", ("usr/local/share/doc/kdbusfs/classic-system-bus.conf",), 0o644),
    ("mount-helper/classic-session-bus.conf", ("usr/local/share/doc/kdbusfs/classic-session-bus.conf",),
     0o644),
    ("man/kdbusfs.1", ("usr/local/share/man/man1/kdbusfs.1",), 0o644),
    ("man/kdbusctl.1", ("usr/local/share/man/man1/kdbusctl.1",), 0o644),
    ("man/kdbusfs.7", ("usr/local/share/man/man7/kdbusfs.7",), 0o644),
    ("man/mount.kdbusfs.8", ("usr/local/share/man/man8/mount.kdbusfs.8",),
     0o644),
)


def source_dir() -> Path:
    """The checkout the package runs from, or the data files a wheel installed."""
    for candidate in (Path(__file__).resolve().parents[1], Path(sys.prefix) / "share" / "kdbusfs"):
        if (candidate / "mount-helper" / "mount.kdbusfs").is_file():
            return candidate
    raise SystemExit("kdbusfs: cannot find the mount-helper/ and man/ files of this installation")


def kdbusfs_command() -> str:
    beside = Path(sys.executable).parent / "kdbusfs"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kdbusfs")
    if found:
        return os.path.abspath(found)
    raise SystemExit("kdbusfs: the kdbusfs command is not installed (pip install kdbusfs first)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kdbusfs install-helpers", description=__doc__)
    parser.add_argument("--root", default="/", help="install below this directory (default /)")
    parser.add_argument("--kdbusfs", help="the command the helpers and units run (default: this one)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    command = args.kdbusfs or kdbusfs_command()
    source = source_dir()
    for name, targets, mode in FILES:
        text = (source / name).read_text().replace("@KDBUSFS@", command)
        for target in targets:
            path = root / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(mode)
            print(f"installed {path}")
    return 0
