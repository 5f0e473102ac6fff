"""The `kdbusfs` command.

    kdbusfs [-f] [-d] [-o OPTIONS] [SOURCE] MOUNTPOINT   mount a kdbus domain (FUSE conventions)
    kdbusfs -u MOUNTPOINT                                unmount it (and what it laid over /sys/fs)
    kdbusfs install-helpers [--root DIR]                 install mount(8) helpers, units, man pages
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import logging.handlers
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from . import __version__, compiled, install, launch, sysfs
from .abi.walk import validate_sysname
from .bus.domain import Domain, DomainLimits
from .classic.endpoint import ClassicEndpoint, default_bus_name
from .classic.listening import listen
from .errors import KdbusError
from .forward import Inbox
from .fs import Filesystem
from .fuse import mount as fuse_mount
from .fuse.session import Session
from .host.backing import PoolFiles
from .host.mounts import mount_device
from .limits import SPIN_BEFORE_SLEEP_US

log = logging.getLogger("kdbusfs")

# Options mount(8), fstab and systemd pass along that mean nothing to a kdbusfs instance.
IGNORED_OPTIONS = frozenset({
    "rw", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "owner", "group",
    "defaults", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
    "default_permissions", "async", "sync",
})
IGNORED_PREFIXES = ("x-", "comment=", "fsname=", "subtype=", "helper=", "uhelper=")

OPTIONS_HELP = """\
mount options (-o, comma-separated):
  allow_other          let other users in (the default when root mounts)
  noallow_other        only the mounting user (the default for user mounts)
  uid=N, gid=N         owner of the domain's root directory and control node
  max_pool_size=BYTES  largest pool a connection may ask for (default 1 GiB)
  max_connections=N    live connections per user (kdbus: 1024)
  max_buses=N          buses per user (kdbus: 16)
  dbus_socket=PATH     also serve classic D-Bus clients on the unix socket PATH, on the bus
                       <uid>-system (root) or <uid>-user (others), made if absent
  dbus_bus=NAME        the bus dbus_socket serves instead: <uid>-NAME
  spin_us=N            microseconds the daemon keeps looking for the next request before it
                       sleeps, when it may run on more than one CPU (default 30; 0: never)
  mount(8) options such as rw, nosuid, nodev, noexec, noauto, nofail, _netdev, user and x-* are
  accepted and ignored; anything else is refused.
