"""Operating kdbusfs the Linux way: /sys/fs/kdbus, mount(8) helpers, fstab, systemd units, options,
stale mounts and man pages."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdbusfs.fuse import mount as fuse_mount
from kdbusfs.fuse.mount import libc_mount, libc_umount, mountinfo
from kdbusfs.host.mounts import MountTable

from .clients import run_client
from .harness import REPO, is_mounted, start_daemon, wait_for, world_tempdir

SYS_FS = Path("/sys/fs")
KDBUS = SYS_FS / "kdbus"
KDBUSFS = [sys.executable, "-m", "kdbusfs"]


def sys_fs_state() -> tuple[list[str], list[tuple[str, str, str]]]:
    """What /sys/fs lists and every mount at or below it (point, type, source)."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            if point == str(SYS_FS) or point.startswith(f"{SYS_FS}/"):
                sep = fields.index("-")
                mounts.append((point, fields[sep + 1], fields[sep + 2]))
    return sorted(os.listdir(SYS_FS)), mounts


@pytest.fixture
def clean_sys_fs() -> Iterator[tuple[list[str], list[tuple[str, str, str]]]]:
    if os.geteuid() != 0:
        pytest.fail("/sys/fs/kdbus tests need root")
    if KDBUS.exists():
        pytest.fail("/sys/fs/kdbus already exists on this machine (a kdbus module or a leftover)")
    before = sys_fs_state()
    yield before
    if is_mounted(KDBUS):
        subprocess.run([*KDBUSFS, "-u", str(KDBUS)], capture_output=True)
    assert sys_fs_state() == before, "/sys/fs was not restored"


