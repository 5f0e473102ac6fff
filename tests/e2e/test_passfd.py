"""Descriptors passed in messages, installed in receivers started by `kdbusfs run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .clients import run_client
from .harness import Mount, as_user, start_daemon, user_python, wait_for

MESSAGES = "10000"


def daemon_fds(mount: Mount) -> int:
    return len(os.listdir(f"/proc/{mount.process.pid}/fd"))


def daemon_files(mount: Mount) -> list[str]:
    fds = f"/proc/{mount.process.pid}/fd"
    out = []
    for fd in sorted(os.listdir(fds), key=int):
        try:
            out.append(f"{fd} -> {os.readlink(f'{fds}/{fd}')}")
        except OSError:
            pass
    return out


def wait_for_fds(mount: Mount, baseline: list[str]) -> None:
    try:
        wait_for(lambda: daemon_fds(mount) == len(baseline), what="the daemon's descriptors back")
    except TimeoutError:
        now = daemon_files(mount)
        raise AssertionError(f"daemon descriptors: added {sorted(set(now) - set(baseline))}, "
                             f"gone {sorted(set(baseline) - set(now))}") from None


def warmed_up_fds(mount: Mount, binary: Path, user: str | None = None) -> list[str]:
    """The daemon's descriptors once it has placed a passed fd (its mount table then stays open):
    the baseline nothing may add to."""
    run_client(binary, str(mount.path), "plain", "1", user=user)
    # Its connections' pools (memfds on a root mount) go with the RELEASEs after it exits, and
    # the daemon's copies of the pipes and memfds it passed with them (closed off the serving
    # thread, so possibly a moment later).
    wait_for(lambda: not any(leftover in f for f in daemon_files(mount)
                             for leftover in ("kdbusfs-pool", "memfd:passfd", "pipe:")),
             what="the warm-up client's pools and passed descriptors to go")
    return daemon_files(mount)


def run_launched(mount: Mount, binary: Path, *args: str, python: str = sys.executable,
                 user: str | None = None, env: dict[str, str] | None = None) -> str:
    """`kdbusfs run --mount M -- BINARY ARGS` (as `user` if given); the client's output."""
    cmd = [python, "-m", "kdbusfs", "run", "--mount", str(mount.path), "--", str(binary), *args]
    if user is not None:
        cmd = as_user(user, *cmd, env=env)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{binary.name} under kdbusfs run failed ({proc.returncode}):\n" \
                                 f"{proc.stdout}{proc.stderr}\n{mount.log()}"
    return proc.stdout


def check_installed(mount: Mount, out: str, baseline: list[str]) -> None:
    assert "passfd: all checks passed" in out
    # The daemon closes the listener once the launched process is gone, and holds nothing else.
    wait_for_fds(mount, baseline)
    assert "Traceback" not in mount.log() and ": ERROR: " not in mount.log()


def test_launched_receivers_get_pipes_memfds_and_16_mib_payloads_on_root_mount(
    root_mount: Mount, bin_dir: Path,
) -> None:
    baseline = warmed_up_fds(root_mount, bin_dir / "passfd")
    out = run_launched(root_mount, bin_dir / "passfd", str(root_mount.path), "installed", MESSAGES)
    check_installed(root_mount, out, baseline)


def test_launched_receivers_get_pipes_memfds_and_16_mib_payloads_on_user_mount(
    user_mount: Mount, bin_dir: Path, test_user: str, user_runtime: Path,
) -> None:
    baseline = warmed_up_fds(user_mount, bin_dir / "passfd", test_user)
    out = run_launched(user_mount, bin_dir / "passfd", str(user_mount.path), "installed", MESSAGES,
                       python=user_python(), user=test_user, env={"PYTHONPATH": str(user_runtime)})
    check_installed(user_mount, out, baseline)


def _launched_on_both(launcher: Mount, other: Mount, bin_dir: Path, test_user: str, user_runtime: Path,
                      root_mount: Mount, user_mount: Mount) -> None:
    """A user's client of both its own mount and root's, launched on `launcher`: the daemon of
    `other` gets its notifications forwarded and installs that mount's descriptors."""
    baselines = {m.path: warmed_up_fds(m, bin_dir / "passfd", test_user) for m in (root_mount, user_mount)}
    roots = f"{launcher.path},{other.path}"
    out = run_launched(launcher, bin_dir / "passfd", roots, "installed", "2000",
                       python=user_python(), user=test_user, env={"PYTHONPATH": str(user_runtime)})
    for mount in (root_mount, user_mount):
        check_installed(mount, out, baselines[mount.path])


