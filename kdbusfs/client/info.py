"""Answers of the query commands: CONN_INFO, BUS_CREATOR_INFO and LIST (KDBUS-SPEC.md §2.10-2.12,
§6.6). Each answer is one or more `kdbus_info` records: an id, flags, then items."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..abi import structs
from ..abi.constants import Item
from ..abi.items import read_items
from ..abi.structs import align8
from .metadata import Metadata, MetadataReader, OwnedName, owned_name, text


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A peer: its id, its HELLO flags (its kind) and the metadata it lets others see."""

    id: int
    flags: int
    metadata: Metadata


@dataclass(frozen=True, slots=True)
class BusCreatorInfo:
    """A bus: its id, its BUS_MAKE flags, its name and what its creator lets others see."""

    id: int
    flags: int
    name: str
    metadata: Metadata


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One LIST record: a connection with one of its names (and that name's flags), or without."""

    id: int
    flags: int
    name: OwnedName | None = None


def _records(data: bytes) -> Iterator[tuple[int, int, bytes, int]]:
    """(id, flags, record bytes, end of its fixed part) for the records packed in `data`."""
    pos = 0
    while pos + structs.INFO.size <= len(data):
        size, record_id, flags = structs.INFO.unpack(data, pos)
        if size < structs.INFO.size or pos + size > len(data):
            raise ValueError(f"info record at {pos} has bad size {size}")
        yield record_id, flags, data[pos : pos + size], structs.INFO.size
        pos += align8(size)


def parse_connection_info(data: bytes) -> ConnectionInfo:
    for record_id, flags, record, start in _records(data):
        reader = MetadataReader()
        for kind, payload in read_items(record, start):
            reader.take(kind, payload)
        return ConnectionInfo(record_id, flags, reader.metadata())
    raise ValueError("empty CONN_INFO answer")


def parse_bus_creator_info(data: bytes) -> BusCreatorInfo:
    for record_id, flags, record, start in _records(data):
        reader = MetadataReader()
        name = ""
        for kind, payload in read_items(record, start):
            if kind == Item.MAKE_NAME:
                name = text(payload)
            else:
                reader.take(kind, payload)
        return BusCreatorInfo(record_id, flags, name, reader.metadata())
    raise ValueError("empty BUS_CREATOR_INFO answer")


def parse_list(data: bytes) -> list[ListEntry]:
    entries = []
    for record_id, flags, record, start in _records(data):
        names = [owned_name(payload) for kind, payload in read_items(record, start)
                 if kind == Item.OWNED_NAME]
        entries.append(ListEntry(record_id, flags, names[0] if names else None))
    return entries
