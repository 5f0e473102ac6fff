"""The modules built from Cython sources (.pyx), and what this installation has of them.

Only edge and hot-path code is compiled; each lives in its .pyx alone, with a .pyi beside it for
type checkers. setup.py reads COMPILED from this file without importing the package, so it
imports nothing of kdbusfs.
"""

from __future__ import annotations

import importlib
import importlib.machinery

COMPILED = ("kdbusfs.host.memory", "kdbusfs.host.caller", "kdbusfs.fuse.frame", "kdbusfs.fuse.device",
            "kdbusfs.abi.walk",
            "kdbusfs.bus.args", "kdbusfs.bus.message", "kdbusfs.bus.layout", "kdbusfs.bus.match",
            "kdbusfs.bus.pool", "kdbusfs.bus.stats", "kdbusfs.bus.reply",
            "kdbusfs.bus.queue", "kdbusfs.bus.connection", "kdbusfs.bus.send", "kdbusfs.dispatch",
            "kdbusfs.fs")


def built() -> list[tuple[str, str]]:
    """(module, the file it was loaded from or why it could not be) for each compiled module."""
    found = []
    for name in COMPILED:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            found.append((name, f"not built ({exc})"))
            continue
        path = getattr(module, "__file__", None) or "?"
        compiled = path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
        found.append((name, path if compiled else f"not compiled ({path})"))
    return found
