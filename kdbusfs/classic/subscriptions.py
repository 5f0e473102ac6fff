"""Which messages a classic client gets without asking for them by address: its match rules as
kdbus match entries, and the bus driver's signals made from kdbus's notifications.

dbus-daemon delivers unicast signals to their destination whatever its rules; kdbus needs a match
for them (DST_ID = the connection itself), which every classic connection gets at Hello, with
matches for the changes of names it owns (NameAcquired and NameLost).

A client may hold CLASSIC_MATCH_RULES_MAX rules, but its kdbus connection only MATCH_MAX entries,
and a rule that can select NameOwnerChanged needs one per notification kind. So a rule does not own
entries: it wants *selectors* (`PeerSignals`: other connections' signals with a bloom mask from a
sender; `DriverNotes`: one notification kind about a name or id), counted over all rules, and the
entries are planned from the selectors wanted (`plan`): equal selectors share one entry, which goes
when the last rule wanting it goes. When the distinct selectors need more entries than the
connection has, the largest groups are widened to one entry each: all names of a notification
kind, the bits all masks of one sender share. Widening only lets more through: every signal
delivered is checked against the client's rules exactly (`Subscriptions.matches`), so the client
sees what its rules select, whatever entries stand for them. A well-known sender is the one thing
the exact check cannot tell (only the bus knows who owned the name when the signal was sent), so
its NAME rule is never widened away: a client with rules for more well-known senders than there
are entries is refused (LimitsExceeded).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import limits
from ..abi.constants import MATCH_ID_ANY, Item
from ..client import match
from ..client.message import IdChange, NameChange, Notification
from ..dbus import DBusMessage
from ..errors import KdbusError
from .matchrule import DRIVER, DRIVER_PATH, MatchRule, signal_mask
from .translate import connection_id, unique_name

# Match cookies below this one are the endpoint's own (unicast signals, its names' changes).
FIRST_RULE_COOKIE = 16
_NAME_KINDS = (Item.NAME_ADD, Item.NAME_REMOVE, Item.NAME_CHANGE)
_ID_KINDS = (Item.ID_ADD, Item.ID_REMOVE)


@dataclass(frozen=True, slots=True)
class PeerSignals:
    """Signals of other connections whose bloom filter has every bit of `mask`, sent by a
    connection id, by the owner of a well-known name, or by anyone (None)."""

    sender: int | str | None
    mask: bytes


@dataclass(frozen=True, slots=True)
class DriverNotes:
    """Kernel notifications of one kind (NAME_* or ID_*) about a name or id, or any (None)."""

    kind: Item
    subject: str | int | None = None


Selector = PeerSignals | DriverNotes
# Entries as the MATCH_ADD items that make them: equal tuples are one entry.
Entry = tuple[bytes, ...]


class MatchTarget(Protocol):
    """Where entries go: the client's kdbus connection (ClassicConnection)."""

    def match_add(self, cookie: int, rules: list[bytes], replace: bool = False) -> None: ...

    def match_remove(self, cookie: int) -> None: ...


class TooManySenders(Exception):
    """The rules name more well-known senders than the connection has match entries."""


def selectors(rule: MatchRule, bloom_size: int, bloom_n_hash: int) -> tuple[Selector, ...]:
    """What `rule` needs the bus to deliver: other connections' signals (its bloom mask, its
    sender) and, when it can select the driver's NameOwnerChanged, the notifications behind it."""
    wanted: list[Selector] = []
    if rule.may_select_peer_signals:
        mask = bytes(signal_mask(rule, bloom_size, bloom_n_hash))
        sender = rule.sender
        if sender is None or not sender.startswith(":"):
            wanted.append(PeerSignals(sender, mask))
        elif (found := connection_id(sender)) is not None:
            wanted.append(PeerSignals(found, mask))
        # else: no connection has that unique name, nor ever will.
    if rule.may_select_driver_signals:
        arg0 = rule.args.get(0)
        if arg0 is None or not arg0.startswith(":"):
            wanted += [DriverNotes(kind, arg0) for kind in _NAME_KINDS]
        if arg0 is None:
            wanted += [DriverNotes(kind) for kind in _ID_KINDS]
        elif arg0.startswith(":") and (found := connection_id(arg0)) is not None:
            wanted += [DriverNotes(kind, found) for kind in _ID_KINDS]
    return tuple(wanted)


def _peer_entry(sender: int | str | None, mask: bytes) -> Entry:
    items = [match.bloom_mask(mask).item]
    if isinstance(sender, int):
        items.append(match.sender_id(sender).item)
    elif sender is not None:
        items.append(match.sender_name(sender).item)
    return tuple(items)


def _notes_entry(kind: Item, subject: str | int | None) -> Entry:
    if kind in _ID_KINDS:
        found = subject if isinstance(subject, int) else MATCH_ID_ANY
        return ((match.id_added if kind == Item.ID_ADD else match.id_removed)(found).item,)
    name = subject if isinstance(subject, str) else None
    rule = {Item.NAME_ADD: match.name_added, Item.NAME_REMOVE: match.name_removed,
            Item.NAME_CHANGE: match.name_changed}[kind](name)
    return (rule.item,)


