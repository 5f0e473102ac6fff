"""Broadcasts, matches, kernel notifications, monitors, activators and policy holders through a real
mount, driven by a C client."""

from __future__ import annotations

import pwd
from pathlib import Path

from .clients import run_client
from .harness import Mount


def test_broadcasts_matches_notifications_monitor_activator_policy(
    root_mount: Mount, bin_dir: Path, test_user: str,
) -> None:
    uid = pwd.getpwnam(test_user).pw_uid
    out = run_client(bin_dir / "signals", str(root_mount.path), str(uid))
    assert "signals: all checks passed" in out
    assert root_mount.alive()


def test_update_of_attach_flags_and_holder_policy(root_mount: Mount, bin_dir: Path, test_user: str) -> None:
    uid = pwd.getpwnam(test_user).pw_uid
    out = run_client(bin_dir / "update", str(root_mount.path), str(uid))
    assert "update: all checks passed" in out


def test_custom_endpoints_and_their_policy(root_mount: Mount, bin_dir: Path) -> None:
    out = run_client(bin_dir / "endpoint", str(root_mount.path))
    assert "endpoint: all checks passed" in out
    assert root_mount.alive()


def test_custom_endpoints_on_a_user_mount(user_mount: Mount, bin_dir: Path, test_user: str) -> None:
    out = run_client(bin_dir / "endpoint", str(user_mount.path), user=test_user)
    assert "endpoint: all checks passed" in out


def test_no_client_can_change_what_another_receives_on_root_mount(root_mount: Mount, bin_dir: Path) -> None:
    # The root mount's pools are memfds the client maps; a writable mapping cannot be refused, so
    # broadcasts, monitors and activator hand-overs must never copy out of a pool.
    out = run_client(bin_dir / "scribble", str(root_mount.path), "1000", timeout=180)
    assert "scribble: all checks passed" in out
    assert root_mount.alive()


def test_no_client_can_change_what_another_receives_on_user_mount(
    user_mount: Mount, bin_dir: Path, test_user: str,
) -> None:
    out = run_client(bin_dir / "scribble", str(user_mount.path), "1000", user=test_user, timeout=180)
    assert "scribble: all checks passed" in out
    assert user_mount.alive()
