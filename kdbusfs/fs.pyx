# cython: language_level=3, annotation_typing=False
"""The kdbusfs tree and the FUSE operations on it.

    /                 the domain (one per mount)
    /control          open + BUS_MAKE creates a bus
    /<uid>-<name>/    one directory per bus
        bus           the default endpoint; open + HELLO makes a connection

Every LOOKUP of an endpoint file answers a fresh node id that is never cached (entry_valid = 0), so
each open() gets its own inode and with it its own page cache: that page cache is the client's
mapping of its pool. Pool bytes reach it by FUSE_NOTIFY_STORE before the ioctl that publishes them
returns; READ (page faults of pages not stored yet) is served from the pool itself.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import select
import struct
import time
from collections.abc import Callable

from libc.stdint cimport uint32_t, uint64_t

from . import forward, seccomp
from .abi.constants import (
    KDBUSFS_CMD_SUPERVISE,
)
from .bus import stats
from .bus.bus import Bus
from .bus.domain import Domain
from .bus.endpoint import Endpoint
from .bus.metadata import UNKNOWN_USERNS, Creds
from .bus.pool import Pool
from .bus.reply import SyncWait
from .calls import Blocked, BlockedCalls, Supervised
from .errors import KdbusError, LimitReached, Refused
from .fuse import codec
from .fuse import protocol as p
from .bus.connection cimport Connection
from .fuse.frame cimport (
    Header,
    IoctlArgs,
    PollArgs,
    Request,
    ioctl_answer,
    ioctl_args,
    notify_poll,
    poll_answer,
    poll_args,
)
from .fuse.codec import Output
from .handle import Connected, Control, Handle, HandleType, Pending, attempt
from .host import Host
from .host.backing import PoolFiles, map_pool, seal_pool
from .launched import Launched
from .limitlog import LimitLog
from .limits import PAGE_SIZE
from .tree import CONTROL_ID, BusStats, Node, OpenFile, Tree

log = logging.getLogger("kdbusfs.fs")

POLLIN = select.POLLIN | select.POLLRDNORM
POLLOUT = select.POLLOUT | select.POLLWRNORM
POLLERR_HUP = select.POLLERR | select.POLLHUP
_ANSWER = struct.Struct("<QQQQQ")


cdef object _REFUSED = Refused
cdef object _CONNECTED_HANDLE = HandleType.CONNECTED
cdef uint32_t _IOCTL = p.Opcode.IOCTL
cdef uint32_t _POLL = p.Opcode.POLL
cdef uint32_t _IOCTL_DIR = p.IOCTL_DIR
cdef uint32_t _SUPERVISE = KDBUSFS_CMD_SUPERVISE
cdef uint32_t _SCHEDULE_NOTIFY = p.POLL_SCHEDULE_NOTIFY


cdef class Filesystem:
    """Maps FUSE requests onto the kdbus model; returns the bytes to write back, in order."""

    cdef public object domain
    cdef public object host
    cdef public object pool_files
    cdef public bint passthrough
    cdef public object device
    cdef public object tree
    cdef public object calls
    cdef public object launched
    cdef public dict in_process
    cdef public bint initialized
    cdef object _limit_log
    cdef dict _ops
    cdef list _out
    # The tree's open files by handle (a miss raises EBADF), and the host's caller factory.
    cdef object _file
    cdef object _caller
    # The domain's effect lists (Domain.effects()), checked after every request.
    cdef list _woken
    cdef list _completed

    def __init__(self, domain: Domain, host: Host | None = None,
                 device: int | None = None, pool_files: PoolFiles | None = None) -> None:
        self.domain = domain
        self.host = host or Host()
        # Pools as memfds the client maps (root only); passthrough once INIT has agreed to it.
        self.pool_files = pool_files
        self.passthrough = False
        # st_dev of this mount: descriptors of our own files cannot be passed in messages.
        self.device = device
        self.tree = Tree(domain, time.time_ns())
        self.calls = BlockedCalls(self.host.dying, self.emit)
        # Clients started by `kdbusfs run`.
        self.launched = Launched(self)
        # Connections whose clients live in the daemon itself (classic D-Bus clients,
        # kdbusfs/classic): no file stands for them, so their endpoint is told of their wakes.
        self.in_process = {}
        self._limit_log = LimitLog()
        self.initialized = False
        # IOCTL and POLL take the typed path in handle().
        self._ops = {
            p.Opcode.INIT: self._init,
            p.Opcode.LOOKUP: self.tree.op_lookup,
            p.Opcode.FORGET: self.tree.op_forget,
            p.Opcode.BATCH_FORGET: self.tree.op_batch_forget,
            p.Opcode.GETATTR: self.tree.op_getattr,
            p.Opcode.OPENDIR: self.tree.op_opendir,
            p.Opcode.READDIR: self.tree.op_readdir,
            p.Opcode.READDIRPLUS: self.tree.op_readdirplus,
            p.Opcode.RELEASEDIR: self._ok,
            p.Opcode.OPEN: self._open,
            p.Opcode.READ: self._read,
            p.Opcode.WRITE: self._write,
            p.Opcode.FLUSH: self._ok,
            p.Opcode.RELEASE: self._release,
            p.Opcode.INTERRUPT: self._interrupt,
            p.Opcode.STATFS: self.tree.op_statfs,
            p.Opcode.ACCESS: self._ok,
            p.Opcode.DESTROY: self._ok,
        }
        self._out = []
        self._file = self.tree.file
        self._caller = self.host.callers()
        self._woken, self._completed = self.domain.effects()

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, Request request not None):
        """Serve one request: pool stores and notifications first, then the reply (if any)."""
        cdef list out = []
        cdef uint32_t opcode = request.opcode
        cdef uint64_t unique = request.unique
        self._out = out
        try:
            if opcode == _IOCTL:
                reply = self._ioctl(request)
            elif opcode == _POLL:
                reply = self._poll(request)
            else:
                op = self._ops.get(opcode)
                if op is None:
                    out.append(codec.reply_error(unique, errno.ENOSYS))
                    return out
                payload = op(request)
                if payload is None or type(payload) is _REFUSED:
                    reply = payload
                else:
                    reply = codec.reply(unique, payload)
        except KdbusError as exc:
            self.refused(p.opcode_name(opcode), exc)
            reply = codec.reply_error(unique, exc.errno)
        except Exception:
            # A bug of ours must cost one request, never the daemon and everyone on the mount.
            log.exception("%s from pid %d failed unexpectedly", p.opcode_name(opcode),
                          request.header.pid)
            reply = codec.reply_error(unique, errno.EIO)
        if type(reply) is _REFUSED:
            if log.isEnabledFor(logging.DEBUG):
                # Only then is it worth making the exception refused() logs.
                self.refused(p.opcode_name(opcode), reply.error())
            reply = codec.reply_error(unique, reply.errno)
        if self._woken or self._completed:
            self._flush()
        if reply is not None:
            out.append(reply)
        return out

    def emit(self, output: Output) -> None:
        """Add to what the request (or event) being served hands the session."""
        self._out.append(output)

    def refused(self, what: str, exc: KdbusError) -> None:
        """Log a request's errno: a limit as a warning (once per burst), anything else at debug."""
        if isinstance(exc, LimitReached):
            for warning in self._limit_log.hit(exc, time.monotonic()):
                log.warning("%s", warning)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s failed: %s", what, exc)

    # -- launched clients (launched.py) ------------------------------------------------------
    def listener_ready(self, listener: int, notification: seccomp.Notification) -> list[Output]:
        return self.launched.listener_ready(listener, notification)

    def forwarded_ready(self, forwarded: forward.Forwarded) -> list[Output]:
        return self.launched.forwarded_ready(forwarded)

    def listener_gone(self, listener: int) -> None:
        self.launched.listener_gone(listener)

    def next_deadline(self) -> int | None:
        """CLOCK_MONOTONIC nanoseconds of the next reply deadline or interrupt re-check, if any."""
        deadline = self.domain.next_deadline()
        recheck = self.calls.next_recheck()
        if recheck is not None:
            deadline = recheck if deadline is None else min(deadline, recheck)
        return deadline

    def tick(self, now_ns: int | None = None) -> list[Output]:
        """Fire the deadlines due by `now_ns` (CLOCK_MONOTONIC, now by default); returns what to
        write (notifications, answers to blocked calls)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return self.outside_requests("handling a deadline", functools.partial(self._expire, now))

    def _expire(self, now_ns: int) -> None:
        self.domain.expire(now_ns)
        self.calls.recheck(now_ns)

    def outside_requests(self, what: str, action: Callable[[], None]) -> list[Output]:
        """Run work no request asked for (timers, cancel fds) and return what it has to write."""
        self._out = []
        try:
            action()
            if self._woken or self._completed:
                self._flush()
        except Exception:
            # As for requests: a bug of ours must cost this one event, never the daemon.
            log.exception("%s failed unexpectedly", what)
        return self._out

    cdef _flush(self):
        """Push pool bytes to page caches, wake pollers, answer blocked calls that finished: the
        domain's effects so far, taken off its lists (what acting on them records waits for the
        next flush)."""
        cdef list taken
        cdef set seen
        if len(self._woken) == 1:
            conn = self._woken.pop()
            self.push(conn)
        elif self._woken:
            taken = self._woken.copy()
            self._woken.clear()
            seen = set()
            for conn in taken:
                if conn.id not in seen:
                    seen.add(conn.id)
                    self.push(conn)
        if self._completed:
            taken = self._completed.copy()
            self._completed.clear()
            for wait in taken:
                self._answer(wait)

    cpdef push(self, Connection conn):
        """The connection's new pool bytes to its client's page cache; wake its pollers."""
        opened = self.tree.file_of_id(conn.id)
        if opened is None or opened.backing_fd is not None:
            # No open file, or the client maps the pool's memory itself: nothing to push.
            conn.pool.dirty.clear()
            if opened is None:
                told = self.in_process.get(conn.id)
                if told is not None:
                    told(conn)
                return
        elif conn.pool.dirty:
            self._store(opened.node.nodeid, conn.pool)
        if opened.pollers and (conn.is_readable() or not conn.active):
            for kh in opened.pollers:
                self._out.append(notify_poll(kh))
            opened.pollers.clear()

    def close_fd(self, fd: int) -> None:
        self.host.close_fd(fd)

    def cancel_fd_ready(self, fd: int) -> list[Output]:
        """A blocked call's CANCEL_FD became readable: the call ends with ECANCELED."""
        wait = self.calls.cancelled(fd)
        return self.outside_requests("cancelling a call", wait.cancel if wait else lambda: None)

    def _answer(self, wait: SyncWait) -> None:
        token = self.calls.settle(wait)
        if isinstance(wait.token, Supervised):
            answer = self.launched.answer_call(wait, wait.token)
            if answer is not None:
                self._out.append(answer)
            return
        if wait.passed is not None:
            # A FUSE request cannot install descriptors: the reply shows -1 and INCOMPLETE_FDS.
            wait.passed.close()
            wait.passed = None
        if token is None:
            return
        if wait.errno:
            self._out.append(codec.reply_error(token.unique, wait.errno))
            return
        assert wait.reply is not None
        offset, size, flags = wait.reply
        try:
            self.write_reply(token, offset, size, flags)
        except KdbusError as exc:
            self._out.append(codec.reply_error(token.unique, exc.errno))
            return
        self._out.append(ioctl_answer(token.unique, b""))

    def write_reply(self, token: Blocked | Supervised, offset: int, size: int, flags: int) -> None:
        # return_flags, msg_address (unchanged) and reply, in one write: SEND is _IOW, so the
        # caller's memory is the only way back.
        self.host.write(token.tid, token.address + 16, _ANSWER.pack(0, token.msg_address, offset,
                                                                      size, flags))

    def _ok(self, request: Request) -> bytes:
        return b""

    # -- FUSE operations ----------------------------------------------------------------------
    def _init(self, request: Request) -> bytes:
        kernel = codec.parse_init(request.body)
        if kernel.major != p.KERNEL_VERSION:
            raise KdbusError(errno.EPROTO, f"FUSE protocol {kernel.major}.{kernel.minor} unsupported")
        self.initialized = True
        wanted = p.ASYNC_READ | p.PARALLEL_DIROPS
        # Passthrough (registering backing files needs CAP_SYS_ADMIN): a client's pool mapping is
        # then the daemon's memfd itself, and pool bytes need no copying into page caches.
        if self.pool_files is not None and os.geteuid() == 0 and kernel.flags & p.PASSTHROUGH:
            wanted |= p.PASSTHROUGH
            self.passthrough = True
        log.info("FUSE protocol %d.%d%s", kernel.major, kernel.minor,
                 ", pools by passthrough" if self.passthrough else "")
        # No readahead: it would lock page-cache pages of a pool in advance, and a NOTIFY_STORE
        # into such a page would wait for a READ that this single thread has yet to answer.
        return codec.init_out(kernel, wanted, max_write=PAGE_SIZE, max_readahead=0)

    def _open(self, request: Request) -> bytes:
        nodeid = request.header.nodeid
        h = request.header
        # One status read and one user-namespace lookup serve both the creds and the namespace.
        process = self.host.process(h.pid, h.uid, h.gid)
        opener = process.creds()
        if nodeid == CONTROL_ID:
            if not self.domain.active:
                raise KdbusError(errno.ESHUTDOWN, "domain is shutting down")
            node = Node(CONTROL_ID)
            handle = Handle(Control(self.domain), opener)
            open_flags = p.FOPEN_DIRECT_IO | p.FOPEN_NONSEEKABLE
        else:
            node = self.tree.node(nodeid)
            endpoint = node.obj
            if isinstance(endpoint, BusStats):
                return self._open_stats(node, endpoint.bus, opener)
            if not isinstance(endpoint, Endpoint):
                raise KdbusError(errno.EISDIR, "not an endpoint")
            if not (endpoint.active and endpoint.bus.active):
                raise KdbusError(errno.ESHUTDOWN, f"endpoint {endpoint.name} is going away")
            # No pid: a task the mount's pid namespace cannot see, nor can we see its namespaces.
            userns = process.userns() if h.pid else UNKNOWN_USERNS
            handle = Handle(endpoint, opener, opener_userns=userns)
            open_flags = 0
        opened = OpenFile(node, handle)
        if nodeid != CONTROL_ID and self.passthrough:
            self._back_with_memfd(opened)
        return self._register(opened, open_flags)

    def _register(self, opened: OpenFile, open_flags: int) -> bytes:
        fh = self.tree.register(opened)
        if opened.backing_id is not None:
            return codec.open_out(fh, p.FOPEN_PASSTHROUGH, opened.backing_id)
        return codec.open_out(fh, open_flags)

    def _open_stats(self, node: Node, bus: Bus, opener: Creds) -> bytes:
        """A bus's statistics as they are now: each open reads one consistent snapshot."""
        if not bus.active:
            raise KdbusError(errno.ENOENT, f"bus {bus.name} is gone")
        # Compact: json's C encoder serves only that (about 12 ms for a bus of 1,000 connections).
        contents = (json.dumps(stats.snapshot(bus), separators=(",", ":")) + "\n").encode()
        # A handle nothing can run a command on (ioctls on this file are refused before).
        opened = OpenFile(node, Handle(Control(self.domain), opener), contents=contents)
        return self._register(opened, p.FOPEN_DIRECT_IO)

    def _back_with_memfd(self, opened: OpenFile) -> None:
        """Give the open a memfd the kernel reads and maps directly: the connection's pool."""
        assert self.pool_files is not None
        try:
            backing = self.pool_files.open()
        except OSError as exc:
            log.warning("passthrough unavailable (%s): pools go through the page cache", exc.strerror)
            self.passthrough = False
            return
        if backing is not None:
            opened.backing_fd, opened.backing_id = backing
            opened.handle.pool_memory = functools.partial(map_pool, opened.backing_fd)

    def _read(self, request: Request) -> bytes:
        fh, offset, size, *_ = p.READ_IN.unpack_from(request.body)
        opened = self.tree.file(fh)
        if opened.contents is not None:
            return opened.contents[offset : offset + size]
        handle = opened.handle
        if handle.type is not HandleType.CONNECTED or handle.conn is None:
            raise KdbusError(errno.EINVAL, "only a connection's pool can be read")
        pool = handle.conn.pool
        return bytes(pool.buffer[offset : min(offset + size, pool.size)])

    def _write(self, request: Request) -> bytes:
        # kdbus files have no write operation, which the VFS answers with EINVAL.
        raise KdbusError(errno.EINVAL, "kdbus nodes are not writable; pools are read-only")

    def _release(self, request: Request) -> bytes:
        fh = p.RELEASE_IN.unpack_from(request.body)[0]
        opened = self.tree.release(fh)
        if opened is None:
            return b""
        handle = opened.handle
        handle.release()
        self.host.forget_senders()
        if opened.backing_fd is not None and opened.backing_id is not None and self.pool_files is not None:
            self.pool_files.close(opened.backing_fd, opened.backing_id)
        return b""

    cdef object _ioctl(self, Request request):
        """A kdbus command: the whole reply, None while a synchronous call blocks, or Refused."""
        cdef IoctlArgs args
        cdef bytes in_data = ioctl_args(request.body, &args)
        cdef Header h = request.header
        if args.flags & _IOCTL_DIR:
            raise KdbusError(errno.ENOTTY, "no ioctls on directories")
        opened = self._file(args.fh)
        if opened.contents is not None:
            raise KdbusError(errno.ENOTTY, "a stats file takes no commands")
        caller = self._caller(h.pid, h.uid, h.gid, self.device)
        if args.cmd == _SUPERVISE:
            # kdbusfs's own command (descriptors and seccomp are the edge's business, not kdbus's).
            try:
                out = self.launched.supervise(opened, in_data, caller)
            finally:
                caller.done()
            return codec.reply(request.unique, out) if type(out) is bytes else out
        try:
            out = attempt(opened.handle, args.cmd, args.arg, in_data, caller)
        finally:
            caller.done()
        if type(out) is bytes:
            return ioctl_answer(request.unique, out)
        if type(out) is _REFUSED:
            return out
        if isinstance(out, Connected):
            self._connected(opened, out.conn)
            return ioctl_answer(request.unique, out.out)
        if isinstance(out, Pending):
            # A synchronous call: answered when its reply, error, timeout or interrupt comes.
            self.calls.block(out, Blocked(request.unique, h.pid, out.address, out.msg_address))
            return None
        raise AssertionError(f"a command returned {out!r}")

    def _connected(self, opened: OpenFile, conn: Connection) -> None:
        """HELLO made `conn` on the file: its node now stands for it, and its pool is mapped."""
        self.tree.connected(opened, conn)
        if opened.backing_fd is None:
            # Grow the inode to the pool's size so mappings of the whole pool can fault.
            last = conn.pool.size - PAGE_SIZE
            self._out.append(codec.notify_store(opened.node.nodeid, last, conn.pool.buffer[last:]))
        else:
            seal_pool(opened.backing_fd)
        self.domain.wake(conn)

    def _store(self, nodeid: int, pool: Pool) -> None:
        """Push freshly written pool bytes into the client's page cache, whole pages at a time."""
        for start, end in pool.take_dirty():
            first = start - start % PAGE_SIZE
            last = min(-(-end // PAGE_SIZE) * PAGE_SIZE, pool.size)
            self._out.append(codec.notify_store(nodeid, first, memoryview(pool.buffer)[first:last]))

    cdef bytes _poll(self, Request request):
        """The events ready on a file now (the whole reply); a kdbus file notifies when later."""
        cdef PollArgs args
        poll_args(request.body, &args)
        opened = self._file(args.fh)
        if opened.contents is not None:
            return poll_answer(request.unique, POLLIN | POLLOUT)  # as any regular file
        handle = opened.handle
        cdef Connection conn = handle.conn
        if handle.type is not _CONNECTED_HANDLE or conn is None or not conn.active:
            return poll_answer(request.unique, POLLERR_HUP)
        if conn.is_readable():
            return poll_answer(request.unique, POLLOUT | POLLIN)
        if args.flags & _SCHEDULE_NOTIFY:
            opened.pollers.add(args.kh)
        return poll_answer(request.unique, POLLOUT)

    def _interrupt(self, request: Request) -> None:
        """A caller blocked in a synchronous SEND got a signal (calls.py says what follows)."""
        (unique,) = p.INTERRUPT_IN.unpack_from(request.body)
        self.calls.interrupt(unique, time.monotonic_ns())
        return None

    def shutdown(self) -> None:
        self.domain.shutdown()
        self.host.close()
