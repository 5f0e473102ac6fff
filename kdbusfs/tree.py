"""The node tree of a mount: the domain's root, `control`, a directory per bus and its endpoints.

Node ids are the FUSE inode numbers. Buses keep one node for as long as they are looked up;
endpoints get a fresh node per lookup, so that each open() of an endpoint has an inode (and a page
cache: the client's mapping of its pool) of its own. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from .bus.bus import Bus
from .bus.connection import Connection
from .bus.domain import Domain
from .bus.endpoint import Endpoint
from .errors import KdbusError
from .fuse import codec
from .fuse import protocol as p
from .fuse.codec import Attr, Request
from .handle import Handle

CONTROL = b"control"
STATS = b"stats"
CONTROL_ID = 2
DT_DIR = 4
DT_REG = 8
# Endpoint inodes are per open, a stats file's made by lookup: listings show a stable number
# that is no node's.
LISTED_ENDPOINT_INO = 0xFFFF_FFFF
# Node attributes never change while a node exists (an endpoint's size grows by NOTIFY_STORE, which
# refreshes the kernel's copy), so the kernel may keep them; without this, default_permissions asks
# for them on every path component of every open. Entries of buses and endpoints are never cached:
# buses vanish, and each lookup of an endpoint must give a fresh inode.
ATTR_VALID_S = 3600


@dataclass(slots=True, eq=False)
class BusStats:
    """The `stats` file of a bus directory (bus/stats.pyx)."""

    bus: Bus


@dataclass(slots=True, eq=False)
class Node:
    nodeid: int
    obj: Bus | Endpoint | BusStats | None = None
    lookups: int = 0
    opens: int = 0
    # The connection whose pool this inode's page cache holds (endpoint nodes after HELLO).
    handle: Handle | None = None


@dataclass(slots=True, eq=False)
class OpenFile:
    node: Node
    handle: Handle
    pollers: set[int] = field(default_factory=set)
    # Passthrough: the memfd the kernel maps for the client (its pool), and its backing id.
    backing_fd: int | None = None
    backing_id: int | None = None
    # A bus's `stats` file: the snapshot taken at open, which reads return.
    contents: bytes | None = None


class _OpenFiles(dict[int, OpenFile]):
    """Open files by FUSE file handle. Looked up for nearly every request, so a hit is a plain
    dict lookup with no Python frame; a miss is the client's bad handle."""

    def __missing__(self, fh: int) -> OpenFile:
        raise KdbusError(errno.EBADF, f"unknown file handle {fh}")


