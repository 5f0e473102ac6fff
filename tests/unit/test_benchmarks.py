"""The benchmark scripts still fit the code they measure: each imports, and python_cost.py (which
needs no root) replays a few calls. Nothing here is timed."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("name", sorted(path.stem for path in BENCHMARKS.glob("*.py")))
def test_each_benchmark_imports(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    importlib.import_module(name)


def test_python_cost_replays_calls() -> None:
    command = [sys.executable, str(BENCHMARKS / "python_cost.py"), "--calls", "20", "--runs", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "**all seven**" in done.stdout


def test_python_cost_replays_calls_with_metadata() -> None:
    # The replay itself checks that the callee received the metadata it asked for.
    command = [sys.executable, str(BENCHMARKS / "python_cost.py"), "--calls", "20", "--runs", "1",
               "--metadata"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "receivers asking for metadata" in done.stdout


def test_python_cost_replays_broadcasts() -> None:
    command = [sys.executable, str(BENCHMARKS / "python_cost.py"), "--calls", "20", "--runs", "1",
               "--signal-subscribers", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| sender SEND (broadcast) |" in done.stdout and "**all 13 requests**" in done.stdout