"""


@dataclass(frozen=True, slots=True)
class Options:
    allow_other: bool
    uid: int
    gid: int
    limits: DomainLimits = field(default_factory=DomainLimits)
    # The classic D-Bus endpoint: its socket, and the bus it serves (None: the default name).
    dbus_socket: str | None = None
    dbus_bus: str | None = None
    # How long the serving loop spins before it sleeps (limits.SPIN_BEFORE_SLEEP_US).
    spin_us: int = SPIN_BEFORE_SLEEP_US


class UsageError(Exception):
    pass


def _number(option: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise UsageError(f"mount option '{option}' needs a number, not '{value}'") from None
    if number < minimum:
        raise UsageError(f"mount option '{option}' must be at least {minimum}")
    return number


def _bus_suffix(name: str) -> str:
    """NAME of dbus_bus=NAME, if `<euid>-NAME` is a name BUS_MAKE takes (kdbus's rule for names
    that become files: ASCII letters, digits and '_', inner '-' and '.', at most 63 in all)."""
    bus = f"{os.geteuid()}-{name}"
    try:
        validate_sysname(bus.encode() + b"\0")
    except KdbusError as exc:
        why = exc.why if name.isascii() else "not ASCII"  # exc.why would name a byte of UTF-8
        raise UsageError(f"mount option 'dbus_bus': '{name}' cannot name the bus '{bus}' ({why}); "
                         "use ASCII letters, digits, '_', and '-' or '.' inside") from None
    return name


def parse_options(values: list[str], as_root: bool, uid: int | None = None,
                  gid: int | None = None) -> Options:
    # A system-wide mount is for every user, as /sys/fs/kdbus was; a user's mount is the user's own.
    allow_other = as_root
    owner = [os.getuid() if uid is None else uid, os.getgid() if gid is None else gid]
    limits = {}
    classic: dict[str, str] = {}
    spin_us = SPIN_BEFORE_SLEEP_US
    for value in values:
        for option in filter(None, value.split(",")):
            key, _, argument = option.partition("=")
            if option == "allow_other":
                allow_other = True
            elif option == "noallow_other":
                allow_other = False
            elif key in ("uid", "gid") and argument:
                owner[key == "gid"] = _number(key, argument)
            elif key == "max_pool_size" and argument:
                limits["max_pool_size"] = _number(key, argument, 4096)
            elif key == "max_connections" and argument:
                limits["max_connections"] = _number(key, argument, 1)
            elif key == "max_buses" and argument:
                limits["max_buses"] = _number(key, argument, 1)
            elif key == "dbus_socket" and argument:
                classic["dbus_socket"] = os.path.abspath(argument)
            elif key == "dbus_bus" and argument:
                classic["dbus_bus"] = _bus_suffix(argument)
            elif key == "spin_us" and argument:
                spin_us = _number(key, argument)
            elif option in IGNORED_OPTIONS or option.startswith(IGNORED_PREFIXES):
                continue
            else:
                raise UsageError(f"unknown mount option '{option}' (see kdbusfs -h)")
    if "dbus_bus" in classic and "dbus_socket" not in classic:
        raise UsageError("mount option 'dbus_bus' needs 'dbus_socket' too")
    return Options(allow_other, owner[0], owner[1], DomainLimits(**limits), spin_us=spin_us, **classic)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdbusfs",
        usage="kdbusfs [-f] [-d] [-o OPTIONS] [SOURCE] MOUNTPOINT\n"
              "       kdbusfs -u MOUNTPOINT\n"
              "       kdbusfs install-helpers [--root DIR]\n"
              "       kdbusfs run [--mount PATH] -- COMMAND [ARGS...]",
        description="Mount a kdbus domain (control node, buses, endpoints) at MOUNTPOINT.",
        epilog=OPTIONS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-f", dest="foreground", action="store_true", help="stay in the foreground")
    parser.add_argument("-d", dest="debug", action="store_true",
                        help="log every request (implies -f)")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                        help="comma-separated mount options (below)")
    parser.add_argument("-u", dest="unmount", action="store_true",
                        help="unmount MOUNTPOINT and wait until its daemon has cleaned up")
    parser.add_argument("-V", "--version", action="version", version=_version())
    parser.add_argument("paths", nargs="+", metavar="[SOURCE] MOUNTPOINT")
    return parser


def _version() -> str:
    """The version, and which compiled modules this installation loads (and from where)."""
    lines = [f"kdbusfs {__version__}"]
    lines += [f"  compiled {name}: {where}" for name, where in compiled.built()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["install-helpers"]:
        return install.main(argv[1:])
    if argv[:1] == ["run"]:
        return launch.main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.paths) > 2 or (args.unmount and len(args.paths) != 1):
        parser.error("too many arguments")
    source = args.paths[0] if len(args.paths) == 2 else "kdbusfs"
    mountpoint = os.path.abspath(args.paths[-1])
    if args.unmount:
        return unmount(mountpoint)
    try:
        options = parse_options(args.options, os.geteuid() == 0)
    except UsageError as exc:
        parser.error(str(exc))
    foreground = args.foreground or args.debug
    if foreground:
        _log_to_stderr(args.debug)
        try:
            run(mountpoint, source, options, args.debug)
        except fuse_mount.MountError as exc:
            print(f"kdbusfs: {exc}", file=sys.stderr)
            return 1
        return 0
    return _daemonize(mountpoint, source, options)


def unmount(mountpoint: str) -> int:
    """Unmount, then wait (a few seconds at most) for the daemon to remove its /sys/fs overlay."""
    try:
        fuse_mount.unmount(mountpoint, lazy=False)
    except fuse_mount.MountError as exc:
        print(f"kdbusfs: {exc}", file=sys.stderr)
        return 1
    if os.path.dirname(mountpoint) == sysfs.SYS_FS:
        deadline = time.monotonic() + 5
        while sysfs.overlay_present() and time.monotonic() < deadline:
            time.sleep(0.02)
        if sysfs.overlay_present():
            sysfs.Overlay().remove()
    return 0


def _log_to_stderr(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="kdbusfs[%(process)d]: %(levelname)s: %(name)s: %(message)s",
    )


def _daemonize(mountpoint: str, source: str, options: Options) -> int:
    """Fork; the parent returns once the child's mount is ready (or reports why it is not)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            status = pipe.read()
        if status == b"ok":
            return 0
        print(f"kdbusfs: {status.decode(errors='replace') or 'daemon died before mounting'}",
              file=sys.stderr)
        return 1
    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _log_to_syslog()

    def ready() -> None:
        os.write(write_end, b"ok")
        os.close(write_end)

    code = 0
    try:
        run(mountpoint, source, options, False, ready)
    except BaseException as exc:  # report anything to the waiting parent
        try:
            os.write(write_end, str(exc).encode() or type(exc).__name__.encode())
        except OSError:
            pass
        log.error("%s", exc)
        code = 1
    os._exit(code)


