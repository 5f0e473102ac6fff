"""The classic endpoint's parsers under many random and mutated inputs (seeded: the same inputs on
every run, a few seconds in all). The invariant, as for h11's fuzzing: every input is parsed or
refused with the parser's documented error, and within a bound of time; no other exception ever
escapes (the endpoint would close the client as a daemon bug, logged as an error).

    SASL          ServerAuth.feed            -> replies (CRLF lines), or AuthFailed
    framing       MessageSplitter            -> (message, fds), or ProtocolViolation
    dbus1 header  fastwire.decode (both byte orders) -> DBusMessage, or DecodeError
    GVariant      fastwire.decode_gvariant   -> DBusMessage, or DecodeError
    match rules   matchrule.parse            -> MatchRule, or InvalidRule
"""

from __future__ import annotations

import contextlib
import functools
import random
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kdbusfs.classic import fastwire
from kdbusfs.classic.framing import MessageSplitter, ProtocolViolation
from kdbusfs.classic.matchrule import InvalidRule, parse
from kdbusfs.classic.sasl import AuthFailed, ServerAuth
from kdbusfs.dbus import DBusMessage, MessageFlags, ObjectPath, Signature, Variant
from kdbusfs.dbus.errors import DecodeError, EncodeError

# One input may take at most this long: a parser that loops on some input fails here, not in CI's
# global timeout.
PER_INPUT_S = 1.0