def test_sys_fs_kdbus_for_everyone_keeps_sys_fs_and_restores_it(
    clean_sys_fs: tuple[list[str], list[tuple[str, str, str]]], bin_dir: Path, test_user: str,
) -> None:
    entries, _ = clean_sys_fs
    cgroups = sorted(os.listdir(SYS_FS / "cgroup"))
    proc = subprocess.run([*KDBUSFS, str(KDBUS)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(SYS_FS)) == sorted([*entries, "kdbus"])
    assert sorted(os.listdir(SYS_FS / "cgroup")) == cgroups
    # The other entries are the originals, mounts below them included.
    for name in entries:
        assert os.stat(SYS_FS / name).st_dev != os.stat(KDBUS).st_dev
    assert "foundation: all checks passed" in run_client(bin_dir / "foundation", str(KDBUS))
    assert "foundation: all checks passed" in run_client(bin_dir / "foundation", str(KDBUS),
                                                         user=test_user)
    subprocess.run(["umount", str(KDBUS)], check=True)
    wait_for(lambda: sys_fs_state() == clean_sys_fs, what="/sys/fs to be restored")


@pytest.fixture
def helpers() -> Iterator[Path]:
    """The helpers, units and man pages installed for real (mount(8) looks only in /sbin)."""
    if os.geteuid() != 0:
        pytest.fail("installing the mount helpers needs root")
    from kdbusfs.install import FILES

    installed = [Path("/") / target for _, targets, _ in FILES for target in targets]
    existing = {path: path.read_bytes() for path in installed if path.exists()}
    proc = subprocess.run([*KDBUSFS, "install-helpers"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    yield Path("/sbin")
    for path in installed:
        if path in existing:
            path.write_bytes(existing[path])
        else:
            path.unlink(missing_ok=True)


def test_mount_t_fuse_kdbusfs_at_sys_fs_kdbus_and_umount_restores_at_once(
    clean_sys_fs: tuple[list[str], list[tuple[str, str, str]]], helpers: Path, bin_dir: Path,
) -> None:
    # Options mount(8), fstab and systemd add must be accepted.
    proc = subprocess.run(["mount", "-t", "fuse.kdbusfs", "-o", "nosuid,nodev,noexec,_netdev,nofail,"
                           "x-systemd.automount,helper=kdbusfs", "kdbusfs", str(KDBUS)],
                          capture_output=True, text=True, timeout=30, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "foundation: all checks passed" in run_client(bin_dir / "foundation", str(KDBUS))
    subprocess.run(["umount", str(KDBUS)], check=True)
    # helper=kdbusfs: umount(8) ran umount.kdbusfs, which waited for the daemon's clean-up.
    assert sys_fs_state() == clean_sys_fs


def test_plain_umount_restores_sys_fs_moments_later(
    clean_sys_fs: tuple[list[str], list[tuple[str, str, str]]], helpers: Path,
) -> None:
    subprocess.run(["mount", "-t", "fuse.kdbusfs", "kdbusfs", str(KDBUS)], check=True, timeout=30, cwd="/")
    subprocess.run(["umount", str(KDBUS)], check=True)
    wait_for(lambda: sys_fs_state() == clean_sys_fs, timeout=5, what="the daemon to restore /sys/fs")


def test_fstab_line_mounts_sys_fs_kdbus(
    clean_sys_fs: tuple[list[str], list[tuple[str, str, str]]], helpers: Path, tmp_path: Path,
) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text((REPO / "mount-helper" / "fstab.example").read_text())
    proc = subprocess.run(["mount", "--fstab", str(fstab), str(KDBUS)], capture_output=True, text=True,
                          timeout=30, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert (KDBUS / "control").exists()
    subprocess.run(["umount", str(KDBUS)], check=True)
    assert sys_fs_state() == clean_sys_fs


def test_fstab_options_set_the_domain_limits_and_owner(helpers: Path, bin_dir: Path,
                                                       tmp_path: Path) -> None:
    target = world_tempdir("kdbusfs-fstab-") / "kdbus"
    target.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"kdbusfs {target} fuse.kdbusfs nosuid,nodev,max_buses=2,max_connections=3,"
                     f"max_pool_size=65536,uid=1234,gid=4321 0 0\n")
    subprocess.run(["mount", "--fstab", str(fstab), str(target)], check=True, timeout=30, cwd="/")
    try:
        root = str(target)
        assert run_client(bin_dir / "limits", root, "buses").split() == ["2", str(errno.EMFILE)]
        # Connections: 3 per user, the first one made by the client itself counts too.
        assert run_client(bin_dir / "limits", root, "connections").split() == ["3", str(errno.EMFILE)]
        assert run_client(bin_dir / "limits", root, "pool", "65536").split()[-1] == "0"
        assert run_client(bin_dir / "limits", root, "pool", "131072").split()[-1] == str(errno.EINVAL)
        st = os.stat(target / "control")
        assert (st.st_uid, st.st_gid) == (1234, 4321)
    finally:
        subprocess.run(["umount", str(target)], check=True)
        shutil.rmtree(target.parent, ignore_errors=True)


def test_options_with_bad_values_are_refused(tmp_path: Path) -> None:
    for option, message in (("max_buses=many", "needs a number"), ("max_pool_size=12", "at least 4096"),
                            ("frobnicate", "unknown mount option")):
        proc = subprocess.run([*KDBUSFS, "-f", "-o", option, str(tmp_path)], capture_output=True,
                              text=True)
        assert proc.returncode == 2 and message in proc.stderr, (option, proc.stderr)


def test_systemd_units_verify(tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run([*KDBUSFS, "install-helpers", "--root", str(root)], check=True, capture_output=True)
    system_unit = root / "etc/systemd/system/sys-fs-kdbus.mount"
    user_unit = root / "etc/systemd/user/kdbusfs.service"
    client_example = root / "usr/local/share/doc/kdbusfs/kdbus-client.service"
    assert "Where=/sys/fs/kdbus" in system_unit.read_text()
    assert " run --mount /sys/fs/kdbus -- " in client_example.read_text()
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    # Man pages are checked on their own below, so verify does not look them up.
    # The example client needs the mount unit it names: verified together.
    for extra, units in (([], [system_unit]), (["--user"], [user_unit]), ([], [system_unit, client_example])):
        proc = subprocess.run(["systemd-analyze", *extra, "verify", "--man=no", *map(str, units)],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0 and not any(u.name in proc.stderr for u in units), proc.stderr
    # verify does check: a unit that runs a relative command is refused.
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStart=kdbusfs -f kdbus\n")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(broken)], capture_output=True,
                          text=True, env=env)
    assert proc.returncode != 0


def test_stale_mount_is_refused_with_the_fix_and_can_be_recovered(tmp_path: Path) -> None:
    target = tmp_path / "stale"
    target.mkdir()
    mount = start_daemon(target, tmp_path / "daemon.log")
    mount.process.send_signal(signal.SIGKILL)
    mount.process.wait()
    try:
        os.stat(target)
    except OSError as exc:
        assert exc.errno == errno.ENOTCONN
    else:
        raise AssertionError("a mount without its daemon still answers")
    proc = subprocess.run([*KDBUSFS, str(target)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "stale" in proc.stderr and f"fusermount3 -u {target}" in proc.stderr
    subprocess.run(["fusermount3", "-u", str(target)], check=True)
    proc = subprocess.run([*KDBUSFS, str(target)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (target / "control").exists()
    subprocess.run([*KDBUSFS, "-u", str(target)], check=True)
    wait_for(lambda: not is_mounted(target), what="the remount to go away")


def test_stale_mount_is_recognised_while_the_kernel_still_caches_its_attributes(tmp_path: Path) -> None:
    # Clients that used the mount leave the root's attributes cached (for an hour): a stat then
    # succeeds although the daemon is gone, so staleness must be asked of the daemon itself.
    target = tmp_path / "cached"
    target.mkdir()
    mount = start_daemon(target, tmp_path / "daemon.log")
    os.stat(target)
    mount.process.send_signal(signal.SIGKILL)
    mount.process.wait()
    try:
        os.stat(target)  # answered from the cache: this is the case the check must not trust
        proc = subprocess.run([*KDBUSFS, str(target)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1
        assert "stale" in proc.stderr and f"fusermount3 -u {target}" in proc.stderr, proc.stderr
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def _all_threads_stopped(pid: int) -> bool:
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            states.append(f.read().rpartition(")")[2].split()[0])
    return all(state == "T" for state in states)


def test_a_daemon_that_does_not_answer_is_reported_as_stuck(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "stuck"
    target.mkdir()
    mount = start_daemon(target, tmp_path / "daemon.log")
    os.stat(target)
    monkeypatch.setattr(fuse_mount, "DAEMON_ANSWER_TIMEOUT_S", 0.5)
    try:
        mount.process.send_signal(signal.SIGSTOP)
        wait_for(lambda: _all_threads_stopped(mount.process.pid), what="the daemon to stop")
        with pytest.raises(fuse_mount.MountError, match="has not answered"):
            fuse_mount.check_mountpoint(str(target))
        mount.process.send_signal(signal.SIGCONT)
        with pytest.raises(fuse_mount.MountError, match="already a fuse.kdbusfs mount"):
            fuse_mount.check_mountpoint(str(target))
    finally:
        mount.process.send_signal(signal.SIGCONT)
        code = mount.stop()
    assert code == 0, mount.log()


@pytest.mark.parametrize("page", ["kdbusfs.1", "kdbusfs.7", "mount.kdbusfs.8"])
def test_man_page_renders_without_warnings(page: str) -> None:
    path = REPO / "man" / page
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    proc = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "SYNOPSIS" in proc.stdout or "DESCRIPTION" in proc.stdout
    groff = subprocess.run(["groff", "-man", "-ww", "-z", str(path)], capture_output=True, text=True)
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr


def test_installed_helpers_are_executable_and_point_at_kdbusfs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run([*KDBUSFS, "install-helpers", "--root", str(root), "--kdbusfs", "/opt/x/kdbusfs"],
                   check=True, capture_output=True)
    helper = root / "sbin/mount.fuse.kdbusfs"
    assert stat.S_IMODE(helper.stat().st_mode) == 0o755
    assert 'KDBUSFS="${KDBUSFS:-/opt/x/kdbusfs}"' in helper.read_text()
    assert (root / "sbin/mount.kdbusfs").read_text() == helper.read_text()


def test_the_mount_table_learns_of_new_mounts_without_rereading_on_every_miss(tmp_path: Path) -> None:
    # kdbusfs places passed descriptors by mount id; the table it keeps must follow mounts made
    # after it was read (a bind mount of a kdbus mount, say).
    table = MountTable()
    assert table.device(2**31 - 1) is None
    target = tmp_path / "fresh"
    target.mkdir()
    libc_mount("none", str(target), "tmpfs", 0, None)
    try:
        fresh = [m for m in mountinfo() if m.point == str(target)][-1]
        assert table.device(fresh.mount_id) == fresh.device
    finally:
        libc_umount(str(target))
    assert table.device(fresh.mount_id) is None


def test_limits_are_warned_about_once_per_burst_and_bad_input_is_not(bin_dir: Path, tmp_path: Path) -> None:
    parent = world_tempdir("kdbusfs-limits-")
    target = parent / "kdbus"
    target.mkdir()
    mount = start_daemon(target, tmp_path / "daemon.log",
                         extra=("-o", "max_buses=2,max_connections=3,max_pool_size=65536"))
    try:
        root = str(target)
        for _ in range(3):  # one burst: the retries add no lines
            assert run_client(bin_dir / "limits", root, "connections").split() == ["3", str(errno.EMFILE)]
        assert run_client(bin_dir / "limits", root, "buses").split() == ["2", str(errno.EMFILE)]
        assert run_client(bin_dir / "limits", root, "pool", "131072").split()[-1] == str(errno.EINVAL)
        # Bad input, not a limit: a pool that is not a whole number of pages.
        assert run_client(bin_dir / "limits", root, "pool", "12345").split()[-1] == str(errno.EINVAL)
    finally:
        code = mount.stop()
        shutil.rmtree(parent, ignore_errors=True)
    log = mount.log()
    assert code == 0, log
    warnings = [line for line in log.splitlines() if ": WARNING: " in line]
    uid = os.getuid()
    expected = (
        (f"user {uid} reached the limit on connections per user (3)", "max_connections=N"),
        (f"user {uid} reached the limit on buses per user (2)", "max_buses=N"),
        (f"user {uid} reached the limit on pool size (65536)", "max_pool_size=BYTES"),
    )
    assert len(warnings) == len(expected), log
    for line, (what, option) in zip(warnings, expected, strict=True):
        assert what in line and option in line, line
    assert "12345" not in log and "Traceback" not in log