def _log_to_syslog() -> None:
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    if os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("kdbusfs[%(process)d]: %(message)s"))
        root.addHandler(handler)
    else:
        root.addHandler(logging.NullHandler())


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _raise_fd_limit() -> None:
    """Each connection holds a descriptor or two in the daemon (its pool's memfd): allow as many
    as the hard limit permits, not the usual soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(mountpoint: str, source: str, options: Options, debug: bool,
        ready: Callable[[], None] | None = None) -> None:
    # Hold SIGINT/SIGTERM until the session listens for them: one arriving while the mount comes up
    # must unmount it cleanly, not kill the daemon and leave a stale mount behind.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    _raise_fd_limit()
    fuse_mount.check_mountpoint(mountpoint)
    # The classic socket first: a path it cannot take must stop the mount, not leave it stale.
    listener = None
    if options.dbus_socket is not None:
        try:
            listener = listen(options.dbus_socket, 0o666 if options.allow_other else 0o600)
        except OSError as exc:
            raise fuse_mount.MountError(f"dbus_socket: {exc.strerror or exc}") from None
    overlay = sysfs.make_room(mountpoint)
    try:
        fd = fuse_mount.mount(mountpoint, source, "kdbusfs", options.allow_other)
    except BaseException:
        if overlay is not None:
            overlay.remove()
        if listener is not None and options.dbus_socket is not None:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(options.dbus_socket)
        raise
    domain = Domain(uid=options.uid, gid=options.gid, limits=options.limits)
    fs = Filesystem(domain, device=mount_device(mountpoint), pool_files=PoolFiles(fd))
    log.info("serving %s (allow_other=%s)", mountpoint, options.allow_other)
    endpoint = None
    try:
        if options.dbus_socket is not None and listener is not None:
            bus = options.dbus_bus or default_bus_name(os.geteuid())
            endpoint = ClassicEndpoint(fs, listener, options.dbus_socket, bus)
        # Everything built so far (modules, classes, the tables) lives as long as the daemon: keep it
        # out of the collector's full passes, whose cost otherwise lands on whichever request runs one.
        gc.freeze()
        trio.run(_serve_until_signal, fd, fs, mountpoint, debug, ready, endpoint, options.spin_us)
    finally:
        if endpoint is not None:
            endpoint.close()
        fs.shutdown()
        os.close(fd)
        if overlay is not None:
            overlay.remove()


async def _serve_until_signal(fd: int, fs: Filesystem, mountpoint: str, debug: bool,
                              ready: Callable[[], None] | None, endpoint: ClassicEndpoint | None,
                              spin_us: int) -> None:
    """Trio keeps the edge (signals, unmounting); the session serves on a thread of its own."""
    session = Session(fd, fs, ready, debug, inbox=Inbox.open(fs.device), spin_us=spin_us)
    if endpoint is not None:
        endpoint.attach(session)
    try:
        await _serve_session(session, mountpoint)
    finally:
        if endpoint is not None:
            endpoint.detach()
        session.close()


async def _serve_session(session: Session, mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        async def on_signal() -> None:
            with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
                async for signum in signals:
                    log.info("signal %d: unmounting %s", signum, mountpoint)
                    try:
                        await trio.to_thread.run_sync(fuse_mount.unmount, mountpoint)
                    except fuse_mount.MountError as exc:
                        log.warning("%s", exc)
                    # A lazy unmount leaves the connection up while files are open: stop anyway.
                    session.stop()
                    return

        nursery.start_soon(on_signal)
        await trio.to_thread.run_sync(session.run)
        nursery.cancel_scope.cancel()