def _common_bits(masks: Iterable[bytes]) -> bytes:
    """The bits every mask has: a filter with all bits of each mask has these too."""
    common: int | None = None
    size = 0
    for mask in masks:
        size = len(mask)
        value = int.from_bytes(mask, "little")
        common = value if common is None else common & value
    return (common or 0).to_bytes(size, "little")


def plan(wanted: Iterable[Selector], budget: int) -> set[Entry]:
    """The entries, at most `budget`, that deliver at least what each selector asks for;
    TooManySenders when no widening fits."""
    peers: dict[int | str | None, set[bytes]] = {}
    notes: dict[Item, set[str | int | None]] = {}
    for selector in wanted:
        if isinstance(selector, PeerSignals):
            peers.setdefault(selector.sender, set()).add(selector.mask)
        else:
            notes.setdefault(selector.kind, set()).add(selector.subject)
    for subjects in notes.values():
        if None in subjects:
            subjects.intersection_update({None})  # one kind about anything covers the rest
    groups: list[tuple[str, Any, set[Any]]] = [("peer", key, masks) for key, masks in peers.items()]
    groups += [("notes", key, subjects) for key, subjects in notes.items()]
    cost = sum(len(members) for _, _, members in groups)
    widened: set[tuple[str, Any]] = set()
    for kind, key, members in sorted(groups, key=lambda group: -len(group[2])):
        if cost <= budget:
            break
        if len(members) > 1:
            widened.add((kind, key))
            cost -= len(members) - 1
    if cost > budget:
        # Each group is one entry already. Unique senders can go (the exact check knows them):
        # their signals are taken from anyone with the bits all their masks share.
        unique = [key for key in peers if isinstance(key, int)]
        if len(unique) > 1 or (unique and None in peers):
            merged = peers.setdefault(None, set())
            for key in unique:
                merged |= peers.pop(key)
            widened.add(("peer", None))
            cost = len(peers) + len(notes)
    if cost > budget:
        raise TooManySenders(f"{len(peers)} senders, {budget} match entries")
    entries: set[Entry] = set()
    for sender, masks in peers.items():
        if ("peer", sender) in widened:
            entries.add(_peer_entry(sender, _common_bits(masks)))
        else:
            entries.update(_peer_entry(sender, mask) for mask in masks)
    for note, subjects in notes.items():
        if ("notes", note) in widened:
            entries.add(_notes_entry(note, None))
        else:
            entries.update(_notes_entry(note, subject) for subject in subjects)
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


# Entries for rules: what the endpoint's own leave, less room for the entries one change adds
# before it removes those they replace (so that no signal falls between them).
ENTRY_BUDGET = limits.MATCH_MAX - len(own_entries(0)) - 16


@dataclass(slots=True)
class Subscriptions:
    """A client's match rules (each with what it wants of the bus), the selectors they want (with
    how many rules want each) and the kdbus entries standing for them (each under its cookie)."""

    rules: list[tuple[MatchRule, tuple[Selector, ...]]] = field(default_factory=list)
    wanted: Counter[Selector] = field(default_factory=Counter)
    installed: dict[Entry, int] = field(default_factory=dict)
    next_cookie: int = FIRST_RULE_COOKIE
    budget: int = ENTRY_BUDGET

    @property
    def full(self) -> bool:
        return len(self.rules) >= limits.CLASSIC_MATCH_RULES_MAX

    def matches(self, message: DBusMessage) -> bool:
        return any(rule.matches(message) for rule, _ in self.rules)

    def add(self, rule: MatchRule, wants: tuple[Selector, ...], target: MatchTarget) -> None:
        """Hold `rule` (the caller checks `full` first, as dbus-daemon counts before it reads the
        rule); its entries are on the bus when this returns. TooManySenders or the bus's
        KdbusError leave everything as it was."""
        self.wanted.update(wants)
        try:
            self._sync(target)
        except (TooManySenders, KdbusError):
            self.wanted.subtract(wants)
            self.wanted = +self.wanted
            self._sync(target)
            raise
        self.rules.append((rule, wants))

    def remove(self, rule: MatchRule, target: MatchTarget) -> bool:
        """Drop one rule equal to `rule` (and the entries no other rule wants); False if none."""
        for index, (held, wants) in enumerate(self.rules):
            if held == rule:
                del self.rules[index]
                self.wanted.subtract(wants)
                self.wanted = +self.wanted  # selectors no rule wants any more are gone
                self._sync(target)
                return True
        return False

    def _sync(self, target: MatchTarget) -> None:
        """Make the bus's entries the plan's: new ones first, then away with the old."""
        planned = plan(self.wanted, self.budget)
        stale = [entry for entry in self.installed if entry not in planned]
        for entry in planned:
            if entry in self.installed:
                continue
            cookie = self.next_cookie
            try:
                target.match_add(cookie, list(entry))
            except KdbusError:
                if not stale:
                    raise
                # No room for both: the old entries go first after all.
                self._drop(stale, target)
                stale = []
                target.match_add(cookie, list(entry))
            self.next_cookie += 1
            self.installed[entry] = cookie
        self._drop(stale, target)

    def _drop(self, entries: list[Entry], target: MatchTarget) -> None:
        for entry in entries:
            target.match_remove(self.installed.pop(entry))


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
