"""The edge between the serving core and the system: everything that makes a syscall for it.

    host/memory.py  the caller's memory (process_vm_readv/writev)
    host/proc.py    what /proc says about a task: credentials, namespaces, metadata facts
    host/mounts.py  which mount a task's descriptor is on, found by name
    host/files.py   the sender's descriptors, taken with pidfd_getfd and checked as kdbus does
    host/caller.py  the task behind a request (FUSE or a launched client's notification)
    host/closer.py  closing descriptors off the serving thread
    host/libc.py    the C library, loaded when first needed

Nothing here does any work at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .closer import Closer
from .memory import ProcessMemory


@dataclass(slots=True)
class Host:
    """What the serving core holds of the system, made once per daemon and handed down."""

    memory: ProcessMemory = field(default_factory=ProcessMemory)
    closer: Closer = field(default_factory=Closer)

    def close(self) -> None:
        self.memory.close()
