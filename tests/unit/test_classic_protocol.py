"""The classic endpoint's pure parts: SASL as dbus-daemon answers it, cutting the byte stream into
messages, match rules (parsing, exact matching, bloom masks), and translating messages to and from
what kdbus-era libraries put on the bus."""

from __future__ import annotations

import pytest

from kdbusfs import limits
from kdbusfs.abi.constants import (
    DST_ID_BROADCAST,
    MSG_EXPECT_REPLY,
    MSG_NO_AUTO_START,
    MSG_SIGNAL,
    PAYLOAD_DBUS,
)
from kdbusfs.classic.framing import MessageSplitter, ProtocolViolation
from kdbusfs.classic.matchrule import InvalidRule, parse, signal_filter, signal_mask
from kdbusfs.classic.sasl import AuthFailed, ServerAuth, State
from kdbusfs.classic.translate import (
    Untranslatable,
    connection_id,
    error_for,
    from_kdbus,
    reserved_local,
    to_kdbus,
    unique_name,
)
from kdbusfs.client.bloom import BloomFilter
from kdbusfs.client.message import Message
from kdbusfs.dbus import DBusMessage, MessageFlags, wire

GUID = "0123456789abcdef0123456789abcdef"
UID_1000 = b"1000".hex().encode()


def auth(uid: int = 1000) -> ServerAuth:
    return ServerAuth(uid, GUID)


# -- SASL ---------------------------------------------------------------------------------------

def test_external_with_the_peers_uid_then_unix_fds_then_begin() -> None:
    server = auth()
    assert server.feed(b"\0AUTH EXTERNAL " + UID_1000 + b"\r\n") == [f"OK {GUID}\r\n".encode()]
    assert server.feed(b"NEGOTIATE_UNIX_FD\r\n") == [b"AGREE_UNIX_FD\r\n"]
    assert server.feed(b"BEGIN\r\nl\x01\x00\x01") == []
    assert server.done and server.unix_fd
    assert server.leftover == b"l\x01\x00\x01"


def test_external_without_an_identity_asks_for_data_and_takes_the_socket_s_uid() -> None:
    server = auth()
    assert server.feed(b"\0AUTH EXTERNAL\r\n") == [b"DATA\r\n"]
    assert server.feed(b"DATA\r\n") == [f"OK {GUID}\r\n".encode()]
    assert server.state is State.WAITING_FOR_BEGIN


def test_lines_may_arrive_in_pieces() -> None:
    server = auth()
    replies = [reply for piece in (b"\0AU", b"TH EXTER", b"NAL ", UID_1000, b"\r", b"\nBEGIN\r\n")
               for reply in server.feed(piece)]
    assert replies == [f"OK {GUID}\r\n".encode()]
    assert server.done and not server.unix_fd


@pytest.mark.parametrize(("lines", "answer"), [
    # Each as dbus-daemon answered it on the wire.
    (b"AUTH\r\n", b"REJECTED EXTERNAL\r\n"),
    (b"AUTH DBUS_COOKIE_SHA1 31\r\n", b"REJECTED EXTERNAL\r\n"),
    (b"AUTH EXTERNAL " + b"0".hex().encode() + b"\r\n", b"REJECTED EXTERNAL\r\n"),
    (b"AUTH EXTERNAL zz\r\n", b'ERROR "Invalid hex encoding"\r\n'),
    (b"HELLO\r\n", b'ERROR "Unknown command"\r\n'),
    (b"NEGOTIATE_UNIX_FD\r\n", b'ERROR "Need to authenticate first"\r\n'),
    (b"DATA 00\r\n", b'ERROR "Not currently in an auth conversation"\r\n'),
    (b"ERROR\r\n", b"REJECTED EXTERNAL\r\n"),
])
def test_refusals_are_dbus_daemon_s(lines: bytes, answer: bytes) -> None:
    assert auth().feed(b"\0" + lines) == [answer]


def test_after_ok_only_begin_negotiation_or_cancel() -> None:
    server = auth()
    server.feed(b"\0AUTH EXTERNAL " + UID_1000 + b"\r\n")
    assert server.feed(b"AUTH EXTERNAL\r\n") == [b'ERROR "Sent AUTH while expecting BEGIN"\r\n']
    assert server.feed(b"CANCEL\r\n") == [b"REJECTED EXTERNAL\r\n"]
    assert server.state is State.WAITING_FOR_AUTH


