"""`kdbusctl call`, `emit` and `make-bus`.

Calls and signals are D-Bus messages in sd-bus's GVariant framing (the payload kdbus-era peers
expect), the D-Bus serial equal to the kdbus cookie as sd-bus sent them; a signal is broadcast with
the bloom filter sd-bus computed for it (message type, interface, member, path and its prefixes,
leading string arguments), so sd-bus-style matches select it.
"""

from __future__ import annotations

import errno
import os
import re
import signal
from pathlib import Path
from typing import Any

from ..client import DST_ID_BROADCAST, BloomFilter, Bus, CommandError, Connection, make_bus
from ..client.message import Message
from ..dbus import DBusMessage, MessageFlags, MessageType, wire
from ..dbus.names import is_interface_name, is_member_name, is_object_path, is_well_known_name
from ..dbus.notation import parse_arguments
from .render import unique_name
from .target import CtlError

_CONNECTION = re.compile(r"(?::1\.)?([0-9]+)")


def destination(text: str) -> tuple[int | str, str]:
    """The kdbus destination (an id or a well-known name) and the D-Bus DESTINATION field."""
    matched = _CONNECTION.fullmatch(text)
    if matched:
        return int(matched.group(1)), unique_name(int(matched.group(1)))
    if not is_well_known_name(text):
        raise CtlError(f"'{text}' is neither a connection (:1.N or N) nor a well-known name")
    return text, text


def _check_names(path: str, interface: str, member: str) -> None:
    if not is_object_path(path):
        raise CtlError(f"'{path}' is not a valid object path")
    if not is_interface_name(interface):
        raise CtlError(f"'{interface}' is not a valid interface name")
    if not is_member_name(member):
        raise CtlError(f"'{member}' is not a valid member name")


def _body(signature_and_arguments: list[str]) -> tuple[str, tuple[Any, ...]]:
    if not signature_and_arguments:
        return "", ()
    signature, *words = signature_and_arguments
    try:
        return signature, parse_arguments(signature, words)
    except ValueError as exc:
        raise CtlError(f"bad arguments: {exc}") from None


def call(conn: Connection, target: str, path: str, interface: str, member: str,
         signature_and_arguments: list[str], *, expect_reply: bool, auto_start: bool,
         timeout: float) -> bytes | None:
    """Send the method call; the reply's payload (None without `expect_reply`). A D-Bus error
    reply raises CtlError."""
    kdbus_destination, field = destination(target)
    _check_names(path, interface, member)
    signature, body = _body(signature_and_arguments)
    cookie = conn.next_cookie()
    flags = (0 if expect_reply else MessageFlags.NO_REPLY_EXPECTED) | (
        0 if auto_start else MessageFlags.NO_AUTO_START)
    payload = wire.encode_gvariant(DBusMessage.method_call(field, path, interface, member, signature, body,
                                                           serial=cookie, flags=flags))
    try:
        if not expect_reply:
            conn.send(kdbus_destination, payload, cookie=cookie, no_auto_start=not auto_start)
            return None
        reply = conn.call(kdbus_destination, payload, cookie=cookie, timeout=timeout,
                          no_auto_start=not auto_start)
    except CommandError as exc:
        if exc.errno == errno.ETIMEDOUT:
            raise CtlError(f"no reply from {target} within {timeout:g} s") from None
        raise CtlError(f"call to {target} failed: {exc}") from None
    payload = _whole_payload(reply)
    if wire.looks_like_message(payload):
        try:
            answer = wire.decode(payload)
        except ValueError:
            return payload
        if answer.type == MessageType.ERROR:
            text = answer.error_text
            raise CtlError(f"call failed: {answer.error_name}{': ' + text if text else ''}")
    return payload


def _whole_payload(reply: Message) -> bytes:
    """The reply's payload with its memfd part read in, where sd-bus (and the classic endpoint,
    for a body of 512 KiB or more) put it: between the header's vector and the footer's."""
    if not reply.memfds:
        return reply.payload
    try:
        if len(reply.memfds) != 1 or len(reply.parts) != 2:
            raise CtlError(f"a reply of {len(reply.parts)} vectors and {len(reply.memfds)} memfds "
                           "is not a D-Bus message as sd-bus lays it out")
        (memfd,) = reply.memfds
        if memfd.fd < 0:
            raise CtlError(f"the reply's body ({memfd.size} bytes) came in a memfd, which only a "
                           "receiver started with `kdbusfs run` gets: run kdbusctl under it")
        body = os.pread(memfd.fd, memfd.size, memfd.start)
        if len(body) != memfd.size:
            raise CtlError(f"the reply's memfd holds {len(body)} of its {memfd.size} bytes")
        return reply.parts[0] + body + reply.parts[1]
    finally:
        for memfd in reply.memfds:
            if memfd.fd >= 0:
                os.close(memfd.fd)


def _leading_strings(body: tuple[Any, ...]) -> list[str]:
    """The arguments sd-bus put in a signal's bloom filter: the string ones up to the first other."""
    strings = []
    for value in body:
        if not isinstance(value, str):
            break
        strings.append(value)
    return strings


def emit(conn: Connection, path: str, interface: str, member: str, signature_and_arguments: list[str], *,
         target: str | None = None) -> int:
    """Broadcast the signal (or send it to `target`); returns its cookie."""
    _check_names(path, interface, member)
    kdbus_destination: int | str = DST_ID_BROADCAST
    field = None
    if target is not None:
        kdbus_destination, field = destination(target)
    signature, body = _body(signature_and_arguments)
    cookie = conn.next_cookie()
    payload = wire.encode_gvariant(DBusMessage.signal(path, interface, member, signature, body,
                                                      serial=cookie, destination=field))
    bloom = BloomFilter.for_signal(conn.bloom.size, conn.bloom.n_hash, interface=interface, member=member,
                                   path=path, args=_leading_strings(body))
    try:
        return conn.emit(payload, bloom, destination=kdbus_destination, cookie=cookie)
    except CommandError as exc:
        raise CtlError(f"emitting {interface}.{member} failed: {exc}") from None


def hold_bus(root: Path, name: str, *, world: bool, group: bool) -> Bus:
    """Make the bus (it lives while the returned Bus stays open)."""
    try:
        return make_bus(root, name, world_access=world, group_access=group)
    except CommandError as exc:
        if exc.errno == errno.EEXIST:
            raise CtlError(f"a bus '{name}' exists in {root} already") from None
        raise CtlError(f"cannot make bus '{name}' in {root}: {exc}") from None
    except PermissionError:
        raise CtlError(f"may not make buses in {root}: permission denied") from None
    except OSError as exc:
        raise CtlError(f"cannot make bus '{name}' in {root}: {exc.strerror or exc}") from None


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def block_stop_signals() -> None:
    """Hold SIGINT, SIGTERM and SIGHUP for `wait_for_stop_signal`: blocked before the bus is
    announced, none sent after the announcement can end the process before it removes the bus."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def wait_for_stop_signal() -> None:
    signal.sigwait(STOP_SIGNALS)
