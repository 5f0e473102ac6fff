"""One classic D-Bus client: its socket, its authentication, its messages both ways.

The client's life: SASL (sasl.py) until BEGIN; then its first message must be Hello, which makes
its kdbus connection (commands.py) on the endpoint's bus; then each message it sends goes to the
driver (driver.py) or onto the bus (translate.py), and each message its connection receives is
written back in the classic format. Everything runs on the serving thread, without blocking: the
socket is non-blocking, reads are bounded per wake-up, and what the client does not read piles up
in its outgoing buffer only up to a limit, past which its messages wait in its kdbus pool, where
the bus's quotas hold its senders back.
"""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING

from .. import limits
from ..abi.constants import DST_ID_BROADCAST, HELLO_MONITOR, SRC_ID_KERNEL, Item
from ..client.message import Message, ReplyLost
from ..dbus import DBusMessage, MessageFlags, MessageType
from ..dbus.errors import EncodeError
from ..errors import KdbusError
from . import fastwire
from .caller import ClassicCaller
from .closures import Ending
from .commands import ClassicConnection
from .driver import MONITORING, Answer, Driver, DriverError, driver_error, driver_reply
from .framing import MessageSplitter, ProtocolViolation
from .matchrule import DRIVER, DRIVER_PATH, InvalidRule, MatchRule, parse, signal_filter
from .sasl import AuthFailed, ServerAuth
from .subscriptions import Subscriptions, driver_signal, driver_signals, own_entries
from .translate import NO_REPLY, Untranslatable, error_for, from_kdbus, reserved_local, to_kdbus, unique_name

if TYPE_CHECKING:
    from .endpoint import ClassicEndpoint

log = logging.getLogger("kdbusfs.classic")

# Bytes read per recvmsg, and reads per wake-up: a client sending without pause must let the loop
# serve others in between. Reading stops early once what the client sent has filled its outgoing
# buffer (`held_back`): the rest waits in its socket, as the endpoint's hold would have it.
READ_SIZE = 256 * 1024
READS_PER_WAKE = 8
# Buffers one sendmsg writes (the kernel's UIO_MAXIOV is 1024): few calls for many small messages.
WRITE_BUFFERS = 64
# Reads when its end of the socket is gone: what it sent before closing is still taken (dbus-daemon
# delivers a signal sent right before the exit), but no more than its socket buffer can hold.
DRAIN_READS = 64
_FD_SPACE = socket.CMSG_SPACE(limits.CLASSIC_FDS_PER_MESSAGE * 4 * array.array("i").itemsize)
_TIMEOUT_TEXT = ("Did not receive a reply. Possible causes include: the remote application did not send "
                 "a reply, the message bus security policy blocked the reply, the reply timeout expired, "
                 "or the network connection was broken.")
_DEAD_TEXT = "Message recipient disconnected from message bus without replying"


class ClientClosed(Exception):
    """The client is done with: why (`ending`, which decides how loudly it is logged) and the
    details (the text)."""

    def __init__(self, ending: Ending, why: str) -> None:
        super().__init__(why)
        self.ending = ending


