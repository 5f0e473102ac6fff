"""kdbusfs.client against real mounts: root's, in this process, and the test user's, in a process
of that user (a user mount serves only its user). The scenarios are in client_scenarios.py."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdbusfs.abi.constants import HELLO_POLICY_HOLDER
from kdbusfs.client import Kind, ListEntry, PolicyAccess, make_bus

pytest.register_assert_rewrite("tests.e2e.client_scenarios")

from . import client_scenarios  # noqa: E402
from .harness import Mount, as_user, compile_client, user_python, world_tempdir  # noqa: E402

SCRIPT = Path(client_scenarios.__file__)


@pytest.fixture(scope="module")
def tools() -> Iterator[Path]:
    """The C peer, and the scenarios where the test user can read them."""
    path = world_tempdir("kdbusfs-client-")
    compile_client("echo", path, ("-pthread",))
    shutil.copy(SCRIPT, path / SCRIPT.name)
    (path / SCRIPT.name).chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_as(user: str, runtime: Path, tools: Path, *args: str) -> str:
    cmd = as_user(user, user_python(), str(tools / SCRIPT.name), *args, env={"PYTHONPATH": str(runtime)})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args[0]} as {user} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def check_daemon(mount: Mount) -> None:
    assert mount.alive()
    assert "Traceback" not in mount.log() and ": ERROR: " not in mount.log(), mount.log()


@pytest.mark.parametrize("scenario", client_scenarios.ON_EVERY_MOUNT)
def test_client_on_root_mount(root_mount: Mount, tools: Path, scenario: str) -> None:
    client_scenarios.SCENARIOS[scenario](str(root_mount.path), str(tools))
    check_daemon(root_mount)


@pytest.mark.parametrize("scenario", client_scenarios.ON_EVERY_MOUNT)
def test_client_on_user_mount(user_mount: Mount, tools: Path, test_user: str, user_runtime: Path,
                              scenario: str) -> None:
    out = run_as(test_user, user_runtime, tools, scenario, str(user_mount.path), str(tools))
    assert f"{scenario}: ok" in out
    check_daemon(user_mount)


def test_bus_policy_lets_another_user_own_one_name(root_mount: Mount, tools: Path, test_user: str,
                                                   user_runtime: Path) -> None:
    policy = {"org.example.Open": [PolicyAccess.world("own")]}
    with make_bus(root_mount.path, "policy", world_access=True, policy=policy) as bus:
        holder = bus.policy_holders[0]
        assert holder.kind is Kind.POLICY_HOLDER
        # A policy holder may query (its answers stay in its pool: kdbus lets it not FREE).
        assert ListEntry(holder.id, HELLO_POLICY_HOLDER) in holder.list_peers()
        out = run_as(test_user, user_runtime, tools, "acquire_under_policy", str(bus.endpoint))
        assert "acquire_under_policy: ok" in out
    check_daemon(root_mount)
