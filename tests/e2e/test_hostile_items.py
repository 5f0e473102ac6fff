"""Hostile items and fuzzed ioctls against real mounts: kdbus's errnos, never a traceback.

`items` sends every item each command takes at wrong payload sizes (EINVAL, as kdbus's item
validation answers); `fuzz` issues random but structured ioctls from several connections while a
bystander pair keeps making synchronous calls and checks each answer. Either way the daemon's log
must hold no traceback and no ERROR line: a bad request costs its sender an errno and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path

from .clients import run_client
from .harness import Mount

# Short enough for the suite (a few seconds), long enough to reach every command many times.
FUZZ_IOCTLS = "30000"
FUZZ_THREADS = "4"
_ERROR_LINE = re.compile(r"\bERROR\b")


def assert_clean_log(mount: Mount) -> None:
    log = mount.log()
    assert "Traceback" not in log, log
    bad = [line for line in log.splitlines() if _ERROR_LINE.search(line)]
    assert not bad, "\n".join(bad)
    assert mount.alive()


def test_wrong_item_sizes_get_einval_on_root_mount(root_mount: Mount, bin_dir: Path) -> None:
    out = run_client(bin_dir / "items", str(root_mount.path))
    assert "items: " in out and "all checks passed" in out
    assert "HELLO: PIDS at" in out and "HELLO: CREDS at" in out and "HELLO: SECLABEL at" in out
    assert_clean_log(root_mount)


def test_wrong_item_sizes_get_einval_on_user_mount(user_mount: Mount, bin_dir: Path, test_user: str) -> None:
    out = run_client(bin_dir / "items", str(user_mount.path), user=test_user)
    assert "all checks passed" in out
    assert_clean_log(user_mount)


def test_fuzzed_ioctls_on_root_mount(root_mount: Mount, bin_dir: Path) -> None:
    out = run_client(bin_dir / "fuzz", str(root_mount.path), FUZZ_IOCTLS, "1", FUZZ_THREADS, timeout=120)
    assert "fuzz: all checks passed" in out, out
    assert_clean_log(root_mount)


def test_fuzzed_ioctls_on_user_mount(user_mount: Mount, bin_dir: Path, test_user: str) -> None:
    out = run_client(bin_dir / "fuzz", str(user_mount.path), FUZZ_IOCTLS, "2", FUZZ_THREADS, user=test_user,
                     timeout=120)
    assert "fuzz: all checks passed" in out, out
    assert_clean_log(user_mount)
