"""The bus driver as a classic client sees it, where it must answer as dbus-daemon answers: the
order of ListQueuedOwners, the errors for unknown interfaces, org.freedesktop.DBus.Properties and
the methods dbus-daemon has for configuration and security modules."""

from __future__ import annotations

from pathlib import Path

from test_classic_endpoint import DRIVER, Loop, Peer, setup

from kdbusfs.classic.endpoint import ClassicEndpoint

__all__ = ["setup"]


def _queued(peer: Peer, name: str) -> list[str]:
    owners: list[str] = peer.call(DRIVER, "ListQueuedOwners", "s", (name,)).body[0]
    return owners


def test_queued_owners_are_listed_in_queue_order_not_connection_order(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    first, second, third = Peer(path, loop), Peer(path, loop), Peer(path, loop)
    for peer in (first, second, third):
        peer.authenticate()
    name = "org.example.Queue"
    assert first.call(DRIVER, "RequestName", "su", (name, 0)).body == (1,)
    # The newest connection queues first.
    assert third.call(DRIVER, "RequestName", "su", (name, 0)).body == (2,)
    assert second.call(DRIVER, "RequestName", "su", (name, 0)).body == (2,)
    assert _queued(first, name) == [first.name, third.name, second.name]
    assert first.call(DRIVER, "ReleaseName", "s", (name,)).body == (1,)
    assert _queued(second, name) == [third.name, second.name]
    # Queued again, the first is now last.
    assert first.call(DRIVER, "RequestName", "su", (name, 0)).body == (2,)
    assert _queued(first, name) == [third.name, second.name, first.name]
