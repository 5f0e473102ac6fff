"""The kdbus model, free of I/O.

Who owns what (each object pins the ones below it; teardown runs top-down):

    Domain (one per mount)          control node, id counter, per-user accounting
      Bus (<uid>-<name>/)           owned by the control handle that made it; bloom parameters, id128
        Endpoint (bus, <uid>-<ep>)  the files clients open
          Connection (one per HELLO) pool, flags, attach flags, description, metadata snapshot

Handles (`kdbusfs.handle.Handle`) are the open files; one setup ioctl fixes what a handle is.
Nothing here imports trio or makes a syscall: callers pass in caller credentials and memory.
"""