class Tree:
    """Node ids for the domain's buses and endpoints, and their attributes."""

    def __init__(self, domain: Domain, started_ns: int) -> None:
        self.domain = domain
        self.started_ns = started_ns
        self._next_nodeid = CONTROL_ID + 1
        self._nodes: dict[int, Node] = {}
        self._bus_nodes: dict[int, Node] = {}  # bus id -> its directory's node
        self._stats_nodes: dict[int, Node] = {}  # bus id -> its stats file's node
        # Open files by FUSE file handle, and by the connection HELLO made on them.
        self._next_fh = 1
        self._files = _OpenFiles()
        self._files_by_conn: dict[int, OpenFile] = {}
        # The open file of handle `fh` (EBADF if none).
        self.file: Callable[[int], OpenFile] = self._files.__getitem__
        # The open file a connection was made on, if it is still open (by connection id).
        self.file_of_id: Callable[[int], OpenFile | None] = self._files_by_conn.get

    def node(self, nodeid: int) -> Node:
        node = self._nodes.get(nodeid)
        if node is None:
            raise KdbusError(errno.ENOENT, f"unknown node {nodeid}")
        return node

    def find(self, nodeid: int) -> Node | None:
        return self._nodes.get(nodeid)

    def lookup(self, parent: int, name: bytes) -> int:
        """The node id of `name` in directory `parent`, counted as one more kernel lookup."""
        if parent == p.ROOT_ID:
            if name == CONTROL:
                return CONTROL_ID
            bus = self.domain.buses.get(name.decode("utf-8", "surrogateescape"))
            if bus is None or not bus.active:
                raise KdbusError(errno.ENOENT, f"no bus {name!r}")
            node = self._bus_node(bus)
        else:
            parent_bus = self.node(parent).obj
            if not isinstance(parent_bus, Bus) or not parent_bus.active:
                raise KdbusError(errno.ENOENT, "lookup in a vanished bus")
            if name == STATS:
                node = self._stats_node(parent_bus)
                node.lookups += 1
                return node.nodeid
            endpoint = parent_bus.endpoints.get(name.decode("utf-8", "surrogateescape"))
            if endpoint is None or not endpoint.active:
                raise KdbusError(errno.ENOENT, f"no endpoint {name!r} on {parent_bus.name}")
            # A fresh inode per lookup: each open of an endpoint gets its own page cache (pool).
            node = self._new_node(endpoint)
        node.lookups += 1
        return node.nodeid

    def forget(self, nodeid: int, count: int) -> None:
        node = self._nodes.get(nodeid)
        if node is not None:
            node.lookups = max(0, node.lookups - count)
            self.maybe_drop(node)

    def maybe_drop(self, node: Node) -> None:
        """Forget a node the kernel no longer knows and nothing holds open."""
        if node.lookups > 0 or node.opens > 0:
            return
        obj = node.obj
        if isinstance(obj, Bus | BusStats):
            bus = obj if isinstance(obj, Bus) else obj.bus
            if bus.active:
                return
            by_bus = self._bus_nodes if isinstance(obj, Bus) else self._stats_nodes
            if by_bus.get(bus.id) is node:
                del by_bus[bus.id]
        self._nodes.pop(node.nodeid, None)

    def attr(self, nodeid: int) -> Attr:
        t = self.started_ns
        domain = self.domain
        if nodeid == p.ROOT_ID:
            return Attr(nodeid, 0, stat.S_IFDIR | 0o555, 2 + len(domain.buses), domain.uid, domain.gid, t)
        if nodeid == CONTROL_ID:
            return Attr(nodeid, 0, stat.S_IFREG | 0o666, 1, domain.uid, domain.gid, t)
        node = self.node(nodeid)
        obj = node.obj
        if isinstance(obj, Bus):
            if not obj.active:
                raise KdbusError(errno.ENOENT, f"bus {obj.name} is gone")
            return Attr(nodeid, 0, stat.S_IFDIR | obj.mode, 2, obj.uid, obj.gid, t)
        if isinstance(obj, BusStats):
            if not obj.bus.active:
                raise KdbusError(errno.ENOENT, f"bus {obj.bus.name} is gone")
            # The bus owner's (and root's) to read: it shows every connection's process.
            return Attr(nodeid, 0, stat.S_IFREG | 0o400, 1, obj.bus.uid, obj.bus.gid, t)
        assert isinstance(obj, Endpoint)
        conn = node.handle.conn if node.handle else None
        # The size covers the pool so that the kernel serves faults anywhere in a mapping of it.
        size = conn.pool.size if conn is not None else 0
        return Attr(nodeid, size, stat.S_IFREG | obj.mode, 1, obj.uid, obj.gid, t)

    def entries(self, nodeid: int) -> list[tuple[int, bytes, int]]:
        """A directory's listing: (ino, name, DT_*) with "." and ".." first."""
        entries = [(nodeid, b".", DT_DIR), (p.ROOT_ID, b"..", DT_DIR)]
        if nodeid == p.ROOT_ID:
            self._drop_listed_gone()
            entries.append((CONTROL_ID, CONTROL, DT_REG))
            for bus in self.domain.buses.values():
                entries.append((self._bus_node(bus).nodeid, bus.name.encode(), DT_DIR))
            return entries
        listed = self.node(nodeid).obj
        if not isinstance(listed, Bus) or not listed.active:
            raise KdbusError(errno.ENOENT, "readdir of a vanished bus")
        for endpoint in listed.endpoints.values():
            entries.append((LISTED_ENDPOINT_INO, endpoint.name.encode(), DT_REG))
        # No node for a listing: only a lookup makes one (the kernel forgets what it looked up).
        entries.append((LISTED_ENDPOINT_INO, STATS, DT_REG))
        return entries

    # -- open files -------------------------------------------------------------------------
    def register(self, opened: OpenFile) -> int:
        """A new open of `opened.node`; its file handle."""
        fh = self._next_fh
        self._next_fh += 1
        opened.node.opens += 1
        self._files[fh] = opened
        return fh

    def connected(self, opened: OpenFile, conn: Connection) -> None:
        """HELLO made `conn` on `opened`: its node's page cache is now that connection's pool."""
        opened.node.handle = opened.handle
        self._files_by_conn[conn.id] = opened

    def release(self, fh: int) -> OpenFile | None:
        """The last close of file handle `fh`: forget it (and its node, if nothing else holds it)."""
        opened = self._files.pop(fh, None)
        if opened is None:
            return None
        handle = opened.handle
        if handle.conn is not None:
            self._files_by_conn.pop(handle.conn.id, None)
        node = opened.node
        node.opens -= 1
        if node.handle is handle:
            node.handle = None
        if node.nodeid != CONTROL_ID:
            self.maybe_drop(node)
        return opened

    def listing(self, nodeid: int, offset: int, size: int, plus: bool) -> bytes:
        """READDIR(PLUS) of a directory: the entries from `offset` that fit in `size` bytes."""
        out = bytearray()
        entries = self.entries(nodeid)
        # READDIRPLUS: node id 0 tells the kernel "no entry to cache", so listings never pin inodes.
        no_entry = codec.entry_out(0, Attr(0, 0, 0, 0, 0, 0, 0))
        for index in range(offset, len(entries)):
            ino, name, dtype = entries[index]
            if plus:
                record = codec.direntplus(no_entry, ino, index + 1, name, dtype)
            else:
                record = codec.dirent(ino, index + 1, name, dtype)
            if len(out) + len(record) > size:
                break
            out += record
        return bytes(out)

    # -- the FUSE operations that only look nodes up, list or count them ----------------------
    def op_lookup(self, request: Request) -> bytes:
        nodeid = self.lookup(request.header.nodeid, codec.name_arg(request.body))
        # Only `control` is cached: buses vanish, and each lookup of an endpoint must give a
        # fresh inode.
        entry_valid = ATTR_VALID_S if nodeid == CONTROL_ID else 0
        return codec.entry_out(nodeid, self.attr(nodeid), entry_valid, ATTR_VALID_S)

    def op_forget(self, request: Request) -> None:
        (count,) = p.FORGET_IN.unpack_from(request.body)
        self.forget(request.header.nodeid, count)

    def op_batch_forget(self, request: Request) -> None:
        count, _ = p.BATCH_FORGET_IN.unpack_from(request.body)
        for i in range(count):
            nodeid, nlookup = p.FORGET_ONE.unpack_from(request.body, p.BATCH_FORGET_IN.size + 16 * i)
            self.forget(nodeid, nlookup)

    def op_getattr(self, request: Request) -> bytes:
        return codec.attr_out(self.attr(request.header.nodeid), ATTR_VALID_S)

    def op_statfs(self, request: Request) -> bytes:
        return codec.statfs_out()

    def op_opendir(self, request: Request) -> bytes:
        self.attr(request.header.nodeid)  # ENOENT for a vanished bus
        return codec.open_out(0, 0)

    def op_readdir(self, request: Request) -> bytes:
        _fh, offset, size, *_ = p.READ_IN.unpack_from(request.body)
        return self.listing(request.header.nodeid, offset, size, plus=False)

    def op_readdirplus(self, request: Request) -> bytes:
        _fh, offset, size, *_ = p.READ_IN.unpack_from(request.body)
        return self.listing(request.header.nodeid, offset, size, plus=True)

    def _new_node(self, obj: Bus | Endpoint | BusStats) -> Node:
        node = Node(self._next_nodeid, obj)
        self._next_nodeid += 1
        self._nodes[node.nodeid] = node
        return node

    def _stats_node(self, bus: Bus) -> Node:
        node = self._stats_nodes.get(bus.id)
        if node is None:
            node = self._stats_nodes[bus.id] = self._new_node(BusStats(bus))
        return node

    def _drop_listed_gone(self) -> None:
        """Drop the nodes of buses gone since a listing made them: a node only listed was never
        looked up, so no FORGET will ever come for it."""
        for node in [node for node in self._bus_nodes.values() if node.lookups == 0 and node.opens == 0]:
            self.maybe_drop(node)

    def _bus_node(self, bus: Bus) -> Node:
        node = self._bus_nodes.get(bus.id)
        if node is None:
            node = self._bus_nodes[bus.id] = self._new_node(bus)
        return node
