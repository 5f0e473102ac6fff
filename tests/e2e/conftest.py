"""Fixtures for end-to-end tests: real mounts, real C clients."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    Mount,
    as_user,
    compile_client,
    ensure_dev_fuse_usable_by_all,
    ensure_test_user,
    is_mounted,
    stage_runtime,
    start_daemon,
    user_python,
    wait_for,
    world_tempdir,
)

CLIENTS = ("foundation", "hostile", "holder", "messaging", "calls", "policy", "fds", "limits", "signals",
           "update", "endpoint", "pagelock", "namespaces", "scribble",
           "orphan", "items", "fuzz", "passfd", "killrecv", "waitcall")


def pytest_configure(config: pytest.Config) -> None:
    if shutil.which("gcc") is None:
        raise pytest.UsageError("end-to-end tests need gcc (apt-get install gcc)")
    if not os.path.exists("/dev/fuse"):
        raise pytest.UsageError("end-to-end tests need /dev/fuse")


@pytest.fixture(scope="session")
def bin_dir() -> Iterator[Path]:
    path = world_tempdir("kdbusfs-bin-")
    for name in CLIENTS:
        compile_client(name, path, ("-pthread",))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def root_mount(tmp_path: Path) -> Iterator[Mount]:
    """A fresh kdbusfs mounted by root (mount(2)), open to all users like /sys/fs/kdbus."""
    if os.geteuid() != 0:
        pytest.fail("the root-mount tests need root (CI runs as root)")
    # Other users must reach the mount point, as they reach /sys/fs/kdbus.
    parent = world_tempdir("kdbusfs-mnt-")
    mountpoint = parent / "kdbus"
    mountpoint.mkdir(mode=0o755)
    mount = start_daemon(mountpoint, tmp_path / "daemon.log")
    yield mount
    code = mount.stop()
    assert code == 0, f"daemon exited with {code}:\n{mount.log()}"
    assert not is_mounted(mountpoint)
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def test_user() -> str:
    if os.geteuid() != 0:
        pytest.fail("the unprivileged-user tests need root to create the user (CI runs as root)")
    ensure_test_user()
    ensure_dev_fuse_usable_by_all()
    from .harness import TEST_USER

    return TEST_USER


@pytest.fixture(scope="session")
def user_runtime(test_user: str) -> Iterator[Path]:
    root = world_tempdir("kdbusfs-runtime-")
    lib = stage_runtime(root)
    python = user_python()
    probe = subprocess.run(as_user(test_user, python, "-c", "import kdbusfs, trio, construct",
                                   env={"PYTHONPATH": str(lib)}), capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"user {test_user} cannot run {python} with the staged runtime: {probe.stderr}\n"
                    "Use a virtualenv made from the system python3 (see README).")
    yield lib
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def user_mount(test_user: str, user_runtime: Path) -> Iterator[Mount]:
    """A kdbusfs mounted by the unprivileged test user in its home, through fusermount3."""
    import pwd

    home = Path(pwd.getpwnam(test_user).pw_dir)
    mountpoint = home / "kdbus"
    if is_mounted(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    subprocess.run(as_user(test_user, "mkdir", "-p", str(mountpoint)), check=True)
    log_dir = world_tempdir("kdbusfs-userlog-")
    log_path = log_dir / "daemon.log"
    mount = start_daemon(mountpoint, log_path, env={"PYTHONPATH": str(user_runtime)},
                         python=user_python(), user=test_user)
    yield mount
    code = mount.stop()
    log = mount.log()
    shutil.rmtree(log_dir, ignore_errors=True)
    assert code == 0, f"daemon exited with {code}:\n{log}"
    wait_for(lambda: not is_mounted(mountpoint), what="user mount to go away")
