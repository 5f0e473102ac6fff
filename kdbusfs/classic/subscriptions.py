"""Which messages a classic client gets without asking for them by address: its match rules as
kdbus match entries, and the bus driver's signals made from kdbus's notifications.

dbus-daemon delivers unicast signals to their destination whatever its rules; kdbus needs a match
for them (DST_ID = the connection itself), which every classic connection gets at Hello, with
matches for the changes of names it owns (NameAcquired and NameLost). Each AddMatch becomes one
kdbus entry for other connections' signals (the bloom mask and the sender) and, when the rule can
select the driver's NameOwnerChanged, one per notification kind (kdbus entries select one kind
each); all under one cookie, so that RemoveMatch takes them away at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..abi.constants import MATCH_ID_ANY, Item
from ..client import match
from ..client.message import IdChange, NameChange, Notification
from ..dbus import DBusMessage
from .commands import ClassicConnection
from .matchrule import DRIVER, DRIVER_PATH, MatchRule, signal_mask
from .translate import connection_id, unique_name

# Match cookies below this one are the endpoint's own (unicast signals, its names' changes).
FIRST_RULE_COOKIE = 16


@dataclass(slots=True)
class Subscriptions:
    """A client's match rules, each with the kdbus match cookie its entries were added under."""

    rules: list[tuple[MatchRule, int]] = field(default_factory=list)
    next_cookie: int = FIRST_RULE_COOKIE

    def matches(self, message: DBusMessage) -> bool:
        return any(rule.matches(message) for rule, _ in self.rules)



def kdbus_entries(rule: MatchRule, conn: ClassicConnection) -> list[list[bytes]]:
    """The kdbus match entries (each a list of rule items) a D-Bus match rule needs: one for
    signals of other connections, one per kernel notification type for the driver's signals."""
    assert conn.conn is not None
    bus = conn.conn.bus
    entries: list[list[bytes]] = []
    if rule.may_select_peer_signals:
        items = [match.bloom_mask(signal_mask(rule, bus.bloom_size, bus.bloom_n_hash)).item]
        sender = rule.sender
        if sender is not None and sender.startswith(":"):
            found = connection_id(sender)
            if found is not None:
                entries.append([*items, match.sender_id(found).item])
        elif sender is not None:
            entries.append([*items, match.sender_name(sender).item])
        else:
            entries.append(items)
    if rule.may_select_driver_signals:
        arg0 = rule.args.get(0)
        if arg0 is None or not arg0.startswith(":"):
            entries += [[match.name_added(arg0).item], [match.name_removed(arg0).item],
                        [match.name_changed(arg0).item]]
        if arg0 is None or arg0.startswith(":"):
            found = connection_id(arg0) if arg0 is not None else MATCH_ID_ANY
            if found is not None:
                entries += [[match.id_added(found).item], [match.id_removed(found).item]]
    return entries


def own_entries(conn_id: int) -> list[tuple[int, list[bytes]]]:
    """The endpoint's own matches: signals addressed to the client (dbus-daemon delivers them with
    no rule), and changes of the names it owns (for NameAcquired and NameLost)."""
    return [
        (1, [match.destination_id(conn_id).item]),
        (2, [match.name_added(None, new_id=conn_id).item]),
        (3, [match.name_removed(None, old_id=conn_id).item]),
        (4, [match.name_changed(None, old_id=conn_id).item]),
        (5, [match.name_changed(None, new_id=conn_id).item]),
    ]


def driver_signal(member: str, signature: str, body: tuple[Any, ...], serial: int,
                  destination: str | None = None) -> DBusMessage:
    return DBusMessage.signal(DRIVER_PATH, DRIVER, member, signature, body, serial=serial,
                              destination=destination).replace(sender=DRIVER)


def driver_signals(note: Notification | None, me: int, subscriptions: Subscriptions | None,
                   next_serial: Callable[[], int]) -> list[DBusMessage]:
    """The driver's signals a notification makes for connection `me`: NameOwnerChanged where a
    rule selects it (every one for None: a monitor filters later), NameLost and NameAcquired when
    the name is (or was) its own."""
    if isinstance(note, IdChange):
        name = unique_name(note.id)
        old, new = ("", name) if note.kind == Item.ID_ADD else (name, "")
    elif isinstance(note, NameChange):
        name = note.name
        old = unique_name(note.old_id) if note.old_id else ""
        new = unique_name(note.new_id) if note.new_id else ""
    else:
        return []
    signals = []
    changed = driver_signal("NameOwnerChanged", "sss", (name, old, new), next_serial())
    if subscriptions is None or subscriptions.matches(changed):
        signals.append(changed)
    if isinstance(note, NameChange) and subscriptions is not None:
        if note.old_id == me:
            signals.append(driver_signal("NameLost", "s", (name,), next_serial(), unique_name(me)))
        if note.new_id == me:
            signals.append(driver_signal("NameAcquired", "s", (name,), next_serial(), unique_name(me)))
    return signals
