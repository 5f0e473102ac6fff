"""A classic D-Bus client (GDBus, python3-gi: run it with the system python3) that calls one method
with a large `ay` and checks that the reply holds the same bytes.

    classic_big.py DEST SIZE SEED   -> "ok SIZE" / "mismatch SIZE" / "error NAME"

The bytes are random.Random(SEED).randbytes(SIZE), so the test knows them without a copy through a
pipe. GVariant's (ay) is the bytes themselves: built and read without a Python object per byte.
"""

import random
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402


def main() -> None:
    dest, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = random.Random(seed).randbytes(size)
    conn = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
    args = GLib.Variant.new_from_bytes(GLib.VariantType.new("(ay)"), GLib.Bytes.new(data), True)
    try:
        reply = conn.call_sync(dest, "/org/example/Big", "org.example.Big", "Echo", args,
                               GLib.VariantType.new("(ay)"), Gio.DBusCallFlags.NONE, 60000, None)
    except GLib.Error as exc:
        print("error", Gio.DBusError.get_remote_error(exc) or exc.message, flush=True)
        return
    echoed = reply.get_data_as_bytes().get_data()
    print("ok" if echoed == data else "mismatch", len(echoed), flush=True)


if __name__ == "__main__":
    main()
