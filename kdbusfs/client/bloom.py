"""Bloom filters for signals and masks for matches, computed as sd-bus did on kdbus.

The bus never hashes: a sender attaches a filter to each signal, a receiver's match carries a mask,
and the bus delivers when every mask bit is set in the filter (KDBUS-SPEC.md §7). Which bits stand
for what is a convention between clients; this module follows sd-bus's (systemd's bus-bloom.c): each
element is a string "key:value", hashed with SipHash-2-4 under a fixed set of keys, `n_hash` bit
indices per element taken from the hash output. sd-bus made buses with 64-byte filters and 8 hashes.

    sent = BloomFilter.for_signal(64, 8, interface="org.example.Clock", member="Tick", path="/clock")
    wanted = BloomFilter.for_match(64, 8, interface="org.example.Clock")
    assert sent.covers(wanted)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

# sd-bus's hash keys: one SipHash key per 64 bits of hash output an element needs.
HASH_KEYS = tuple(bytes.fromhex(key) for key in (
    "b9660bf0467047c18875c49c54b9bd15", "aaa154a2e0714b39bfe1dd2e9fc54a3b",
    "63fdaebecd824812a16e4126cbfaa0c8", "23be452932d2462d82035228fe3717f5",
    "563bbfee5a4f4339afaa9408dff0fc10", "3180c873c7ea46d3aa25750f9e4c0929",
    "7df7184b7ba444d5853c06e06553966d", "f277e96f93b54e719a0c34883925bf35",
))

_MASK64 = (1 << 64) - 1
_WORDS = struct.Struct("<Q")
# What finishing one digest costs, in bytes of input hashed in the same time (six rounds).
FINISH_COST = 24


def _rounds(v0: int, v1: int, v2: int, v3: int, n: int) -> tuple[int, int, int, int]:
    for _ in range(n):
        v0 = (v0 + v1) & _MASK64
        v1 = ((v1 << 13) | (v1 >> 51)) & _MASK64 ^ v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _MASK64
        v2 = (v2 + v3) & _MASK64
        v3 = ((v3 << 16) | (v3 >> 48)) & _MASK64 ^ v2
        v0 = (v0 + v3) & _MASK64
        v3 = ((v3 << 21) | (v3 >> 43)) & _MASK64 ^ v0
        v2 = (v2 + v1) & _MASK64
        v1 = ((v1 << 17) | (v1 >> 47)) & _MASK64 ^ v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _MASK64
    return v0, v1, v2, v3


def prefix_digests(keys: Sequence[bytes], data: bytes,
                   lengths: Iterable[int]) -> Iterator[tuple[int, list[int]]]:
    """(n, SipHash-2-4 of data[:n] under each key) for each n of `lengths` (ascending), in one pass
    over `data`: the prefixes share their leading 8-byte blocks, so only each one's tail and
    finish are its own (hashing every prefix on its own costs the square of the length)."""
    states = []
    for key in keys:
        k0, k1 = (int(half) for half in struct.unpack("<QQ", key))
        states.append((k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D,
                       k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573))
    done = 0
    for length in lengths:
        whole = length - length % 8
        while done < whole:
            block = int(_WORDS.unpack_from(data, done)[0])
            for i, (v0, v1, v2, v3) in enumerate(states):
                v0, v1, v2, v3 = _rounds(v0, v1, v2, v3 ^ block, 2)
                states[i] = (v0 ^ block, v1, v2, v3)
            done += 8
        last = (length & 0xFF) << 56 | int.from_bytes(data[whole:length], "little")
        digests = []
        for v0, v1, v2, v3 in states:
            a0, a1, a2, a3 = _rounds(v0, v1, v2, v3 ^ last, 2)
            a0, a1, a2, a3 = _rounds(a0 ^ last, a1, a2 ^ 0xFF, a3, 4)
            digests.append(a0 ^ a1 ^ a2 ^ a3)
        yield length, digests


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of `data` under a 16-byte key, as the little-endian 64-bit integer."""
    return next(prefix_digests((key,), data, (len(data),)))[1][0]


