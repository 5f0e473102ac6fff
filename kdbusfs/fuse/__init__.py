"""The FUSE kernel protocol, spoken directly over /dev/fuse (no libfuse: it cannot carry ioctl).

`protocol` holds the numbers and layouts of include/uapi/linux/fuse.h, `codec` turns request bytes into
objects and replies into bytes without I/O, `session` is the serving loop at the edge (a blocking
epoll loop on a thread of its own; cli.py keeps signals and unmounting in trio), `mount` gets a
/dev/fuse descriptor mounted.
"""