@pytest.mark.parametrize("opening", [
    b"AUTH\r\n",  # no NUL byte first
    b"\0BEGIN\r\n",  # BEGIN before authenticating
    b"\0" + b"A" * (limits.CLASSIC_AUTH_LINE_MAX + 1),  # an endless line
])
def test_what_ends_the_connection(opening: bytes) -> None:
    with pytest.raises(AuthFailed):
        auth().feed(opening)


def test_the_sixth_rejection_ends_the_connection_after_saying_so() -> None:
    server = auth()
    for _ in range(limits.CLASSIC_AUTH_MAX_REJECTIONS - 1):
        assert server.feed(b"\0AUTH FOO\r\n"[0 if server.state is State.WAITING_FOR_NUL else 1:]) == [
            b"REJECTED EXTERNAL\r\n"]
    with pytest.raises(AuthFailed) as failed:
        server.feed(b"AUTH FOO\r\n")
    assert failed.value.replies == [b"REJECTED EXTERNAL\r\n"]


# -- framing ------------------------------------------------------------------------------------

def _call(serial: int = 7, **changes: object) -> DBusMessage:
    message = DBusMessage.method_call("org.example.Echo", "/echo", "org.example.Echo", "Echo", "s", ("hi",),
                                      serial=serial)
    return message.replace(**changes) if changes else message


@pytest.mark.parametrize("big_endian", [False, True])
def test_messages_of_both_endiannesses_cut_from_a_stream_byte_by_byte(big_endian: bool) -> None:
    first = wire.encode_dbus1(_call(1), big_endian=big_endian)
    second = wire.encode_dbus1(_call(2, signature="h", body=(0,), unix_fds=1), big_endian=big_endian)
    splitter = MessageSplitter()
    got = []
    for i, byte in enumerate(first + second):
        splitter.feed(bytes([byte]), [42] if i == len(first) else None)
        got += list(splitter.messages())
    assert [(message.serial, fds) for message, fds in got] == [(1, []), (2, [42])]
    assert got[0][0] == _call(1)


@pytest.mark.parametrize(("mangle", "why"), [
    (lambda data: b"x" + data[1:], "endianness"),
    (lambda data: data[:3] + b"\x02" + data[4:], "version"),
    (lambda data: data[:1] + b"\x00" + data[2:], "message type 0"),
    (lambda data: data[:4] + (limits.CLASSIC_MESSAGE_MAX).to_bytes(4, "little") + data[8:], "D-Bus allows"),
    (lambda data: data[:-3] + b"\xff\xff\xff", "undecodable"),
])
def test_a_broken_message_is_a_protocol_violation(mangle: object, why: str) -> None:
    splitter = MessageSplitter()
    splitter.feed(mangle(wire.encode_dbus1(_call())))  # type: ignore[operator]
    with pytest.raises(ProtocolViolation, match=why):
        list(splitter.messages())


@pytest.mark.parametrize("big_endian", [False, True])
def test_a_message_of_an_unknown_type_is_ignored_with_its_descriptors(big_endian: bool) -> None:
    """The specification: a message of an unknown type is ignored (dbus-daemon drops it and keeps
    its sender; the endpoint used to close the client). Its descriptors are still its own."""
    call = _call(1, signature="h", body=(0,), unix_fds=2)
    unknown = bytearray(wire.encode_dbus1(call, big_endian=big_endian))
    unknown[1] = 9
    after = wire.encode_dbus1(_call(2, signature="h", body=(0,), unix_fds=1), big_endian=big_endian)
    splitter = MessageSplitter()
    splitter.feed(bytes(unknown) + after, [40, 41, 42])
    got = list(splitter.messages())
    assert [(None if message is None else message.serial, fds) for message, fds in got] == [
        (None, [40, 41]), (2, [42])]
    # Its header is still read: a broken one is a violation.
    unknown[18] = ord("(")  # the first field's variant: an unbalanced signature
    broken = MessageSplitter()
    broken.feed(bytes(unknown), [40, 41])
    with pytest.raises(ProtocolViolation, match="undecodable header"):
        list(broken.messages())


def test_a_message_declaring_descriptors_that_never_came() -> None:
    splitter = MessageSplitter()
    splitter.feed(wire.encode_dbus1(_call(signature="h", body=(0,), unix_fds=1)))
    with pytest.raises(ProtocolViolation, match="declares 1"):
        list(splitter.messages())


# -- match rules --------------------------------------------------------------------------------

