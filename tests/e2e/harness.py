"""Test helpers: mount a fresh kdbusfs, compile C clients, run things as an unprivileged user.

Everything here talks to the real kernel: /dev/fuse, mount(2) or fusermount3, gcc-built clients.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
C_DIR = Path(__file__).resolve().parent / "c"
INCLUDE = REPO / "include"
TEST_USER = "kdbusfs-test"
# Modules the daemon imports, copied for a user who cannot read the test runner's environment.
RUNTIME_MODULES = ("kdbusfs", "trio", "construct", "outcome", "sniffio", "sortedcontainers", "idna",
                   "attr", "attrs")


def compile_client(name: str, out_dir: Path, extra: tuple[str, ...] = ()) -> Path:
    source = C_DIR / f"{name}.c"
    binary = out_dir / name
    cmd = ["gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE}", f"-I{C_DIR}",
           "-o", str(binary), str(source), *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    binary.chmod(0o755)
    return binary


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def fstype_of(path: Path) -> str | None:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                return fields[fields.index("-") + 1]
    return None


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class Mount:
    """A kdbusfs daemon in the foreground and the mount it serves."""

    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    user: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM the daemon: it must unmount and exit 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if is_mounted(self.path):
            force_unmount(self.path)
        return self.process.returncode


def force_unmount(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
    else:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def start_daemon(mountpoint: Path, log_path: Path, extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, python: str = sys.executable,
                 user: str | None = None) -> Mount:
    """Run `kdbusfs -f` (as `user` if given: signals then reach the daemon itself)."""
    log = open(log_path, "wb")
    cmd = [python, "-m", "kdbusfs", "-f", *extra, str(mountpoint)]
    identity: dict[str, object] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env = {"HOME": entry.pw_dir, "USER": user, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               **(env or {})}
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=env, cwd="/", **identity)  # type: ignore[call-overload]
    log.close()
    mount = Mount(mountpoint, process, log_path, user)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"kdbusfs exited with {process.returncode}:\n{mount.log()}")
        return is_mounted(mountpoint)

    wait_for(ready, what=f"kdbusfs mounted at {mountpoint}")
    return mount


def ensure_test_user() -> pwd.struct_passwd:
    """An unprivileged user with a home, created on first use (needs root)."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", TEST_USER], check=True)
        return pwd.getpwnam(TEST_USER)


def ensure_dev_fuse_usable_by_all() -> None:
    # Debian's udev rule makes /dev/fuse 0666; machines without udev leave it 0600, which stops
    # fusermount3 for everyone but root.
    if os.stat("/dev/fuse").st_mode & 0o777 != 0o666:
        os.chmod("/dev/fuse", 0o666)


def stage_runtime(dest: Path) -> Path:
    """Copy the daemon's modules where any user can read them; returns the PYTHONPATH entry."""
    lib = dest / "lib"
    lib.mkdir(parents=True)
    for name in RUNTIME_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            source = Path(next(iter(spec.submodule_search_locations)))
            shutil.copytree(source, lib / source.name,
                            ignore=shutil.ignore_patterns("__pycache__", "tests"))
        elif spec.origin:
            shutil.copy2(spec.origin, lib)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return lib


def user_python() -> str:
    """The interpreter, if the test user may run it (a venv's python resolves to the system one)."""
    return os.path.realpath(sys.executable)


def as_user(user: str, *cmd: str, env: dict[str, str] | None = None) -> list[str]:
    env_args = [f"{k}={v}" for k, v in (env or {}).items()]
    return ["runuser", "-u", user, "--", "env", *env_args, *cmd]


def world_tempdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path