class ClassicClient:
    """A classic client of the endpoint, from its first byte to its socket's close."""

    def __init__(self, endpoint: ClassicEndpoint, sock: socket.socket, pid: int, uid: int, gid: int) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = pid
        self.uid = uid
        self.auth = ServerAuth(uid, endpoint.guid)
        self.splitter = MessageSplitter()
        self.caller = ClassicCaller(pid, uid, gid, endpoint.device, endpoint.close_fd)
        self.conn: ClassicConnection | None = None
        self.driver: Driver | None = None
        self.subscriptions = Subscriptions()
        # Classic bytes not written yet, each with the descriptors going with its first byte
        # (the client's own, closed once sent); how many bytes and descriptors that is.
        self.outgoing: deque[tuple[memoryview, list[int]]] = deque()
        self.outgoing_size = 0
        self.outgoing_fds = 0
        # Its reading end is gone (nothing more is written) / nothing more is read from it.
        self.write_failed = False
        self.read_done = False
        # Whole messages it sent are in the splitter, not dispatched: its outgoing buffer filled
        # up while they were (their answers would have gone there too).
        self.undispatched = False
        self._driver_serial = 0
        # After BecomeMonitor: the rules of what it sees (empty: everything).
        self.monitor_rules: list[MatchRule] | None = None
        self.closed = False
        self.connected_at = time.monotonic()

    @property
    def registered(self) -> bool:
        return self.conn is not None

    def describe(self) -> str:
        name = "unregistered"
        if self.conn is not None and self.conn.conn is not None:
            name = unique_name(self.conn.id)
        return f"classic client {name} (pid {self.pid}, uid {self.uid})"

    @property
    def held_back(self) -> bool:
        """It has as much unread as it may (the endpoint's hold): what it sends must wait."""
        return (self.outgoing_size >= limits.CLASSIC_OUTGOING_MAX
                or self.outgoing_fds >= limits.CLASSIC_OUTGOING_FDS_MAX)

    # -- reading ------------------------------------------------------------------------------
    def readable(self, reads: int = READS_PER_WAKE) -> None:
        try:
            self._read(reads)
        except ClientClosed:
            self.read_done = True  # a violation or the end: nothing after it is dispatched
            raise

    def _read(self, reads: int) -> None:
        for _ in range(reads):
            if self.undispatched and not self._dispatch_read():
                return  # its earlier messages still wait: the socket keeps the rest
            if self.held_back:
                return
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(READ_SIZE, _FD_SPACE, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                raise ClientClosed(Ending.SOCKET_FAILED, f"read failed: {exc.strerror}") from None
            fds = _received_fds(ancillary)
            if flags & socket.MSG_CTRUNC:
                self._discard(fds)
                raise ClientClosed(Ending.TOO_MANY_FDS, "more descriptors than a message may carry")
            if not data:
                self._discard(fds)
                raise ClientClosed(Ending.HUNG_UP, "the client closed its connection")
            self.take(data, fds)
            if len(data) < READ_SIZE:
                return

    def take(self, data: bytes, fds: list[int]) -> None:
        if not self.auth.done:
            self._discard(fds)  # nothing may pass descriptors before authenticating
            try:
                replies = self.auth.feed(data)
            except AuthFailed as exc:
                for reply in exc.replies:
                    self.queue(reply, [])
                raise ClientClosed(Ending.AUTH_FAILED, f"authentication failed: {exc.why}") from None
            for reply in replies:
                self.queue(reply, [])
            if not self.auth.done:
                return
            data, fds = self.auth.leftover, []
        if fds and not self.auth.unix_fd:
            self._discard(fds)
            raise ClientClosed(Ending.PROTOCOL_VIOLATION, "descriptors sent without NEGOTIATE_UNIX_FD")
        try:
            self.splitter.feed(data, fds)
        except ProtocolViolation as exc:
            raise ClientClosed(Ending.PROTOCOL_VIOLATION, f"protocol violation: {exc}") from None
        self._dispatch_read()

    def _dispatch_read(self) -> bool:
        """Dispatch the whole messages read, in order, until the outgoing buffer is full (a flood
        of calls with large answers, Introspect say, must not pile them up in one go); whether
        none is left waiting."""
        try:
            for message, message_fds in self.splitter.messages():
                try:
                    if message is not None:
                        self.dispatch(message, message_fds)
                    else:
                        log.debug("%s: a message of an unknown type ignored", self.describe())
                finally:
                    self._discard(message_fds)
                if self.held_back:
                    self.undispatched = True
                    return False
        except ProtocolViolation as exc:
            raise ClientClosed(Ending.PROTOCOL_VIOLATION, f"protocol violation: {exc}") from None
        self.undispatched = False
        return True

    def _discard(self, fds: list[int]) -> None:
        for fd in fds:
            self.endpoint.close_fd(fd)

    # -- messages from the client ---------------------------------------------------------------
    def dispatch(self, message: DBusMessage, fds: list[int]) -> None:
        reserved = reserved_local(message)
        if reserved is not None:
            raise ClientClosed(Ending.PROTOCOL_VIOLATION, f"protocol violation: {reserved}")
        if self.conn is None:
            if not (message.type == MessageType.METHOD_CALL and message.destination == DRIVER
                    and message.member == "Hello" and message.interface in (None, DRIVER)):
                # dbus-daemon's answer: an error, the connection kept (its time to say Hello runs on).
                log.debug("%s: a %s before Hello refused", self.describe(), message.type.label)
                wants_reply = not message.flags & MessageFlags.NO_REPLY_EXPECTED
                if message.type == MessageType.METHOD_CALL and wants_reply:
                    self.write_message(driver_error(message, "org.freedesktop.DBus.Error.AccessDenied",
                                                    "Client tried to send a message other than Hello without "
                                                    "being registered", self._next_serial()))
                return
            if message.signature:
                # dbus-daemon checks Hello's arguments as any driver call's; no connection yet.
                text = f"Call to Hello has wrong args ({message.signature}, expected )\n"
                self.write_message(driver_error(message, "org.freedesktop.DBus.Error.InvalidArgs", text,
                                                self._next_serial()))
                return
            self._hello(message)
            return
        if self.monitor_rules is not None:
            raise ClientClosed(Ending.PROTOCOL_VIOLATION, "a monitor sent a message")
        if message.destination == DRIVER:
            if message.type != MessageType.METHOD_CALL:
                return
            if (message.member == "BecomeMonitor" and message.interface in (None, MONITORING)
                    and message.path == DRIVER_PATH):
                self._become_monitor(message)
            else:
                self._driver_call(message)
            return
        try:
            self._send(message, fds)
        except (KdbusError, Untranslatable) as exc:
            if message.type != MessageType.METHOD_CALL or message.flags & MessageFlags.NO_REPLY_EXPECTED:
                log.debug("%s: %s dropped: %s", self.describe(), message.type.label, exc)
                return
            if isinstance(exc, KdbusError):
                name, text = error_for(exc.errno, message.destination)
            else:
                name, text = error_for(errno.ENXIO, message.destination)
            self.write_message(driver_error(message, name, text, self._next_serial()))

    def _hello(self, message: DBusMessage) -> None:
        bus_endpoint = self.endpoint.bus_endpoint()
        if bus_endpoint is None or not self.endpoint.may_connect(bus_endpoint, self.caller):
            self.write_message(driver_error(message, "org.freedesktop.DBus.Error.AccessDenied",
                                            "This bus does not accept this connection", self._next_serial()))
            raise ClientClosed(Ending.HELLO_REFUSED, "may not connect to the bus")
        conn = ClassicConnection(bus_endpoint, self.caller, self.caller.process().userns())
        try:
            conn_id = conn.hello(limits.CLASSIC_POOL_SIZE, self.auth.unix_fd, "classic")
            self.conn = conn
            for cookie, rules in own_entries(conn_id):
                conn.match_add(cookie, rules)
        except KdbusError as exc:
            if self.conn is None and conn.conn is not None:
                conn.close()
            name, text = ("org.freedesktop.DBus.Error.LimitsExceeded", "The maximum number of active "
                          "connections has been reached") if exc.errno == errno.EMFILE else (
                              "org.freedesktop.DBus.Error.Failed", f"Cannot connect to the bus: {exc.why}")
            self.write_message(driver_error(message, name, text, self._next_serial()))
            raise ClientClosed(Ending.HELLO_REFUSED, f"HELLO failed: {exc}") from None
        self.endpoint.registered(self)
        self.driver = Driver(conn, self.subscriptions, self.endpoint.machine_id)
        me = unique_name(conn_id)
        hello = DBusMessage.method_return(message, "s", (me,), serial=self._next_serial())
        self.write_message(hello.replace(sender=DRIVER, destination=me))
        self.write_message(driver_signal("NameAcquired", "s", (me,), self._next_serial(), me))

    def _become_monitor(self, message: DBusMessage) -> None:
        """BecomeMonitor: the client's connection is replaced by a kdbus monitor (which needs the
        bus owner's rights, as kdbus's monitors do); its names go, and it says no more."""
        assert self.conn is not None and self.conn.conn is not None
        me = unique_name(self.conn.id)
        message = message.replace(sender=me)
        try:
            if message.signature != "asu":
                raise DriverError("org.freedesktop.DBus.Error.InvalidArgs", "Call to BecomeMonitor has wrong "
                                  f"args ({message.signature}, expected asu)\n")
            try:
                rules = [parse(text) for text in message.body[0]]
            except InvalidRule as exc:
                raise DriverError("org.freedesktop.DBus.Error.MatchRuleInvalid", str(exc)) from None
            monitor = ClassicConnection(self.conn.conn.endpoint, self.caller, self.caller.process().userns())
            try:
                monitor.hello(limits.CLASSIC_POOL_SIZE, False, "classic-monitor", HELLO_MONITOR)
            except KdbusError as exc:
                raise DriverError("org.freedesktop.DBus.Error.AccessDenied",
                                  f"Connection {me} is not allowed to become a monitor: {exc.why}") from None
        except DriverError as exc:
            self.write_message(driver_error(message, exc.name, exc.text, self._next_serial()))
            return
        self.write_message(driver_reply(message, Answer(), self._next_serial()))
        self.write_message(driver_signal("NameLost", "s", (me,), self._next_serial(), me))
        old, self.conn = self.conn, monitor
        self.monitor_rules = rules
        self.endpoint.reregistered(self, old.id)
        old.close()

    def _driver_call(self, message: DBusMessage) -> None:
        assert self.driver is not None
        me = unique_name(self.driver.conn.id)
        message = message.replace(sender=me)
        try:
            answer = self.driver.call(message)
        except DriverError as exc:
            reply = driver_error(message, exc.name, exc.text, self._next_serial())
        else:
            reply = driver_reply(message, answer, self._next_serial())
        # What the call made the bus say first (NameOwnerChanged, NameAcquired, NameLost) comes
        # before the reply, as dbus-daemon sends it.
        self.receive_queued()
        if not message.flags & MessageFlags.NO_REPLY_EXPECTED:
            self.write_message(reply)

    def _send(self, message: DBusMessage, fds: list[int]) -> None:
        assert self.conn is not None and self.conn.conn is not None
        outbound = to_kdbus(message, self.conn.id)
        bloom = None
        if message.type == MessageType.SIGNAL:
            bus = self.conn.conn.bus
            bloom = bytes(signal_filter(message, bus.bloom_size, bus.bloom_n_hash))
        self.conn.send(outbound.destination, outbound.payload, flags=outbound.flags, cookie=outbound.cookie,
                       timeout_or_reply=outbound.timeout_or_reply, bloom=bloom, fds=fds)

    def _next_serial(self) -> int:
        self._driver_serial = self._driver_serial % 0xFFFF_FFFF + 1
        return self._driver_serial

    # -- messages to the client -----------------------------------------------------------------
    def receive_queued(self) -> None:
        """Take what the connection received (until the outgoing buffer is full) and queue it."""
        conn = self.conn
        if conn is None or self.closed:
            return
        if conn.conn is not None and not conn.conn.active:
            # Its bus went away (or the connection was torn down): so does the client, as a
            # dbus-daemon that stops drops its clients.
            self.read_done = True
            raise ClientClosed(Ending.CONNECTION_GONE, "its kdbus connection is gone")
        while (self.outgoing_size < limits.CLASSIC_OUTGOING_MAX
               and self.outgoing_fds < limits.CLASSIC_OUTGOING_FDS_MAX):
            if conn.conn is not None and not conn.conn.readable:
                return  # nothing queued: spare RECV its EAGAIN
            try:
                received = conn.recv()
            except KdbusError as exc:
                log.debug("%s: RECV failed: %s", self.describe(), exc)
                return
            if received is None:
                return
            if received.dropped:
                log.debug("%s lost %d messages (its pool or quota was full)", self.describe(),
                          received.dropped)
            fds = self.caller.received_fds
            self.caller.received_fds = []
            taken = False
            try:
                taken = self._deliver(received, fds)
            finally:
                if not taken:
                    self._discard(fds)

    def _deliver(self, received: Message, fds: list[int]) -> bool:
        """Queue what the client gets of `received`; whether its descriptors went with it (they
        are the daemon's own copies: the outgoing buffer takes them over, no second dup)."""
        assert self.conn is not None
        monitoring = self.monitor_rules is not None
        if received.src_id == SRC_ID_KERNEL:
            note = received.notification
            if isinstance(note, ReplyLost):
                if not monitoring:
                    self._reply_lost(note)
                return False
            for signal in driver_signals(note, self.conn.id, None if monitoring else self.subscriptions,
                                         self._next_serial):
                if self._monitor_wants(signal):
                    self.write_message(signal)
            return False
        try:
            message = from_kdbus(received, self.conn.id, monitor=monitoring)
        except Untranslatable as exc:
            log.debug("%s: message from %d not delivered: %s", self.describe(), received.src_id, exc)
            return False
        if monitoring:
            if self._monitor_wants(message):
                self.write_message(message)
            return False
        if received.dst_id == DST_ID_BROADCAST and not self.subscriptions.matches(message):
            return False  # the bloom let it through; the rule itself does not match
        self.write_message(message, fds)
        return True

    def _monitor_wants(self, message: DBusMessage) -> bool:
        rules = self.monitor_rules
        return rules is None or not rules or any(rule.matches(message) for rule in rules)

    def _reply_lost(self, note: ReplyLost) -> None:
        """A call of the client will get no reply: dbus-daemon's NoReply error instead."""
        assert self.conn is not None
        if note.cookie > 0xFFFF_FFFF:
            return
        timed_out = note.kind == Item.REPLY_TIMEOUT
        self.write_message(DBusMessage(MessageType.ERROR, self._next_serial(), MessageFlags.NO_REPLY_EXPECTED,
                                       error_name=NO_REPLY, reply_serial=note.cookie, sender=DRIVER,
                                       destination=unique_name(self.conn.id), signature="s",
                                       body=(_TIMEOUT_TEXT if timed_out else _DEAD_TEXT,)))

    def write_message(self, message: DBusMessage, fds: list[int] | None = None) -> None:
        """Queue `message` for the client; `fds` become the buffer's (closed once sent)."""
        try:
            data = fastwire.encode(message)
        except EncodeError as exc:
            log.debug("%s: cannot encode a %s: %s", self.describe(), message.type.label, exc)
            self._discard(fds or [])
            return
        self.queue(data, fds or [])

    def queue(self, data: bytes, fds: list[int]) -> None:
        if self.write_failed:
            self._discard(fds)  # nobody reads it any more
            return
        self.outgoing.append((memoryview(data), fds))
        self.outgoing_size += len(data)
        self.outgoing_fds += len(fds)

    def flush(self) -> None:
        """Write what the socket takes now; then dispatch the client's messages that waited for
        room in the outgoing buffer, and write their answers, until they are all dispatched or the
        buffer is full again. So messages wait only while it is full, and the endpoint, which
        flushes last on every wake and writes again when the socket has room, always comes back
        to them: nothing else would (they are read already, its socket may say nothing more)."""
        while True:
            self._write()
            if not self.undispatched or self.held_back or self.read_done or self.write_failed or self.closed:
                return
            try:
                self._dispatch_read()
            except ClientClosed:
                self.read_done = True
                raise

    def _write(self) -> None:
        """Write what the socket takes now, several buffers a call. Descriptors go with the first
        byte of a sendmsg, so a buffer carrying some starts one. MSG_NOSIGNAL: a closed socket is
        an EPIPE, not a signal to the daemon."""
        while self.outgoing and not self.write_failed:
            fds = self.outgoing[0][1]
            buffers = [self.outgoing[0][0]]
            for data, more in itertools.islice(self.outgoing, 1, WRITE_BUFFERS):
                if more:
                    break
                buffers.append(data)
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            try:
                sent = self.sock.sendmsg(buffers, ancillary, socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    self._drain()
                raise ClientClosed(Ending.SOCKET_FAILED, f"write failed: {exc.strerror}") from None
            if fds:
                self._discard(fds)
                self.outgoing_fds -= len(fds)
                self.outgoing[0] = (self.outgoing[0][0], [])
            self.outgoing_size -= sent
            while sent:
                data = self.outgoing[0][0]
                if sent < len(data):
                    self.outgoing[0] = (data[sent:], [])
                    break
                sent -= len(data)
                self.outgoing.popleft()

    def _drain(self) -> None:
        """Its reading end is gone: nothing more is written, but what it sent before is read and
        dispatched, as dbus-daemon does (dbus-send sends a signal and exits at once)."""
        self.write_failed = True
        self._drop_outgoing()
        if not (self.read_done or self.closed):
            with contextlib.suppress(ClientClosed):
                self.readable(DRAIN_READS)

    def _drop_outgoing(self) -> None:
        for _, fds in self.outgoing:
            self._discard(fds)
        self.outgoing.clear()
        self.outgoing_size = 0
        self.outgoing_fds = 0

    # -- the end ------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._drop_outgoing()
        self._discard(self.splitter.take_fds())
        self.sock.close()
        if self.conn is not None and self.conn.conn is not None:
            self.conn.close()


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
            fds.extend(received)
    return fds