def _signal(member: str = "Changed", signature: str = "s", body: tuple[object, ...] = ("org.example.A",),
            path: str = "/org/example", sender: str = ":1.5") -> DBusMessage:
    signal = DBusMessage.signal(path, "org.example.Iface", member, signature, body, serial=3)
    return signal.replace(sender=sender)


def test_parsing_quotes_and_escaped_apostrophes() -> None:
    rule = parse("type='signal', member='Changed',arg0='it'\\''s',arg2path='/a/'")
    assert rule.member == "Changed" and rule.args == {0: "it's"} and rule.arg_paths == {2: "/a/"}
    assert parse("member='Changed',type='signal'") == parse("type='signal',member='Changed'")


@pytest.mark.parametrize("text", [
    "foo='x'", "type='nonsense'", "member='Changed',member='Other'", "path='/a',path_namespace='/b'",
    "arg64='x'", "arg01='x'", "sender='no spaces'", "path='relative'", "arg0='x",
    "arg0namespace='a..b'",
])
def test_invalid_rules(text: str) -> None:
    with pytest.raises(InvalidRule):
        parse(text)


@pytest.mark.parametrize(("text", "matches"), [
    ("", True),
    ("type='signal',interface='org.example.Iface',member='Changed'", True),
    ("member='Other'", False),
    ("sender=':1.5'", True),
    ("sender=':1.6'", False),
    ("path_namespace='/org'", True),
    ("path_namespace='/or'", False),
    ("arg0='org.example.A'", True),
    ("arg0namespace='org.example'", True),
    ("arg0namespace='org.exam'", False),
    ("arg1='x'", False),
    ("type='method_call'", False),
])
def test_exact_matching(text: str, matches: bool) -> None:
    assert parse(text).matches(_signal()) is matches


@pytest.mark.parametrize(("rule_path", "argument", "matches"), [
    # The specification's own examples for argNpath='/aa/bb/' (string arguments).
    ("/aa/bb/", "/", True), ("/aa/bb/", "/aa/", True), ("/aa/bb/", "/aa/bb/cc", True),
    ("/aa/bb/", "/aa/b", False), ("/aa/bb/", "/aa", False),
])
def test_argument_paths(rule_path: str, argument: str, matches: bool) -> None:
    message = _signal(signature="s", body=(argument,))
    assert parse(f"arg0path='{rule_path}'").matches(message) is matches


@pytest.mark.parametrize("text", [
    "type='signal',interface='org.example.Iface',member='Changed',path='/org/example'",
    "path_namespace='/org'", "arg0='org.example.A'", "arg0namespace='org.example'",
])
def test_masks_select_the_filters_of_the_signals_their_rules_match(text: str) -> None:
    rule = parse(text)
    signal = _signal()
    assert rule.matches(signal)
    assert signal_filter(signal, 64, 8).covers(signal_mask(rule, 64, 8))


def test_masks_select_what_sd_bus_computed_for_a_native_peer_s_signal() -> None:
    native = BloomFilter.for_signal(64, 8, interface="org.example.Iface", member="Changed",
                                    path="/org/example/sub", args=["org.example.A"])
    for text in ("interface='org.example.Iface'", "path_namespace='/org/example'", "arg0='org.example.A'",
                 "arg0namespace='org.example'"):
        assert native.covers(signal_mask(parse(text), 64, 8)), text
    assert not native.covers(signal_mask(parse("member='Other'"), 64, 8))


def test_filters_cover_what_sd_bus_masks_ask_for() -> None:
    wanted = BloomFilter.for_match(64, 8, interface="org.example.Iface", member="Changed",
                                   path_namespace="/org", args={0: "org.example.A"})
    assert signal_filter(_signal(), 64, 8).covers(wanted)


# -- translation --------------------------------------------------------------------------------

def test_unique_names_are_kdbus_ids() -> None:
    assert unique_name(42) == ":1.42"
    assert connection_id(":1.42") == 42
    assert connection_id(":2.42") is None and connection_id(":1.042") is None


def test_a_call_by_well_known_name_becomes_a_kdbus_call_with_a_gvariant_payload() -> None:
    call = _call(9, flags=MessageFlags.NO_AUTO_START)
    outbound = to_kdbus(call, 5)
    assert outbound.destination == "org.example.Echo"
    assert outbound.flags == MSG_EXPECT_REPLY | MSG_NO_AUTO_START and outbound.expects_reply
    assert outbound.cookie == 9
    decoded = wire.decode_gvariant(b"".join(outbound.payload))
    assert decoded == call.replace(sender=":1.5")


