"""The classic endpoint's listening socket: made before the mount, so that a path another bus
listens on stops the mount early instead of leaving it half made."""

from __future__ import annotations

import errno
import os
import socket
import stat

from .. import limits


def listen(path: str, mode: int) -> socket.socket:
    """A listening unix socket at `path`, its directory made if missing. A stale socket there is
    replaced; one something listens on (dbus-daemon, another kdbusfs) is an error."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            if _listened_on(path):
                raise OSError(errno.EADDRINUSE, f"{path}: another bus listens there (stop it first)")
            os.unlink(path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(limits.CLASSIC_LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno or errno.EINVAL, f"cannot listen on {path}: {exc.strerror}") from None
    return sock


def _listened_on(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True
