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
from collections.abc import Iterable
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


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (64 - bits))) & _MASK64


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of `data` under a 16-byte key, as the little-endian 64-bit integer."""
    k0, k1 = (int(half) for half in struct.unpack("<QQ", key))
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        block = int(_WORDS.unpack_from(data, i)[0])
        v3 ^= block
        rounds(2)
        v0 ^= block
    last = (len(data) & 0xFF) << 56 | int.from_bytes(data[whole:], "little")
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


class BloomFilter:
    """A filter (or a match mask) of `size` bytes, `n_hash` bits per element."""

    def __init__(self, size: int = 64, n_hash: int = 8, generation: int = 0) -> None:
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

    def add(self, element: bytes) -> None:
        """Set the element's `n_hash` bits."""
        width = self.size * 8
        hashes = iter(HASH_KEYS)
        digest = 0
        left = 0
        for _ in range(self.n_hash):
            index = 0
            for _ in range(self._index_bytes):
                if left == 0:
                    digest = siphash24(next(hashes), element)
                    left = 8
                # The digest's bytes are used in memory (little-endian) order.
                index = index << 8 | (digest >> (8 * (8 - left))) & 0xFF
                left -= 1
            self.bits |= 1 << (index & (width - 1))

    def add_pair(self, key: str, value: str) -> None:
        self.add(f"{key}:{value}".encode())

    def add_prefixes(self, key: str, value: str, separator: str) -> None:
        """The pair and every prefix of `value` cut at `separator`, with and without it:
        "path-slash-prefix:/a/b" adds "/a/b", "/a/", "/a" and "/"."""
        self.add_pair(key, value)
        rest = value
        while (cut := rest.rfind(separator)) >= 0:
            self.add_pair(key, rest[: cut + 1])
            if cut == 0:
                break
            rest = rest[:cut]
            self.add_pair(key, rest)

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
