"""The FUSE kernel protocol, spoken directly over /dev/fuse (no libfuse: it cannot carry ioctl).

`protocol` holds the numbers and layouts of include/uapi/linux/fuse.h, `codec` turns request bytes into
objects and replies into bytes without I/O, `session` is the trio loop at the edge, `mount` gets a
/dev/fuse descriptor mounted.
"""
