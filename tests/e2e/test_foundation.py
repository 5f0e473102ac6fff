"""The foundation through real mounts: C clients that know only the kdbus ABI."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

from .clients import Holder, run_client
from .harness import Mount, as_user, is_mounted, wait_for


def test_foundation_flow_on_root_mount(root_mount: Mount, bin_dir: Path) -> None:
    out = run_client(bin_dir / "foundation", str(root_mount.path))
    assert "foundation: all checks passed" in out


def test_foundation_flow_as_user_on_root_mount(root_mount: Mount, bin_dir: Path, test_user: str) -> None:
    # /sys/fs/kdbus is for everyone: control is 0666 and the bus gets the user's uid prefix.
    out = run_client(bin_dir / "foundation", str(root_mount.path), user=test_user)
    assert "foundation: all checks passed" in out


def test_foundation_flow_on_user_mount(user_mount: Mount, bin_dir: Path, test_user: str) -> None:
    out = run_client(bin_dir / "foundation", str(user_mount.path), user=test_user)
    assert "foundation: all checks passed" in out
    assert user_mount.alive()


def test_hostile_input_gets_errnos_and_others_keep_working(root_mount: Mount, bin_dir: Path) -> None:
    with Holder(bin_dir / "holder", root_mount.path, "+bystander") as bystander:
        out = run_client(bin_dir / "hostile", str(root_mount.path))
        assert "hostile: all checks passed" in out
        assert bystander.ask("creator") == f"ok {bystander.bus}"
        assert bystander.ask(f"info {bystander.id}") == f"ok {bystander.id} 0"
    assert root_mount.alive()


def test_hostile_input_on_user_mount(user_mount: Mount, bin_dir: Path, test_user: str) -> None:
    with Holder(bin_dir / "holder", user_mount.path, "+bystander", user=test_user) as bystander:
        run_client(bin_dir / "hostile", str(user_mount.path), user=test_user)
        assert bystander.ask("creator") == f"ok {bystander.bus}"
    assert user_mount.alive()


def test_killed_client_is_disconnected_before_its_parent_sees_it_die(
    root_mount: Mount, bin_dir: Path
) -> None:
    holder = bin_dir / "holder"
    with Holder(holder, root_mount.path, "+kill") as owner:
        victim = Holder(holder, root_mount.path, owner.bus)
        assert owner.ask(f"info {victim.id}") == f"ok {victim.id} 0"
        assert owner.ask("list") == f"ok {owner.id} {victim.id}" or owner.ask("list") == \
            f"ok {victim.id} {owner.id}"
        victim.kill()
        assert owner.ask(f"info {victim.id}") == f"errno {errno.ENXIO}"
        assert owner.ask("list") == f"ok {owner.id}"


def test_closing_the_bus_owner_disconnects_everyone(root_mount: Mount, bin_dir: Path) -> None:
    holder = bin_dir / "holder"
    with Holder(holder, root_mount.path, "+owned") as owner:
        with Holder(holder, root_mount.path, owner.bus) as peer:
            assert owner.ask("close") == "ok"
            assert peer.ask("creator") == f"errno {errno.ECONNRESET}"
            assert not (root_mount.path / owner.bus).exists()
            assert peer.ask("byebye") == f"errno {errno.ECONNRESET}"


def test_byebye_then_every_command_is_connreset(root_mount: Mount, bin_dir: Path) -> None:
    with Holder(bin_dir / "holder", root_mount.path, "+bye") as conn:
        assert conn.ask("byebye") == "ok"
        assert conn.ask("creator") == f"errno {errno.ECONNRESET}"
        assert conn.ask(f"info {conn.id}") == f"errno {errno.ECONNRESET}"


def test_tree_listing_modes_and_ownership(root_mount: Mount, bin_dir: Path, test_user: str) -> None:
    with Holder(bin_dir / "holder", root_mount.path, "+tree") as owner:
        root = root_mount.path
        assert sorted(os.listdir(root)) == sorted(["control", owner.bus])
        # The default endpoint, and the bus's statistics (its owner's and root's to read).
        assert sorted(os.listdir(root / owner.bus)) == ["bus", "stats"]
        assert stat.S_IMODE(os.stat(root / owner.bus / "stats").st_mode) == 0o400
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o555
        assert stat.S_IMODE(os.stat(root / "control").st_mode) == 0o666
        assert stat.S_IMODE(os.stat(root / owner.bus).st_mode) == 0o500
        assert stat.S_IMODE(os.stat(root / owner.bus / "bus").st_mode) == 0o600
        # A bus made without ACCESS_WORLD is closed to other users: the kernel says EACCES.
        denied = subprocess.run(as_user(test_user, "ls", str(root / owner.bus)),
                                capture_output=True, text=True)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        assert os.statvfs(root).f_namemax == 255


def test_user_mount_is_private_to_its_user(user_mount: Mount) -> None:
    # Without allow_other, FUSE refuses everyone else, root included.
    try:
        os.stat(user_mount.path / "control")
    except PermissionError:
        pass
    else:
        raise AssertionError("root could look into a user's private mount")


def test_background_mode_returns_when_ready_and_exits_on_umount(tmp_path: Path) -> None:
    mountpoint = tmp_path / "bg"
    mountpoint.mkdir()
    proc = subprocess.run([sys.executable, "-m", "kdbusfs", str(mountpoint)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert is_mounted(mountpoint)
    assert (mountpoint / "control").exists()
    daemons = _daemons_serving(mountpoint)
    assert len(daemons) == 1
    subprocess.run(["umount", str(mountpoint)], check=True)
    wait_for(lambda: not _daemons_serving(mountpoint), what="the daemon to exit after umount")


def test_background_user_mount_and_fusermount_unmount(test_user: str, user_runtime: Path) -> None:
    import pwd

    mountpoint = Path(pwd.getpwnam(test_user).pw_dir) / "kdbus-bg"
    subprocess.run(as_user(test_user, "mkdir", "-p", str(mountpoint)), check=True)
    env = {"PYTHONPATH": str(user_runtime)}
    python = os.path.realpath(sys.executable)
    proc = subprocess.run(as_user(test_user, python, "-m", "kdbusfs", str(mountpoint), env=env),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert is_mounted(mountpoint)
    subprocess.run(as_user(test_user, "fusermount3", "-u", str(mountpoint)), check=True)
    wait_for(lambda: not _daemons_serving(mountpoint), what="the user's daemon to exit")


def test_command_line(tmp_path: Path) -> None:
    version = subprocess.run([sys.executable, "-m", "kdbusfs", "-V"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("kdbusfs ")
    usage = subprocess.run([sys.executable, "-m", "kdbusfs", "-h"], capture_output=True, text=True)
    assert usage.returncode == 0 and "MOUNTPOINT" in usage.stdout
    bad = subprocess.run([sys.executable, "-m", "kdbusfs", "-o", "frobnicate", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown mount option 'frobnicate'" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "kdbusfs", "-f", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "nope" in missing.stderr


def _daemons_serving(mountpoint: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"kdbusfs" in argv and str(mountpoint).encode() in argv:
            found.append(int(entry))
    return found


def test_close_is_visible_at_once_even_after_a_thousand_connections_left(
    root_mount: Mount, bin_dir: Path,
) -> None:
    # A process leaving 1024 connections queues 1024 RELEASEs; none may be parked behind the next
    # client's requests (the kernel parks background requests past max_background).
    out = run_client(bin_dir / "limits", str(root_mount.path), "connections")
    assert out.split() == ["1024", str(errno.EMFILE)]
    assert "foundation: all checks passed" in run_client(bin_dir / "foundation", str(root_mount.path))
