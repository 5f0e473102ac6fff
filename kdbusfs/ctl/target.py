"""Which bus kdbusctl talks to, and connecting to it with errors a user can act on.

Without a choice: the system bus /sys/fs/kdbus/0-system/bus if it exists, else the user's own
~/kdbus/<uid>-user/bus. `--bus` takes a path (a `bus` file, a bus directory) or a bus name looked
up in a domain (`--root`, else /sys/fs/kdbus, else ~/kdbus), with or without its "<uid>-" prefix.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..client import CommandError, Connection, Kind

SYSTEM_ROOT = Path("/sys/fs/kdbus")
SYSTEM_BUS_NAME = "0-system"


class CtlError(Exception):
    """A failure kdbusctl reports as one line (and exits non-zero)."""


def user_root() -> Path:
    return Path(os.path.expanduser("~")) / "kdbus"


def system_bus() -> Path:
    return SYSTEM_ROOT / SYSTEM_BUS_NAME / "bus"


def user_bus() -> Path:
    return user_root() / f"{os.geteuid()}-user" / "bus"


def _present(path: Path) -> bool:
    """Whether `path` exists; one this user may not look at counts (opening it says more)."""
    try:
        path.stat()
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _is_domain(path: Path) -> bool:
    return _present(path / "control")


def default_root() -> Path:
    """The domain a bus name or make-bus refers to when --root is not given."""
    for root in (SYSTEM_ROOT, user_root()):
        if _is_domain(root):
            return root
    raise CtlError(f"no kdbus domain at {SYSTEM_ROOT} or {user_root()}; mount one (kdbusfs(1)) or "
                   "name it with --root")


def domain_root(root: str | None) -> Path:
    if root is None:
        return default_root()
    path = Path(root)
    if not _is_domain(path):
        raise CtlError(f"{path} is not a kdbus domain (no control file there)")
    return path


def buses_in(root: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in root.iterdir() if _present(entry / "bus"))
    except OSError:
        return []


def _bus_named(root: Path, name: str) -> Path:
    for candidate in (name, f"{os.geteuid()}-{name}", f"0-{name}"):
        path = root / candidate / "bus"
        if _present(path):
            return path
    known = ", ".join(buses_in(root)) or "none"
    raise CtlError(f"no bus '{name}' in {root} (buses there: {known})")


def _bus_at(path: Path) -> Path:
    try:
        mode = path.stat().st_mode
    except PermissionError:
        raise CtlError(f"may not open the bus {path}: permission denied") from None
    except OSError as exc:
        raise CtlError(f"no bus at {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        return path
    if _present(path / "bus"):
        return path / "bus"
    if _is_domain(path):
        known = ", ".join(buses_in(path)) or "none"
        raise CtlError(f"{path} is a kdbus domain, not a bus; name one of its buses ({known}), "
                       f"e.g. --bus {path}/NAME")
    raise CtlError(f"{path} is not a kdbus bus (no bus file in it)")


def find_bus(bus: str | None, root: str | None = None, system: bool = False, user: bool = False) -> Path:
    """The endpoint file the options name."""
    if system:
        return _bus_at(system_bus())
    if user:
        return _bus_at(user_bus())
    if bus is None:
        if root is not None:
            return _bus_named(domain_root(root), SYSTEM_BUS_NAME if os.geteuid() == 0 else "user")
        for candidate in (system_bus(), user_bus()):
            if _present(candidate):
                return candidate
        raise CtlError(f"no bus found: neither {system_bus()} nor {user_bus()} exists; choose one with "
                       "--bus PATH")
    if "/" in bus:
        return _bus_at(Path(bus))
    return _bus_named(domain_root(root), bus)


def connect(endpoint: Path, *, kind: Kind = Kind.ORDINARY, attach_flags_recv: int = 0,
            pool_size: int = 8 * 1024 * 1024) -> Connection:
    """A connection to the bus at `endpoint`, with errors saying what went wrong where."""
    try:
        return Connection.hello(endpoint, kind=kind, description="kdbusctl",
                                attach_flags_recv=attach_flags_recv, pool_size=pool_size)
    except CommandError as exc:
        if exc.errno == errno.EPERM and kind is not Kind.ORDINARY:
            raise CtlError(f"a {kind.name.lower()} connection to {endpoint} needs bus owner rights "
                           "(the bus creator's user, or CAP_IPC_OWNER)") from None
        raise CtlError(f"cannot connect to {endpoint}: {exc}") from None
    except PermissionError:
        raise CtlError(f"may not open the bus {endpoint}: permission denied") from None
    except FileNotFoundError:
        raise CtlError(f"no bus at {endpoint}") from None
    except OSError as exc:
        if exc.errno == errno.ENOTTY:
            raise CtlError(f"{endpoint} is not a kdbus bus") from None
        if exc.errno == errno.ENOTCONN:
            raise CtlError(f"{endpoint}: the mount's daemon is gone (fusermount3 -u the mount point, "
                           "then mount it again)") from None
        raise CtlError(f"cannot open {endpoint}: {exc.strerror or exc}") from None