def test_replies_signals_and_unique_destinations() -> None:
    reply = DBusMessage.method_return(_call(9).replace(sender=":1.7"), "s", ("x",), serial=4)
    outbound = to_kdbus(reply, 5)
    assert (outbound.destination, outbound.reply_cookie, outbound.flags) == (7, 9, 0)
    broadcast = to_kdbus(_signal(), 5)
    assert broadcast.destination == DST_ID_BROADCAST and broadcast.flags == MSG_SIGNAL
    with pytest.raises(Untranslatable):
        to_kdbus(_call(destination=":3.4"), 5)


def _received(payload: bytes, src_id: int = 7, dst_id: int = 5, cookie: int = 9, cookie_reply: int = 0,
              fds: tuple[int, ...] = (), flags: int = 0) -> Message:
    return Message(src_id=src_id, dst_id=dst_id, cookie=cookie, flags=flags, priority=0,
                   payload_type=PAYLOAD_DBUS, timeout_ns=0, cookie_reply=cookie_reply, payload=payload,
                   fds=fds)


def test_what_a_native_peer_sent_reaches_the_classic_client_with_the_sender_from_kdbus() -> None:
    # The payload claims a sender: the bus's src_id is what counts.
    sent = _call(9).replace(sender=":1.99", destination=None)
    message = from_kdbus(_received(wire.encode_gvariant(sent)), 5)
    assert message.sender == ":1.7" and message.destination == ":1.5"
    assert wire.decode_dbus1(wire.encode_dbus1(message)) == message


def test_descriptors_must_be_what_the_message_declares() -> None:
    sent = _call(9, signature="h", body=(0,), unix_fds=1)
    assert from_kdbus(_received(wire.encode_gvariant(sent), fds=(3,)), 5).unix_fds == 1
    with pytest.raises(Untranslatable):
        from_kdbus(_received(wire.encode_gvariant(sent)), 5)


def test_payloads_that_are_not_d_bus_messages_are_not_delivered() -> None:
    with pytest.raises(Untranslatable):
        from_kdbus(_received(b"ping"), 5)
    with pytest.raises(Untranslatable):
        from_kdbus(_received(wire.encode_gvariant(_call(1 << 40))), 5)


def test_errors_for_refused_sends() -> None:
    assert error_for(3, "org.x.Y") == ("org.freedesktop.DBus.Error.ServiceUnknown",
                                       "The name org.x.Y was not provided by any .service files")
    assert error_for(1, "org.x.Y")[0] == "org.freedesktop.DBus.Error.AccessDenied"
    assert error_for(54, "org.x.Y")[0] == "org.freedesktop.DBus.Error.LimitsExceeded"


# -- review findings ----------------------------------------------------------------------------

def _naive_prefixes(bloom: BloomFilter, key: str, value: str, separator: str) -> None:
    """add_prefixes as it was written first: each prefix hashed on its own."""
    bloom.add_pair(key, value)
    rest = value
    while (cut := rest.rfind(separator)) >= 0:
        bloom.add_pair(key, rest[: cut + 1])
        if cut == 0:
            break
        rest = rest[:cut]
        bloom.add_pair(key, rest)


@pytest.mark.parametrize("value", ["", ".", "a", "a.", ".a", "a..b", "org.example.Foo", "/a/b/", "x/é.y/z",
                                   "..a.b.c...", "a.b" * 40])
@pytest.mark.parametrize("separator", [".", "/"])
def test_prefixes_hashed_in_one_pass_set_the_same_bits(value: str, separator: str) -> None:
    one_pass, naive = BloomFilter(512, 8), BloomFilter(512, 8)
    one_pass.add_prefixes("arg0-dot-prefix", value, separator)
    _naive_prefixes(naive, "arg0-dot-prefix", value, separator)
    assert one_pass.bits == naive.bits


def test_prefix_hashing_is_linear_in_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdbusfs.client import bloom as bloom_module

    calls = 0
    rounds = bloom_module._rounds

    def counted(*args: int) -> tuple[int, int, int, int]:
        nonlocal calls
        calls += 1
        return rounds(*args)

    monkeypatch.setattr(bloom_module, "_rounds", counted)
    value = "a." * 2000
    # A filter big enough not to fill up: every prefix is hashed.
    BloomFilter(4096, 1).add_prefixes("arg0-dot-prefix", value, ".")
    # Per key: one call per 8-byte block, two per prefix (about one prefix a byte); hashing each
    # prefix on its own made it ~len²/8.
    assert calls <= 4 * len(value)