def test_a_client_of_two_mounts_launched_on_root_mount_gets_descriptors_from_both(
    root_mount: Mount, user_mount: Mount, bin_dir: Path, test_user: str, user_runtime: Path,
) -> None:
    # Root's daemon forwards what the user's own mount serves.
    _launched_on_both(root_mount, user_mount, bin_dir, test_user, user_runtime, root_mount, user_mount)


def test_a_client_of_two_mounts_launched_on_user_mount_gets_descriptors_from_both(
    root_mount: Mount, user_mount: Mount, bin_dir: Path, test_user: str, user_runtime: Path,
) -> None:
    # The user's daemon forwards what root's mount serves: root's daemon checks the task is the
    # forwarder's user's.
    _launched_on_both(user_mount, root_mount, bin_dir, test_user, user_runtime, root_mount, user_mount)


def test_a_launched_receiver_in_a_mount_namespace_of_its_own_gets_them(
    root_mount: Mount, bin_dir: Path,
) -> None:
    # As a service with PrivateTmp= and the like: mount ids differ from the daemon's.
    root = str(root_mount.path)
    cmd = ["unshare", "--mount", sys.executable, "-m", "kdbusfs", "run", "--mount", root, "--",
           str(bin_dir / "passfd"), root, "installed", "100"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "passfd: all checks passed" in proc.stdout, proc.stdout + proc.stderr


def test_receivers_killed_while_taking_descriptors_leave_nothing_behind_on_root_mount(
    root_mount: Mount, bin_dir: Path,
) -> None:
    baseline = warmed_up_fds(root_mount, bin_dir / "passfd")
    out = run_launched(root_mount, bin_dir / "killrecv", str(root_mount.path), "30")
    assert "killrecv: all checks passed" in out
    wait_for_fds(root_mount, baseline)
    assert root_mount.alive()


def test_receivers_killed_while_taking_descriptors_leave_nothing_behind_on_user_mount(
    user_mount: Mount, bin_dir: Path, test_user: str, user_runtime: Path,
) -> None:
    baseline = warmed_up_fds(user_mount, bin_dir / "passfd", test_user)
    out = run_launched(user_mount, bin_dir / "killrecv", str(user_mount.path), "30",
                       python=user_python(), user=test_user, env={"PYTHONPATH": str(user_runtime)})
    assert "killrecv: all checks passed" in out
    wait_for_fds(user_mount, baseline)
    assert user_mount.alive()


def test_receivers_not_launched_still_find_minus_one(root_mount: Mount, bin_dir: Path) -> None:
    baseline = warmed_up_fds(root_mount, bin_dir / "passfd")
    out = run_client(bin_dir / "passfd", str(root_mount.path), "plain", "1000")
    assert "passfd: all checks passed" in out
    wait_for_fds(root_mount, baseline)
    # It also hands malformed SUPERVISE commands to the daemon: errnos, no traceback.
    assert "Traceback" not in root_mount.log()


def _waits_in_seccomp(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "seccomp" in f.read()
    except OSError:
        return False


def test_a_launched_caller_is_released_when_the_daemon_dies(bin_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "dies"
    target.mkdir()
    mount = start_daemon(target, tmp_path / "daemon.log")
    launched = subprocess.Popen([sys.executable, "-m", "kdbusfs", "run", "--mount", str(target), "--",
                                 str(bin_dir / "waitcall"), str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert launched.stdout is not None and launched.stdout.readline() == "calling\n"
        # exec keeps the pid: the call waits on the daemon through its seccomp notification.
        wait_for(lambda: _waits_in_seccomp(launched.pid), what="the call to wait in seccomp")
        mount.process.kill()
        mount.process.wait()
        out, _ = launched.communicate(timeout=10)
        # ENOSYS: the kernel's answer once the listener is gone.
        assert out.startswith("returned -1 errno 38"), out
    finally:
        if launched.poll() is None:
            launched.kill()
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_receivers_not_launched_still_find_minus_one_on_user_mount(
    user_mount: Mount, bin_dir: Path, test_user: str,
) -> None:
    baseline = warmed_up_fds(user_mount, bin_dir / "passfd", test_user)
    out = run_client(bin_dir / "passfd", str(user_mount.path), "plain", "1000", user=test_user)
    assert "passfd: all checks passed" in out
    wait_for_fds(user_mount, baseline)
    assert "Traceback" not in user_mount.log()


def test_the_launcher_says_what_is_wrong(tmp_path: Path) -> None:
    kdbusfs = [sys.executable, "-m", "kdbusfs", "run"]
    proc = subprocess.run([*kdbusfs, "--mount", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no command to run" in proc.stderr
    proc = subprocess.run([*kdbusfs, "--mount", str(tmp_path), "--", "true"], capture_output=True, text=True)
    assert proc.returncode == 1 and f"kdbusfs run: {tmp_path}" in proc.stderr, proc.stderr
