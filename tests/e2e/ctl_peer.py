"""Peers for the kdbusctl tests, made with kdbusfs.client: run as root or as the test user (with the
staged runtime), `python ctl_peer.py MOUNT_ROOT BUS_SUFFIX NAME`.

Makes the bus "<euid>-BUS_SUFFIX" and three connections: a server that owns NAME, answers D-Bus
calls (sd-bus's GVariant framing) with a METHOD_RETURN "s" of "pong" and its arguments (method
Fail: an error org.example.Error.Nope), and raw calls with b"raw:" + the payload, and that receives
signals of interface org.example.Clock through an sd-bus-style bloom match; a second connection
queued for NAME; an activator for org.example.Lazy. Prints "bus PATH", then "ready SERVER QUEUED
ACTIVATOR"; then one line per signal received: "signal MEMBER JSON-BODY". Stdin "quit" (or EOF)
ends it. Only the standard library, trio and kdbusfs are imported.
"""

from __future__ import annotations

import json
import sys
import threading

from kdbusfs.client import BloomFilter, CommandError, Connection, Kind, Message, make_bus, match
from kdbusfs.dbus import DBusMessage, MessageType, notation, wire

CLOCK = "org.example.Clock"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def answer(server: Connection, message: Message) -> None:
    if not wire.looks_like_message(message.payload):
        server.reply(message, b"raw:" + message.payload)
        return
    call = wire.decode(message.payload).replace(sender=f":1.{message.src_id}")
    if call.member == "Fail":
        reply = DBusMessage.error(call, "org.example.Error.Nope", "nope", serial=server.next_cookie())
    else:
        text = "pong " + notation.format_arguments(call.signature, call.body)
        reply = DBusMessage.method_return(call, "s", (text.strip(),), serial=server.next_cookie())
    server.reply(message, wire.encode_gvariant(reply))


def serve(server: Connection) -> None:
    while True:
        try:
            message = server.recv()
        except (CommandError, ValueError):
            return  # closed
        if message.expects_reply:
            answer(server, message)
        elif message.is_signal and not message.is_kernel:
            signal = wire.decode(message.payload)
            if signal.type == MessageType.SIGNAL:
                say(f"signal {signal.member} {json.dumps(notation.to_json(signal.signature, signal.body))}")


def main(root: str, suffix: str, name: str) -> None:
    with make_bus(root, suffix) as bus:
        say(f"bus {bus.endpoint}")
        with bus.connect(description="ctl-server") as server, \
                bus.connect(description="ctl-queued") as queued, \
                bus.connect(kind=Kind.ACTIVATOR, name="org.example.Lazy") as activator:
            server.acquire_name(name)
            queued.acquire_name(name, queue=True)
            mask = BloomFilter.for_match(server.bloom.size, server.bloom.n_hash, interface=CLOCK)
            server.add_match([match.bloom_mask(mask)], cookie=1)
            threading.Thread(target=serve, args=(server,), daemon=True).start()
            say(f"ready {server.id} {queued.id} {activator.id}")
            for line in sys.stdin:
                if line.strip() == "quit":
                    break


if __name__ == "__main__":
    main(*sys.argv[1:4])
