"""`kdbusctl`: look at a kdbus bus from the shell, as busctl looks at a D-Bus bus.

    kdbusctl list                       connections and well-known names, with pid, process, user
    kdbusctl status [NAME|ID]           a connection's metadata (CONN_INFO), or the bus creator's
    kdbusctl monitor [MATCH...]         every message on the bus, decoded (a monitor connection)
    kdbusctl capture [MATCH...] > f     the same as pcapng (DLT_DBUS), for Wireshark and tshark
    kdbusctl call DEST OBJECT INTERFACE METHOD [SIGNATURE [ARGS...]]
    kdbusctl emit OBJECT INTERFACE MEMBER [SIGNATURE [ARGS...]]
    kdbusctl make-bus NAME              a bus that lives until kdbusctl is interrupted

Built on `kdbusfs.client` (the connection) and `kdbusfs.dbus` (the D-Bus messages in payloads).
Modules: cli (options, verbs, errors), target (finding and opening the bus), peers (list,
status), watch (monitor, capture), traffic (kdbus messages as D-Bus messages), display (their text
and JSON), matching (MATCH rules), pcapng (the capture file), calls (call, emit, make-bus),
render (metadata).
"""

from .cli import main

__all__ = ["main"]
