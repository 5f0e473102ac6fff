"""The raw FUSE floor: a minimal responder on kdbusfs's own session loop and codec.

It serves one file, `f`, and answers every ioctl with 0 and no further work. What kdbusfs does per
ioctl beyond this floor is the cost of kdbus itself.  usage: python raw_fuse.py MOUNTPOINT
"""

from __future__ import annotations

import errno
import stat
import sys

from kdbusfs.fuse import codec
from kdbusfs.fuse import mount as fuse_mount
from kdbusfs.fuse import protocol as p
from kdbusfs.fuse.codec import Attr, Request
from kdbusfs.fuse.session import Session

FILE_ID = 2


class RawServer:
    watch: list[int] = []
    unwatch: list[int] = []
    listen: list[int] = []

    def cancel_fd_ready(self, fd: int) -> list[bytes]:
        return []

    def listener_ready(self, listener: int, notification: object) -> list[bytes]:
        return []

    def listener_gone(self, listener: int) -> None:
        pass

    def handle(self, request: Request) -> list[bytes]:
        return handle(request)

    def next_deadline(self) -> None:
        return None

    def tick(self) -> list[bytes]:
        return []

    def close_fd(self, fd: int) -> None:
        pass


def handle(request: Request) -> list[bytes]:
    op, unique = request.opcode, request.unique
    if op == p.Opcode.IOCTL:
        return [codec.reply(unique, codec.ioctl_out(0))]
    if op == p.Opcode.INIT:
        init = codec.parse_init(request.body)
        return [codec.reply(unique, codec.init_out(init, 0, max_write=4096))]
    if op == p.Opcode.LOOKUP and codec.name_arg(request.body) == b"f":
        return [codec.reply(unique, codec.entry_out(FILE_ID, _attr(FILE_ID), 3600, 3600))]
    if op == p.Opcode.GETATTR:
        return [codec.reply(unique, codec.attr_out(_attr(request.header.nodeid), 3600))]
    if op in (p.Opcode.OPEN, p.Opcode.OPENDIR):
        return [codec.reply(unique, codec.open_out(0, p.FOPEN_DIRECT_IO))]
    if op in (p.Opcode.FORGET, p.Opcode.BATCH_FORGET, p.Opcode.INTERRUPT):
        return []
    if op in (p.Opcode.RELEASE, p.Opcode.RELEASEDIR, p.Opcode.FLUSH, p.Opcode.DESTROY):
        return [codec.reply(unique)]
    return [codec.reply_error(unique, errno.ENOSYS if op != p.Opcode.LOOKUP else errno.ENOENT)]


def _attr(nodeid: int) -> Attr:
    if nodeid == p.ROOT_ID:
        return Attr(nodeid, 0, stat.S_IFDIR | 0o755, 2, 0, 0, 0)
    return Attr(nodeid, 0, stat.S_IFREG | 0o666, 1, 0, 0, 0)


def main() -> None:
    mountpoint = sys.argv[1]
    fd = fuse_mount.mount(mountpoint, "rawfuse", "rawfuse", allow_other=False)
    session = Session(fd, RawServer())
    session.run()
    session.close()


if __name__ == "__main__":
    main()
