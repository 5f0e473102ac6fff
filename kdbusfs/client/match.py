"""Match rules: which signals and kernel notifications a connection receives (KDBUS-SPEC.md §7).

A match is a list of rules that must all hold; a connection receives a broadcast when any of its
matches selects it. A match without rules selects everything, notifications included. Rules about
notifications select only that notification type, so mixing types in one match selects nothing.

    conn.add_match([match.sender_id(peer.id), match.bloom_mask(mask)], cookie=1)
    conn.add_match([match.name_added("org.example.Clock")], cookie=2)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..abi import structs
from ..abi.constants import MATCH_ID_ANY, Item
from ..abi.items import item, string_item, u64_item
from .bloom import BloomFilter

ANY = MATCH_ID_ANY


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, as the MATCH_ADD item that carries it."""

    item: bytes


def bloom_mask(*generations: BloomFilter | bytes) -> Rule:
    """Signals whose filter has every bit of the mask set. With several masks, a filter of
    generation g is tested against mask g (the last one for higher generations)."""
    return Rule(item(Item.BLOOM_MASK, b"".join(bytes(mask) for mask in generations)))


def sender_id(connection_id: int) -> Rule:
    """Signals sent by this connection (ANY: by any)."""
    return Rule(u64_item(Item.ID, connection_id))


def sender_name(name: str) -> Rule:
    """Signals from the current primary owner of `name`."""
    return Rule(string_item(Item.NAME, name))


def destination_id(connection_id: int) -> Rule:
    """Signals addressed to this id (DST_ID_BROADCAST for broadcasts, one's own id for unicast
    signals)."""
    return Rule(u64_item(Item.DST_ID, connection_id))


def _id_change(kind: Item, connection_id: int) -> Rule:
    return Rule(item(kind, structs.NOTIFY_ID_CHANGE.pack(connection_id, 0)))


def id_added(connection_id: int = ANY) -> Rule:
    return _id_change(Item.ID_ADD, connection_id)


def id_removed(connection_id: int = ANY) -> Rule:
    return _id_change(Item.ID_REMOVE, connection_id)


def _name_change(kind: Item, name: str | None, old_id: int, new_id: int) -> Rule:
    payload = structs.NOTIFY_NAME_CHANGE.pack(old_id, 0, new_id, 0)
    if name is not None:
        payload += name.encode() + b"\0"
    return Rule(item(kind, payload))


def name_added(name: str | None = None, new_id: int = ANY) -> Rule:
    """NAME_ADD of `name` (any name if None) to `new_id` (any owner if ANY)."""
    return _name_change(Item.NAME_ADD, name, ANY, new_id)


def name_removed(name: str | None = None, old_id: int = ANY) -> Rule:
    return _name_change(Item.NAME_REMOVE, name, old_id, ANY)


def name_changed(name: str | None = None, old_id: int = ANY, new_id: int = ANY) -> Rule:
    return _name_change(Item.NAME_CHANGE, name, old_id, new_id)
