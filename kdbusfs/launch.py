"""`kdbusfs run [--mount PATH] -- COMMAND [ARGS...]`: run an unmodified kdbus client so that the
descriptors passed in the messages it receives are installed in it.

The launcher puts itself under a seccomp filter that turns KDBUS_CMD_RECV and KDBUS_CMD_SEND
ioctls into notifications, hands the filter's listener to the daemon of one kdbusfs mount
(KDBUSFS_CMD_SUPERVISE on its `control`) and execs COMMAND, which inherits the filter, as does
everything it forks and execs. That daemon then serves those RECVs and SENDs itself
and installs the descriptors they receive (seccomp.py), handing those on another kdbusfs mount's
files to that mount's daemon (forward.py). 32-bit (and x32) callers are not filtered. Needs no
privileges: the filter comes with no_new_privs.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys

from . import seccomp
from .abi.constants import KDBUSFS_CMD_SUPERVISE, KDBUSFS_SUPERVISE
from .fuse.mount import mountinfo

FSTYPE = "fuse.kdbusfs"


def default_mount() -> str | None:
    """The system domain if it is mounted, else the user's own at ~/kdbus."""
    mounted = {m.point for m in mountinfo() if m.fstype == FSTYPE}
    for candidate in ("/sys/fs/kdbus", os.path.expanduser("~/kdbus")):
        if candidate in mounted:
            return candidate
    return None


def supervise(mount: str) -> None:
    """Put this process under the filter and hand its listener to `mount`'s daemon."""
    control = os.open(os.path.join(mount, "control"), os.O_RDWR | os.O_CLOEXEC)
    try:
        listener = seccomp.install_filter()
        try:
            command = KDBUSFS_SUPERVISE.pack(KDBUSFS_SUPERVISE.size, 0, listener)
            fcntl.ioctl(control, KDBUSFS_CMD_SUPERVISE, command)
        finally:
            os.close(listener)
    finally:
        os.close(control)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kdbusfs run", usage="kdbusfs run [--mount PATH] -- COMMAND [ARGS...]",
        description="Run COMMAND so that descriptors passed in the kdbus messages it receives on "
                    "the mount are installed in it.")
    parser.add_argument("--mount", metavar="PATH",
                        help="the kdbusfs mount whose messages carry descriptors "
                             "(default: /sys/fs/kdbus, else ~/kdbus)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    mount = os.path.abspath(args.mount) if args.mount else default_mount()
    if mount is None:
        parser.error("no kdbusfs mount at /sys/fs/kdbus or ~/kdbus; name one with --mount")
    try:
        supervise(mount)
    except OSError as exc:
        print(f"kdbusfs run: {mount}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"kdbusfs run: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
