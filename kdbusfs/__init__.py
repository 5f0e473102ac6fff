"""kdbusfs: the kdbus IPC bus as a FUSE-mounted pseudo-filesystem.

Layers, inside out:
    abi/      the kdbus UAPI: numbers, struct layouts, the item codec
    bus/      the kdbus model (domain, bus, endpoint, connection, pool, ...), no I/O
    handle.py open kdbus files and the one KDBUS_CMD_* dispatch table
    fuse/     the FUSE protocol codec (no I/O), the serving loop, mounting
    fs.pyx    the tree of nodes and the FUSE operations on it (compiled)
    host/     the edge to the system: the caller's memory, /proc, descriptors, mounts
    cli.py    the `kdbusfs` command
"""

__version__ = "0.1.0"
