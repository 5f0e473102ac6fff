"""A classic D-Bus peer built on GDBus (python3-gi), driven line by line from stdin; run with the
system python3. It connects to DBUS_SYSTEM_BUS_ADDRESS, prints "name :1.N", then:

    own NAME                         RequestName            -> "owned N" or "error NAME"
    serve                            export /org/example/Echo (Echo(s)->s, ReadFd(h)->s, MakeFd()->h)
    call DEST METHOD ARG             org.example.Echo.METHOD(ARG) on DEST's /org/example/Echo
                                                            -> "reply TEXT" or "error NAME"
    callfd DEST TEXT                 ReadFd with a pipe holding TEXT -> "reply TEXT" or "error NAME"
    getfd DEST                       MakeFd, then read the fd  -> "reply TEXT" or "error NAME"
    match RULE                       AddMatch; matching signals print "signal SENDER MEMBER ARG0"
                                                            -> "matched" or "error NAME"
    matchmany COUNT RULE             AddMatch of RULE.format(i) for i in range(COUNT)
                                                            -> "matched COUNT" or "error NAME I"
    emit MEMBER ARG                  org.example.Echo.MEMBER(ARG) from /org/example/Echo
    quit

Calls the peer serves print "called METHOD SENDER" as they come.
"""

import os
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

IFACE = "org.example.Echo"
BUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
PATH = "/org/example/Echo"
XML = f"""<node><interface name="{IFACE}">
<method name="Echo"><arg direction="in" type="s"/><arg direction="out" type="s"/></method>
<method name="ReadFd"><arg direction="in" type="h"/><arg direction="out" type="s"/></method>
<method name="MakeFd"><arg direction="out" type="h"/></method>
</interface></node>"""


def say(*words: object) -> None:
    print(*words, flush=True)


def pipe_holding(text: str) -> int:
    read_end, write_end = os.pipe()
    os.write(write_end, text.encode())
    os.close(write_end)
    return read_end


def main() -> None:
    conn = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
    say("name", conn.get_unique_name())
    node = Gio.DBusNodeInfo.new_for_xml(XML)

    def on_call(_conn, sender, _path, _iface, method, params, invocation) -> None:  # type: ignore[no-untyped-def]
        say("called", method, sender)
        if method == "Echo":
            invocation.return_value(GLib.Variant("(s)", ("echo:" + params[0],)))
        elif method == "ReadFd":
            fd = invocation.get_message().get_unix_fd_list().get(params[0])
            invocation.return_value(GLib.Variant("(s)", (os.read(fd, 256).decode(),)))
            os.close(fd)
        elif method == "MakeFd":
            fds = Gio.UnixFDList.new_from_array([pipe_holding("from-classic")])
            invocation.return_value_with_unix_fd_list(GLib.Variant("(h)", (0,)), fds)

    def on_signal(_conn, sender, _path, _iface, member, params) -> None:  # type: ignore[no-untyped-def]
        say("signal", sender, member, params[0] if len(params) else "-")

    def call(dest: str, method: str, args: GLib.Variant | None, fds: Gio.UnixFDList | None = None) -> None:
        try:
            reply, out_fds = conn.call_with_unix_fd_list_sync(dest, PATH, IFACE, method, args, None,
                                                              Gio.DBusCallFlags.NONE, 10000, fds, None)
        except GLib.Error as exc:
            say("error", Gio.DBusError.get_remote_error(exc) or exc.message)
            return
        if method == "MakeFd":
            fd = out_fds.get(reply[0])
            say("reply", os.read(fd, 256).decode())
            os.close(fd)
        else:
            say("reply", reply[0])

    def on_line(channel, _condition) -> bool:  # type: ignore[no-untyped-def]
        line = channel.readline()
        if not line or line.strip() == "quit":
            loop.quit()
            return False
        command, _, rest = line.strip().partition(" ")
        if command == "own":
            try:
                result = conn.call_sync(*BUS, "RequestName", GLib.Variant("(su)", (rest, 4)), None,
                                        Gio.DBusCallFlags.NONE, 10000, None)
                say("owned", result[0])
            except GLib.Error as exc:
                say("error", Gio.DBusError.get_remote_error(exc) or exc.message)
        elif command == "serve":
            conn.register_object(PATH, node.interfaces[0], on_call, None, None)
            say("serving")
        elif command == "call":
            dest, method, arg = rest.split(" ", 2)
            call(dest, method, GLib.Variant("(s)", (arg,)))
        elif command == "callfd":
            dest, text = rest.split(" ", 1)
            fds = Gio.UnixFDList.new_from_array([pipe_holding(text)])
            call(dest, "ReadFd", GLib.Variant("(h)", (0,)), fds)
        elif command == "getfd":
            call(rest, "MakeFd", None)
        elif command == "match":
            try:
                conn.call_sync(*BUS, "AddMatch", GLib.Variant("(s)", (rest,)), None,
                               Gio.DBusCallFlags.NONE, 10000, None)
                say("matched")
            except GLib.Error as exc:
                say("error", Gio.DBusError.get_remote_error(exc) or exc.message)
        elif command == "matchmany":
            count, rule = rest.split(" ", 1)
            for index in range(int(count)):
                try:
                    conn.call_sync(*BUS, "AddMatch", GLib.Variant("(s)", (rule.format(index),)), None,
                                   Gio.DBusCallFlags.NONE, 10000, None)
                except GLib.Error as exc:
                    say("error", Gio.DBusError.get_remote_error(exc) or exc.message, index)
                    break
            else:
                say("matched", count)
        elif command == "emit":
            member, arg = rest.split(" ", 1)
            conn.emit_signal(None, PATH, IFACE, member, GLib.Variant("(s)", (arg,)))
            conn.flush_sync(None)
            say("emitted")
        return True

    # Signals reach the handler only where a match rule of ours (added with "match") lets them in.
    conn.signal_subscribe(None, None, None, None, None, Gio.DBusSignalFlags.NO_MATCH_RULE, on_signal)
    loop = GLib.MainLoop()
    GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.IO_IN | GLib.IO_HUP, on_line)
    loop.run()


if __name__ == "__main__":
    main()