@contextlib.contextmanager
def bounded(what: Callable[[], str]) -> Iterator[None]:
    """Fail if the block runs past PER_INPUT_S (SIGALRM interrupts a loop in Python code)."""

    def expired(_signum: int, _frame: object) -> None:
        raise AssertionError(f"no answer within {PER_INPUT_S} s for {what()}")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, PER_INPUT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def mutate(rng: random.Random, data: bytes, alphabet: bytes) -> bytes:
    """A few random edits: flipped bits, bytes from `alphabet`, cuts, duplications, insertions."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        at = rng.randrange(len(buffer) + 1)
        if choice == 0 and buffer:
            at = min(at, len(buffer) - 1)
            buffer[at] ^= 1 << rng.randrange(8)
        elif choice == 1 and buffer:
            at = min(at, len(buffer) - 1)
            buffer[at] = rng.choice(alphabet)
        elif choice == 2:
            del buffer[at : at + rng.randint(1, 16)]
        elif choice == 3:
            buffer[at:at] = buffer[at : at + rng.randint(1, 32)]
        elif choice == 4:
            buffer[at:at] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        else:
            # A 32-bit field (lengths, serials) set to an edge value, in either byte order.
            value = rng.choice((0, 1, 7, 8, 0xFF, 0x100, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x0400_0001))
            buffer[at : at + 4] = value.to_bytes(4, rng.choice(("little", "big")))
    return bytes(buffer)


def chunks(rng: random.Random, data: bytes) -> Iterator[bytes]:
    """`data` cut at random places, as a socket may hand it over."""
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 2, 3, 16, 64, 1 << 20))
        yield data[pos : pos + size]
        pos += size


# -- SASL ------------------------------------------------------------------------------------

SASL_WORDS = [b"AUTH", b"EXTERNAL", b"ANONYMOUS", b"DBUS_COOKIE_SHA1", b"DATA", b"BEGIN", b"CANCEL",
              b"ERROR", b"NEGOTIATE_UNIX_FD", b"OK", b"REJECTED", b"31303030", b"30", b"3", b"zz", b"",
              b"\xff\xfe", "ü".encode(), b"\t", b"\0", b"3030303031303030",
              # an identity of 5000 digits (int() refuses more than 4300)
              (b"1" * 5000).hex().encode(), "²".encode().hex().encode()]
SASL_ALPHABET = b"\0\r\n \tAUTHEXTERNALDAT0123456789abcdef\xff"
GOOD_CONVERSATION = b"\0AUTH EXTERNAL 31303030\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\nl\x01\x00\x01"


IDENTITIES = [b"", b"1000", b"01000", b"0", b"-1", b"1e3", b" 1000", "١٠٠٠".encode(), b"1" * 5000, b"9" * 30]


def sasl_inputs(rng: random.Random, count: int) -> Iterator[bytes]:
    for index in range(count):
        if index % 3 == 0:
            yield mutate(rng, GOOD_CONVERSATION, SASL_ALPHABET)
        elif index % 3 == 1:
            # EXTERNAL with identities of every shape (ASCII decimal, hex-encoded, is the only valid one).
            identity = rng.choice(IDENTITIES).hex().encode()
            if rng.random() < 0.5:
                yield b"\0AUTH EXTERNAL " + identity + b"\r\nBEGIN\r\n"
            else:
                yield b"\0AUTH EXTERNAL\r\nDATA " + identity + b"\r\nBEGIN\r\n"
        else:
            lines = []
            for _ in range(rng.randint(1, 10)):
                words = [rng.choice(SASL_WORDS) for _ in range(rng.randint(0, 4))]
                lines.append(b" ".join(words) + rng.choice((b"\r\n", b"\r\n", b"\n", b"\r", b"")))
            yield rng.choice((b"\0", b"\0", b"", b"A")) + b"".join(lines)


def test_sasl_answers_or_refuses_every_conversation() -> None:
    rng = random.Random(1401)
    outcomes = {"authenticated": 0, "refused": 0, "waiting": 0}
    for data in sasl_inputs(rng, 4000):
        auth = ServerAuth(peer_uid=1000, guid="0" * 32)
        with bounded(functools.partial(repr, data)):
            try:
                for piece in chunks(rng, data):
                    replies = auth.feed(piece)
                    assert all(reply.endswith(b"\r\n") and reply.count(b"\n") == 1 for reply in replies)
                    if auth.done:
                        break
            except AuthFailed as exc:
                assert exc.why and all(reply.endswith(b"\r\n") for reply in exc.replies)
                outcomes["refused"] += 1
                continue
        if auth.done:
            assert isinstance(auth.leftover, bytes) and auth.unix_fd in (True, False)
            outcomes["authenticated"] += 1
        else:
            outcomes["waiting"] += 1
    # The inputs reach every outcome (a fuzzer stuck on one path tests little).
    assert min(outcomes.values()) > 100, outcomes


def test_an_identity_of_thousands_of_digits_is_rejected_like_any_other_uid() -> None:
    """int() refuses more than 4300 digits: the identity is compared as text (found by the fuzz)."""
    auth = ServerAuth(peer_uid=1000, guid="0" * 32)
    huge = (b"1" * 5000).hex().encode()
    assert auth.feed(b"\0AUTH EXTERNAL " + huge + b"\r\n") == [b"REJECTED EXTERNAL\r\n"]
    padded = b"0001000".hex().encode()
    assert auth.feed(b"AUTH EXTERNAL " + padded + b"\r\n") == [b"OK " + b"0" * 32 + b"\r\n"]


@pytest.mark.parametrize("key", ["arg²", "arg٣", "arg١path", "arg" + "9" * 5000])
def test_argument_keys_take_ascii_digits_only(key: str) -> None:
    """Found by the fuzz: "arg²" escaped as a ValueError, "arg٣" was taken for arg3."""
    with pytest.raises(InvalidRule, match="unknown key"):
        parse(f"{key}='x'")


def test_an_endless_sasl_line_is_refused_not_buffered() -> None:
    auth = ServerAuth(peer_uid=1000, guid="0" * 32)
    auth.feed(b"\0")
    with pytest.raises(AuthFailed, match="longer than"):
        for _ in range(1000):
            auth.feed(b"A" * 4096)


# -- framing and the dbus1 decoder ---------------------------------------------------------------

def seed_messages() -> list[DBusMessage]:
    call = DBusMessage.method_call("org.example.Echo", "/org/example/Echo", "org.example.Echo", "Echo",
                                   "sa{sv}aiav(yxd)ayaso", ("hi", {"k": Variant("u", 7)}, [1, -2, 3],
                                   [Variant("s", "x"), Variant("ai", [4])], (1, -5, 0.5), b"\0\1",
                                   ["a", "b"], ObjectPath("/x")), serial=5,
                                   flags=MessageFlags.NO_AUTO_START)
    return [
        call,
        call.replace(signature="ag", body=([Signature("a{sv}"), Signature("")],)),
        DBusMessage.method_return(call.replace(sender=":1.7"), "hb", (0, True), serial=6).replace(unix_fds=1),
        DBusMessage.error(call.replace(sender=":1.7"), "org.example.Error.Bad", "text", serial=9),
        DBusMessage.signal("/org/example", "org.example.Signal", "Tick", "a{sa(ii)}", ({"x": [(1, 2)]},),
                           serial=2**32 - 1),
        DBusMessage.method_call(None, "/", None, "M", serial=1),
    ]


def frame_inputs(rng: random.Random, count: int) -> Iterator[bytes]:
    framed = [fastwire.encode(message, big_endian=big)
              for message in seed_messages() for big in (False, True)]
    alphabet = bytes(range(256))
    for _ in range(count):
        data = rng.choice(framed)
        if rng.random() < 0.3:
            data += rng.choice(framed)  # two messages back to back, the second one mutated too
        yield mutate(rng, data, alphabet)


def test_the_splitter_yields_messages_or_refuses_the_stream() -> None:
    rng = random.Random(1402)
    outcomes = {"messages": 0, "refused": 0, "incomplete": 0}
    for data in frame_inputs(rng, 3000):
        splitter = MessageSplitter()
        with bounded(data.hex):
            try:
                got = []
                for piece in chunks(rng, data):
                    splitter.feed(piece, [])
                    got.extend(message for message, _ in splitter.messages() if message is not None)
            except ProtocolViolation as exc:
                assert str(exc)
                outcomes["refused"] += 1
                continue
        outcomes["messages" if got else "incomplete"] += 1
        for message in got:
            assert message.problem() is None
    assert min(outcomes.values()) > 50, outcomes


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
def test_the_dbus1_decoder_decodes_or_refuses_and_reencodes_what_it_decodes(big_endian: bool) -> None:
    rng = random.Random(1403 + big_endian)
    framed = [fastwire.encode(message, big_endian=big_endian) for message in seed_messages()]
    alphabet = bytes(range(256))
    decoded = refused = 0
    for _ in range(3000):
        data = mutate(rng, rng.choice(framed), alphabet)
        with bounded(data.hex):
            try:
                message = fastwire.decode(data, 1000)
            except DecodeError:
                refused += 1
                continue
        decoded += 1
        # What is decoded is valid D-Bus: it encodes again (in dbus1 and as sd-bus's GVariant).
        again = fastwire.decode(fastwire.encode(message, big_endian=big_endian))
        assert _comparable(again) == _comparable(message)
        fastwire.encode_gvariant(message)
    assert decoded > 50 and refused > 100, (decoded, refused)


def test_the_gvariant_decoder_decodes_or_refuses() -> None:
    rng = random.Random(1405)
    framed = [fastwire.encode_gvariant(message.replace(sender=":1.3")) for message in seed_messages()]
    alphabet = bytes(range(256))
    decoded = refused = 0
    for _ in range(3000):
        data = mutate(rng, rng.choice(framed), alphabet)
        with bounded(data.hex):
            try:
                message = fastwire.decode_gvariant(data, 1000)
            except DecodeError:
                refused += 1
                continue
        decoded += 1
        # Serials GVariant holds in 64 bits may not fit dbus1's 32: that is the one refusal left.
        try:
            fastwire.encode(message)
        except EncodeError as exc:
            assert "32 bits" in str(exc)
    assert decoded > 50 and refused > 100, (decoded, refused)


def _comparable(message: DBusMessage) -> Any:
    """Floats that are NaN compare unequal to themselves: compare their text instead."""
    return repr(message)


# -- match rules -----------------------------------------------------------------------------

RULE_KEYS = ["type", "sender", "interface", "member", "path", "path_namespace", "destination", "eavesdrop",
             "arg0", "arg1", "arg63", "arg64", "arg0path", "arg3path", "arg0namespace", "argx", "arg-1",
             "arg00", "", " ", "unknown", "arg²", "arg٣", "arg١path", "arg" + "9" * 5000]
RULE_VALUES = ["signal", "method_call", "error", "method_return", "'", "''", "\\'", "\\", ",", "=",
               "org.example.Echo", ":1.7", "/", "/org/example", "//", "a" * 300, "true", "false", "ü",
               "org..x", ".org", "x", "\0", " ", "'quoted,with,commas'", "'a'\\''b'"]


def rule_inputs(rng: random.Random, count: int) -> Iterator[str]:
    good = "type='signal',sender='org.freedesktop.DBus',interface='org.example.X',arg0='a\\'b',arg2path='/x/'"
    for index in range(count):
        if index % 3 == 0:
            yield mutate(rng, good.encode(), b"',=\\ a0/.:").decode("utf-8", "replace")
        else:
            pairs = []
            for _ in range(rng.randint(0, 6)):
                value = rng.choice(RULE_VALUES)
                quote = rng.choice(("'", "", "'"))
                pairs.append(f"{rng.choice(RULE_KEYS)}={quote}{value}{quote}")
            yield rng.choice((",", ", ", ",,", " ")).join(pairs)


def test_match_rules_parse_or_are_refused_with_invalid_rule() -> None:
    rng = random.Random(1406)
    parsed = refused = 0
    for text in rule_inputs(rng, 6000):
        with bounded(functools.partial(repr, text)):
            try:
                rule = parse(text)
            except InvalidRule as exc:
                assert str(exc)
                refused += 1
                continue
        parsed += 1
        # A parsed rule can be used: matched against a message and turned into bloom masks.
        rule.matches(seed_messages()[4].replace(sender=":1.7"))
    assert parsed > 100 and refused > 100, (parsed, refused)


def test_the_whole_fuzz_stays_within_seconds() -> None:
    """The other tests' budget: fast enough for every CI run (the machine is shared)."""
    started = time.monotonic()
    for data in frame_inputs(random.Random(1407), 300):
        with contextlib.suppress(ProtocolViolation):
            splitter = MessageSplitter()
            splitter.feed(data, [])
            list(splitter.messages())
    assert time.monotonic() - started < 10
