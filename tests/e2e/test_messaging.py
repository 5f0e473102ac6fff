"""Messaging and the name registry through real mounts, driven by C clients."""

from __future__ import annotations

import pwd
from pathlib import Path

from .clients import run_client
from .harness import Mount


def test_unicast_calls_names_on_root_mount(root_mount: Mount, bin_dir: Path) -> None:
    out = run_client(bin_dir / "messaging", str(root_mount.path))
    assert "messaging: all checks passed" in out


def test_unicast_calls_names_on_user_mount(user_mount: Mount, bin_dir: Path, test_user: str) -> None:
    out = run_client(bin_dir / "messaging", str(user_mount.path), user=test_user)
    assert "messaging: all checks passed" in out


def test_sync_call_edges_and_quotas_on_root_mount(root_mount: Mount, bin_dir: Path) -> None:
    out = run_client(bin_dir / "calls", str(root_mount.path))
    assert "calls: all checks passed" in out
    assert root_mount.alive()


def test_sync_call_edges_and_quotas_on_user_mount(user_mount: Mount, bin_dir: Path, test_user: str) -> None:
    out = run_client(bin_dir / "calls", str(user_mount.path), user=test_user)
    assert "calls: all checks passed" in out
    assert user_mount.alive()


def test_default_policy_between_users(root_mount: Mount, bin_dir: Path, test_user: str) -> None:
    uid = pwd.getpwnam(test_user).pw_uid
    out = run_client(bin_dir / "policy", str(root_mount.path), str(uid))
    assert "policy: all checks passed" in out


def test_fd_passing_checks_and_cancel_fd_on_root_mount(root_mount: Mount, bin_dir: Path) -> None:
    out = run_client(bin_dir / "fds", str(root_mount.path))
    assert "fds: all checks passed" in out
    assert root_mount.alive()


def test_fd_passing_checks_and_cancel_fd_on_user_mount(user_mount: Mount, bin_dir: Path,
                                                       test_user: str) -> None:
    out = run_client(bin_dir / "fds", str(user_mount.path), user=test_user)
    assert "fds: all checks passed" in out


def test_pool_bytes_stay_right_while_the_client_evicts_and_rereads_them(
    user_mount: Mount, bin_dir: Path, test_user: str,
) -> None:
    # A user mount pushes pool bytes with NOTIFY_STORE while the client keeps its pages going out
    # of and back into the page cache (READs in flight); every message must arrive intact and the
    # daemon must not stall.
    out = run_client(bin_dir / "pagelock", str(user_mount.path), user=test_user, timeout=120)
    assert "pagelock: all checks passed" in out


def test_metadata_is_seen_through_the_receivers_namespaces(root_mount: Mount, bin_dir: Path) -> None:
    # User, pid and mount namespaces: ids mapped or overflowed, pids hidden, capabilities by the
    # namespace creator rule, EXE only between equal roots.
    out = run_client(bin_dir / "namespaces", str(root_mount.path))
    assert "namespaces: all checks passed" in out
    assert root_mount.alive()


def test_a_thread_whose_leader_exited_passes_fds_on_root_mount(root_mount: Mount, bin_dir: Path) -> None:
    out = run_client(bin_dir / "orphan", str(root_mount.path))
    assert "orphan: all checks passed" in out


def test_a_thread_whose_leader_exited_passes_fds_on_user_mount(
    user_mount: Mount, bin_dir: Path, test_user: str,
) -> None:
    out = run_client(bin_dir / "orphan", str(user_mount.path), user=test_user)
    assert "orphan: all checks passed" in out
