"""Classic D-Bus clients on a kdbusfs bus (`-o dbus_socket=PATH`).

The daemon serves a unix socket for the classic D-Bus protocol itself; each client becomes a kdbus
connection made and driven in-process through the one command dispatch (handle.ioctl), so that
policy, quotas, names, matches, monitors and notifications stay the bus's.

    endpoint.py   ClassicEndpoint: the listening socket, the bus it serves (made if absent), the
                  clients, and the eventfd that says one of their connections was woken
      listening.py   the listening socket, made before the mount
      admission.py   clients that have not said Hello: per-uid and total bounds, the timer
      peer.py        who the peer is (SO_PEERCRED, SO_PEERGROUPS) and its process facts, at accept
      closures.py    how a client's end is logged, by whose doing it was
      client.py   ClassicClient: one socket, its authentication, its messages both ways
        sasl.py        the SASL server (EXTERNAL, NEGOTIATE_UNIX_FD), no I/O
        framing.py     the byte stream cut into messages and their descriptors, no I/O
        commands.py    ClassicConnection: its kdbus connection, commands built in daemon memory
          caller.py      ClassicCaller: the model's Caller for it (arena memory, peer creds, fds)
        translate.py   classic message <-> kdbus message with a GVariant D-Bus payload, no I/O
        driver.py      org.freedesktop.DBus answered with kdbus commands
        subscriptions.py  match rules as kdbus matches shared between rules; the driver's signals
        matchrule.py   match-rule strings, exact matching, sd-bus's bloom masks and filters, no I/O

Ownership: the endpoint holds its clients (by socket) and, if it made the bus, the bus owner's
handle; a client holds its socket, its buffers and its ClassicConnection, whose Handle holds the
kdbus connection. Closing a client releases that handle as the last close of a connection's file
does; the file system tells the endpoint of its connections' wakes (Filesystem.in_process, by id).
"""