def test_a_signal_past_the_hashing_budget_carries_every_bit() -> None:
    big = _signal(signature="s", body=("a." * 4000,))
    bloom = signal_filter(big, 64, 8, budget=limits.CLASSIC_BLOOM_HASH_BUDGET)
    assert bloom.saturated
    small = _signal()
    assert signal_filter(small, 64, 8, budget=limits.CLASSIC_BLOOM_HASH_BUDGET).bits == \
        signal_filter(small, 64, 8, budget=None).bits
    # Ordinary signals stay far below it.
    exact = signal_filter(small, 64, 8, budget=4096)
    assert not exact.saturated and exact.budget is not None and exact.budget > 0


def test_a_full_filter_stops_hashing() -> None:
    many = _signal(signature="as", body=([f"s{i}" for i in range(100_000)],))
    bloom = signal_filter(many, 64, 8, budget=None)
    assert bloom.saturated
    # Hashing stopped once every bit was set: the budget counter shows what was spent.
    counted = signal_filter(many, 64, 8, budget=1 << 40)
    assert counted.budget is not None and (1 << 40) - counted.budget < 400_000


def test_the_reserved_local_path_and_interface_are_not_delivered() -> None:
    for message in (_signal(path="/org/freedesktop/DBus/Local"),
                    _signal().replace(interface="org.freedesktop.DBus.Local")):
        assert reserved_local(message) is not None
        with pytest.raises(Untranslatable, match="reserved"):
            from_kdbus(_received(wire.encode_gvariant(message.replace(destination=":1.5"))), 5)
    assert reserved_local(_signal()) is None


def test_a_broadcast_has_no_destination_whatever_its_payload_says() -> None:
    sent = _signal().replace(destination=":1.5")
    message = from_kdbus(_received(wire.encode_gvariant(sent), dst_id=DST_ID_BROADCAST), 5)
    assert message.destination is None


def test_a_well_known_sender_rule_does_not_select_the_driver_s_signals() -> None:
    from kdbusfs.classic.subscriptions import driver_signal

    changed = driver_signal("NameOwnerChanged", "sss", ("org.x.Y", "", ":1.5"), 1)
    assert not parse("type='signal',sender='org.foo.Bar'").matches(changed)
    assert parse("type='signal',sender='org.freedesktop.DBus'").matches(changed)
    # A peer's signal for a well-known sender rule: the bus checked the name.
    assert parse("sender='org.foo.Bar'").matches(_signal())
    assert not parse("sender='org.freedesktop.DBus'").matches(_signal())


class _HiddenBus:
    """A connection through which LIST shows nothing (the SEE policy hides the name), while the
    bus's own registry holds an owner and a queue for it."""

    id = 5

    def __init__(self) -> None:
        from types import SimpleNamespace

        owner = SimpleNamespace(conn=SimpleNamespace(id=7))
        entry = SimpleNamespace(primary=owner, activator=None, queue=[owner])
        self.conn = SimpleNamespace(bus=SimpleNamespace(names=SimpleNamespace(lookup=lambda name: entry)))
        self.listed: list[int] = []

    def list(self, flags: int) -> list[object]:
        self.listed.append(flags)
        return []

    def conn_info(self, target: object, attach: int) -> object:
        from kdbusfs.errors import KdbusError

        raise KdbusError(3, "hidden")


def test_queued_owners_and_start_service_answer_from_list_under_the_client_s_policy() -> None:
    from kdbusfs.abi.constants import LIST_ACTIVATORS, LIST_NAMES, LIST_QUEUED
    from kdbusfs.classic.driver import Driver, DriverError
    from kdbusfs.classic.subscriptions import Subscriptions

    conn = _HiddenBus()
    driver = Driver(conn, Subscriptions(), lambda: "0" * 32)  # type: ignore[arg-type]
    for member, signature, body in (("StartServiceByName", "su", ("org.example.Hidden", 0)),
                                    ("ListQueuedOwners", "s", ("org.example.Hidden",))):
        driver_name = "org.freedesktop.DBus"
        call = DBusMessage.method_call(driver_name, "/org/freedesktop/DBus", driver_name, member, signature,
                                       body, serial=1).replace(sender=":1.5")
        with pytest.raises(DriverError) as refused:
            driver.call(call)
        assert refused.value.name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                                      "org.freedesktop.DBus.Error.NameHasNoOwner")
    assert conn.listed == [LIST_NAMES | LIST_ACTIVATORS, LIST_NAMES | LIST_QUEUED]
