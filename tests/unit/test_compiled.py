"""The compiled modules: each loads from its extension, and `kdbusfs -V` says so."""

from __future__ import annotations

import pytest

from kdbusfs.compiled import built


def test_every_compiled_module_is_loaded_compiled() -> None:
    loaded = dict(built())
    assert set(loaded) >= {"kdbusfs.host.memory", "kdbusfs.fuse.frame"}
    assert all(where.endswith(".so") for where in loaded.values()), loaded


def test_the_version_says_what_was_built(capsys: pytest.CaptureFixture[str]) -> None:
    from kdbusfs.cli import main

    with pytest.raises(SystemExit):
        main(["-V"])
    said = capsys.readouterr().out
    assert said.startswith("kdbusfs ") and "compiled kdbusfs.host.memory: " in said and ".so" in said