class BloomFilter:
    """A filter (or a match mask) of `size` bytes, `n_hash` bits per element."""

    def __init__(self, size: int = 64, n_hash: int = 8, generation: int = 0,
                 budget: int | None = None) -> None:
        bits = size * 8
        if size <= 0 or size % 8 or bits & (bits - 1):
            raise ValueError(f"bloom size {size}: want a power-of-two number of u64 words")
        # Bytes of hash output per bit index, enough to address every bit.
        self._index_bytes = (bits.bit_length() - 1 + 7) // 8
        if n_hash <= 0 or n_hash * self._index_bytes > len(HASH_KEYS) * 8:
            raise ValueError(f"{n_hash} hashes need more hash output than {len(HASH_KEYS)} keys give")
        self.size = size
        self.n_hash = n_hash
        self.generation = generation
        self.bits = 0
        self._full = (1 << bits) - 1
        self._keys = HASH_KEYS[: (n_hash * self._index_bytes + 7) // 8]
        # Bytes (and digest finishes, FINISH_COST each) left to hash; None: no bound. A filter
        # that runs out sets every bit: a filter may have too many bits, never too few.
        self.budget = budget

    @property
    def saturated(self) -> bool:
        """Every bit set: more elements change nothing (and are not hashed)."""
        return self.bits == self._full

    def add(self, element: bytes) -> None:
        """Set the element's `n_hash` bits."""
        self._add_prefixes(element, (len(element),))

    def _add_prefixes(self, element: bytes, lengths: Iterable[int]) -> None:
        """Add element[:n] for each n of `lengths` (ascending), hashing the element once."""
        if self.saturated:
            return
        width = self.size * 8
        hashed = 0
        for length, digests in prefix_digests(self._keys, element, lengths):
            if self.budget is not None:
                self.budget -= len(self._keys) * (length - hashed + FINISH_COST)
                hashed = length
                if self.budget < 0:
                    self.bits = self._full
                    return
            # The digests' bytes, in memory (little-endian) order, make the bit indices.
            output = b"".join(digest.to_bytes(8, "little") for digest in digests)
            at = 0
            for _ in range(self.n_hash):
                index = int.from_bytes(output[at : at + self._index_bytes], "big")
                at += self._index_bytes
                self.bits |= 1 << (index & (width - 1))
            if self.bits == self._full:
                return

    def add_pair(self, key: str, value: str) -> None:
        self.add(f"{key}:{value}".encode())

    def add_prefixes(self, key: str, value: str, separator: str) -> None:
        """The pair and every prefix of `value` cut at `separator`, with and without it:
        "path-slash-prefix:/a/b" adds "/a/b", "/a/", "/a" and "/"."""
        element = f"{key}:{value}".encode()
        self._add_prefixes(element, _cuts(element, len(key) + 1, separator.encode()))

    def covers(self, mask: BloomFilter) -> bool:
        """Whether a match with `mask` selects a signal with this filter (the bus's test)."""
        return self.bits & mask.bits == mask.bits

    def __bytes__(self) -> bytes:
        return self.bits.to_bytes(self.size, "little")

    @classmethod
    def from_bytes(cls, data: bytes, n_hash: int = 8, generation: int = 0) -> BloomFilter:
        bloom = cls(len(data), n_hash, generation)
        bloom.bits = int.from_bytes(data, "little")
        return bloom

    @classmethod
    def for_signal(cls, size: int = 64, n_hash: int = 8, *, interface: str | None = None,
                   member: str | None = None, path: str | None = None,
                   args: Iterable[str] = ()) -> BloomFilter:
        """The filter sd-bus attached to a signal with these fields and leading string arguments."""
        bloom = cls(size, n_hash)
        bloom.add_pair("message-type", "signal")
        if interface is not None:
            bloom.add_pair("interface", interface)
        if member is not None:
            bloom.add_pair("member", member)
        if path is not None:
            bloom.add_pair("path", path)
            bloom.add_pair("path-slash-prefix", path)
            bloom.add_prefixes("path-slash-prefix", path, "/")
        for i, arg in enumerate(args):
            bloom.add_pair(f"arg{i}", arg)
            bloom.add_prefixes(f"arg{i}-dot-prefix", arg, ".")
            bloom.add_prefixes(f"arg{i}-slash-prefix", arg, "/")
        return bloom

    @classmethod
    def for_match(cls, size: int = 64, n_hash: int = 8, *, interface: str | None = None,
                  member: str | None = None, path: str | None = None,
                  path_namespace: str | None = None, args: dict[int, str] | None = None,
                  signals_only: bool = True) -> BloomFilter:
        """The mask sd-bus put in a match on these D-Bus match-rule fields."""
        bloom = cls(size, n_hash)
        if signals_only:
            bloom.add_pair("message-type", "signal")
        if interface is not None:
            bloom.add_pair("interface", interface)
        if member is not None:
            bloom.add_pair("member", member)
        if path is not None:
            bloom.add_pair("path", path)
        if path_namespace is not None and path_namespace != "/":
            bloom.add_pair("path-slash-prefix", path_namespace)
        for i, arg in (args or {}).items():
            bloom.add_pair(f"arg{i}", arg)
        return bloom


def _cuts(element: bytes, start: int, separator: bytes) -> Iterator[int]:
    """The lengths of element's prefixes add_prefixes adds, ascending, each once: before and after
    each separator past `start` (not before one right at it), and the whole element."""
    last = 0
    at = element.find(separator, start)
    while at >= 0:
        for length in (at, at + 1):
            if length > last and (length > start or length == at + 1):
                yield length
                last = length
        at = element.find(separator, at + 1)
    if len(element) > last:
        yield len(element)


@dataclass(frozen=True, slots=True)
class BloomParameters:
    """A bus's bloom filter size in bytes and hashes per element, fixed at BUS_MAKE.

    kdbus only checks `size` (8 to 4096, a multiple of 8); `n_hash` is a convention it hands on
    to every connection. sd-bus used 64 and 8."""

    size: int = 64
    n_hash: int = 8

    def filter(self, generation: int = 0) -> BloomFilter:
        """An empty filter (or mask) for this bus."""
        return BloomFilter(self.size, self.n_hash, generation)
