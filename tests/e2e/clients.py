"""Running the compiled C clients, as root or as the test user."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .harness import as_user


def run_client(binary: Path, *args: str, user: str | None = None, timeout: float = 60) -> str:
    """Run a checking client; it prints one line per check and exits non-zero on a failure."""
    cmd = [str(binary), *args]
    if user is not None:
        cmd = as_user(user, *cmd)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{binary.name} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
    return proc.stdout


class Holder:
    """A `holder` client: a connection that stays until told otherwise (see c/holder.c)."""

    def __init__(self, binary: Path, root: Path, bus: str, user: str | None = None) -> None:
        cmd = [str(binary), str(root), bus]
        if user is not None:
            cmd = as_user(user, *cmd)
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1)
        self.bus = self._expect("bus ")
        self.id = int(self._expect("id "))

    def _expect(self, prefix: str) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(prefix):
            self.process.kill()
            _, err = self.process.communicate()
            raise AssertionError(f"holder said {line!r}, wanted {prefix!r}: {err}")
        return line[len(prefix):].strip()

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def quit(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask("quit")
            except (BrokenPipeError, ValueError):
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.quit()
