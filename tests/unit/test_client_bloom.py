"""The client's bloom filters: SipHash-2-4, sd-bus's bit derivation, and what filters and masks
built the sd-bus way select."""

from __future__ import annotations

import pytest

from kdbusfs.client.bloom import HASH_KEYS, BloomFilter, BloomParameters, siphash24

REFERENCE_KEY = bytes(range(16))


@pytest.mark.parametrize(("length", "digest"), [
    # The first vectors of the SipHash paper (key 00..0f, message 00..length-1), as little-endian u64.
    (0, 0x726FDB47DD0E0E31),
    (1, 0x74F839C593DC67FD),
    (2, 0x0D6C8009D9A94F5A),
    (7, 0xAB0200F58B01D137),
    (8, 0x93F5F5799A932462),
    (15, 0xA129CA6149BE45E5),
])
def test_siphash24_reference_vectors(length: int, digest: int) -> None:
    assert siphash24(REFERENCE_KEY, bytes(range(length))) == digest


def test_an_element_sets_at_most_n_hash_bits_taken_from_the_digests() -> None:
    bloom = BloomFilter(64, 8)
    bloom.add(b"interface:org.example.Clock")
    assert 1 <= bin(bloom.bits).count("1") <= 8
    # 512 bits need 2 bytes of digest per index: 8 indices use two keys' digests.
    first, second = (siphash24(key, b"interface:org.example.Clock") for key in HASH_KEYS[:2])
    digest_bytes = first.to_bytes(8, "little") + second.to_bytes(8, "little")
    expected = 0
    for i in range(8):
        expected |= 1 << ((digest_bytes[2 * i] << 8 | digest_bytes[2 * i + 1]) & 511)
    assert bloom.bits == expected


def test_one_byte_indices_for_small_filters() -> None:
    bloom = BloomFilter(8, 3)
    bloom.add(b"member:Tick")
    digest = siphash24(HASH_KEYS[0], b"member:Tick").to_bytes(8, "little")
    assert bloom.bits == sum({1 << (byte & 63) for byte in digest[:3]})


def test_prefixes_are_added_with_and_without_the_separator() -> None:
    by_prefixes = BloomFilter()
    by_prefixes.add_prefixes("path-slash-prefix", "/org/example/clock", "/")
    by_hand = BloomFilter()
    for value in ("/org/example/clock", "/org/example/", "/org/example", "/org/", "/org", "/"):
        by_hand.add_pair("path-slash-prefix", value)
    assert by_prefixes.bits == by_hand.bits


def test_signal_filters_cover_the_masks_of_matches_on_their_fields() -> None:
    signal = BloomFilter.for_signal(interface="org.example.Clock", member="Tick", path="/org/example/clock",
                                    args=["org.example.Alarm"])
    for mask in (BloomFilter.for_match(),
                 BloomFilter.for_match(interface="org.example.Clock"),
                 BloomFilter.for_match(interface="org.example.Clock", member="Tick"),
                 BloomFilter.for_match(path="/org/example/clock"),
                 BloomFilter.for_match(path_namespace="/org/example"),
                 BloomFilter.for_match(args={0: "org.example.Alarm"})):
        assert signal.covers(mask)
    for mask in (BloomFilter.for_match(interface="org.example.Other"),
                 BloomFilter.for_match(member="Tock"),
                 BloomFilter.for_match(path="/org/example")):
        assert not signal.covers(mask)


def test_bytes_round_trip_little_endian_words() -> None:
    bloom = BloomFilter(16, 1)
    bloom.bits = 1 | 1 << 64
    assert bytes(bloom) == b"\1" + bytes(7) + b"\1" + bytes(7)
    assert BloomFilter.from_bytes(bytes(bloom), 1).bits == bloom.bits


@pytest.mark.parametrize(("size", "n_hash"), [(0, 1), (12, 1), (24, 1), (64, 0), (64, 33)])
def test_impossible_geometries_are_refused(size: int, n_hash: int) -> None:
    with pytest.raises(ValueError):
        BloomFilter(size, n_hash)


def test_bus_parameters_make_empty_filters_of_their_geometry() -> None:
    bloom = BloomParameters(128, 4).filter(generation=1)
    assert (bloom.size, bloom.n_hash, bloom.generation, bytes(bloom)) == (128, 4, 1, bytes(128))
