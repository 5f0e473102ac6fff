"""The server side of D-Bus authentication (SASL, as the D-Bus specification profiles it), no I/O.

A classic client opens with one NUL byte (on which it may pass credentials), then speaks CRLF-ended
text lines until BEGIN, after which the stream carries messages. Only EXTERNAL is offered: the
peer's uid from SO_PEERCRED is what it authenticates as, and an identity it states must be that uid
(ASCII decimal, hex-encoded). Replies and their wording are dbus-daemon's, as observed on the wire:
REJECTED lists the mechanisms, an unexpected command gets ERROR with a quoted reason, BEGIN before
OK and a line longer than the limit end the connection, and so does the sixth rejection.

    auth = ServerAuth(peer_uid=1000, guid="0f1e...")
    replies = auth.feed(b"\\0AUTH EXTERNAL 31303030\\r\\nBEGIN\\r\\n")
    # replies == [b"OK 0f1e...\\r\\n"], auth.state is State.AUTHENTICATED, auth.leftover == b""
"""

from __future__ import annotations

import binascii
import enum

from .. import limits

MECHANISMS = b"EXTERNAL"


class AuthFailed(Exception):
    """The exchange cannot go on: the connection is to be closed (after writing `replies`)."""

    def __init__(self, why: str, replies: list[bytes]) -> None:
        super().__init__(why)
        self.why = why
        self.replies = replies


class State(enum.Enum):
    # Before the NUL byte that opens every connection.
    WAITING_FOR_NUL = "waiting for the NUL byte"
    WAITING_FOR_AUTH = "waiting for AUTH"
    # AUTH EXTERNAL without an identity: the server asked for one with an empty DATA.
    WAITING_FOR_DATA = "waiting for DATA"
    WAITING_FOR_BEGIN = "waiting for BEGIN"
    AUTHENTICATED = "authenticated"


def _error(reason: str) -> bytes:
    return f'ERROR "{reason}"\r\n'.encode()


_REJECTED = b"REJECTED " + MECHANISMS + b"\r\n"


class ServerAuth:
    """One connection's authentication; feed() it bytes as they come."""

    def __init__(self, peer_uid: int, guid: str, unix_fd_possible: bool = True) -> None:
        self.peer_uid = peer_uid
        self.guid = guid
        self.unix_fd_possible = unix_fd_possible
        self.state = State.WAITING_FOR_NUL
        self.unix_fd = False
        self.rejections = 0
        self._line = bytearray()
        # What came after BEGIN's line: the start of the first message.
        self.leftover = b""

    @property
    def done(self) -> bool:
        return self.state is State.AUTHENTICATED

    def feed(self, data: bytes) -> list[bytes]:
        """Take bytes from the client; returns the lines to write back. Raises AuthFailed when the
        connection must end."""
        replies: list[bytes] = []
        pos = 0
        if self.state is State.WAITING_FOR_NUL and data:
            if data[0] != 0:
                raise AuthFailed("the connection did not open with a NUL byte", replies)
            self.state = State.WAITING_FOR_AUTH
            pos = 1
        while pos < len(data) and not self.done:
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                pos = len(data)
                break
            self._line += data[pos:end + 1]
            pos = end + 1
            self._check_length(replies)
            line, self._line = bytes(self._line), bytearray()
            if not line.endswith(b"\r\n"):
                # A bare LF does not end a line: it stays part of one that must end with CRLF.
                self._line = bytearray(line)
                continue
            reply = self._command(line[:-2], replies)
            if reply:
                replies.append(reply)
        self._check_length(replies)
        if self.done:
            self.leftover = data[pos:]
        return replies

    def _check_length(self, replies: list[bytes]) -> None:
        if len(self._line) > limits.CLASSIC_AUTH_LINE_MAX:
            raise AuthFailed(f"authentication line longer than {limits.CLASSIC_AUTH_LINE_MAX} bytes", replies)

    def _reject(self, replies: list[bytes]) -> bytes:
        self.rejections += 1
        self.state = State.WAITING_FOR_AUTH
        if self.rejections >= limits.CLASSIC_AUTH_MAX_REJECTIONS:
            raise AuthFailed(f"{self.rejections} failed authentication attempts", [*replies, _REJECTED])
        return _REJECTED

    def _command(self, line: bytes, replies: list[bytes]) -> bytes:
        words = line.split()
        command = words[0] if words else b""
        args = words[1:]
        state = self.state
        if state is State.WAITING_FOR_AUTH:
            if command == b"AUTH":
                return self._auth(args, replies)
            if command == b"BEGIN":
                raise AuthFailed("BEGIN before authenticating", replies)
            if command == b"ERROR":
                return self._reject(replies)
            if command == b"NEGOTIATE_UNIX_FD":
                return _error("Need to authenticate first")
            if command in (b"DATA", b"CANCEL"):
                return _error("Not currently in an auth conversation")
            return _error("Unknown command")
        if state is State.WAITING_FOR_DATA:
            if command == b"DATA":
                return self._identity(args[0] if args else b"", replies)
            if command in (b"CANCEL", b"ERROR"):
                return self._reject(replies)
            if command == b"BEGIN":
                raise AuthFailed("BEGIN before authenticating", replies)
            if command == b"AUTH":
                return _error("Sent AUTH while another AUTH in progress")
            if command == b"NEGOTIATE_UNIX_FD":
                return _error("Need to authenticate first")
            return _error("Unknown command")
        # Waiting for BEGIN.
        if command == b"BEGIN":
            self.state = State.AUTHENTICATED
            return b""
        if command == b"NEGOTIATE_UNIX_FD":
            if not self.unix_fd_possible:
                return _error("Unix fd passing is not possible on this connection")
            self.unix_fd = True
            return b"AGREE_UNIX_FD\r\n"
        if command in (b"CANCEL", b"ERROR"):
            return self._reject(replies)
        if command in (b"AUTH", b"DATA"):
            return _error(f"Sent {command.decode()} while expecting BEGIN")
        return _error("Unknown command")

    def _auth(self, args: list[bytes], replies: list[bytes]) -> bytes:
        if not args or args[0] != b"EXTERNAL":
            return self._reject(replies)
        if len(args) > 2:
            return _error("Invalid hex encoding")
        if len(args) == 1:
            self.state = State.WAITING_FOR_DATA
            return b"DATA\r\n"
        return self._identity(args[1], replies)

    def _identity(self, hex_identity: bytes, replies: list[bytes]) -> bytes:
        """EXTERNAL's response: empty (be whoever the socket says) or the uid in decimal, hex-encoded."""
        try:
            identity = binascii.unhexlify(hex_identity)
        except (binascii.Error, ValueError):
            return _error("Invalid hex encoding")
        # Compared as text: int() of a line's worth of digits is refused past 4300 of them.
        if identity and not (identity.isdigit() and (identity.lstrip(b"0") or b"0") == b"%d" % self.peer_uid):
            return self._reject(replies)
        self.state = State.WAITING_FOR_BEGIN
        return f"OK {self.guid}\r\n".encode()
