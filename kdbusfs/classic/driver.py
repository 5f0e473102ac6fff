"""org.freedesktop.DBus for a classic client, answered from the bus's own state.

Each method becomes the kdbus command a kdbus-era library made for it (RequestName is NAME_ACQUIRE,
ListNames is LIST, GetConnectionUnixUser is CONN_INFO, AddMatch is MATCH_ADD, ...), run on the
client's own connection, so the bus's policy decides as it decides for native clients. Errors and
their texts are dbus-daemon's. The driver's signals (NameOwnerChanged, NameAcquired, NameLost) are
made from kdbus's notifications by the endpoint (see `driver_signals`).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from .. import limits
from ..abi.constants import (
    ATTACH_ALL,
    HELLO_ACTIVATOR,
    HELLO_POLICY_HOLDER,
    LIST_ACTIVATORS,
    LIST_NAMES,
    LIST_QUEUED,
    LIST_UNIQUE,
    NAME_ACQUIRED,
    NAME_ALLOW_REPLACEMENT,
    NAME_IN_QUEUE,
    NAME_PRIMARY,
    NAME_QUEUE,
    NAME_REPLACE_EXISTING,
)
from ..bus.names import NameTaken, is_valid_name
from ..client.info import ListEntry
from ..dbus import DBusMessage, Variant, parse_signature, wire
from ..errors import KdbusError, LimitReached, user_named
from ..limitlog import LimitLog
from .closures import FIXED
from .commands import ClassicConnection
from .matchrule import DRIVER, DRIVER_PATH, InvalidRule, parse
from .subscriptions import ENTRY_BUDGET, Subscriptions, TooManySenders, selectors
from .translate import connection_id, unique_name

log = logging.getLogger("kdbusfs.classic")
# Clients reaching the driver's own limits, warned of once per burst (as the bus's are).
_limit_log = LimitLog()

INTERFACE = DRIVER
PEER = "org.freedesktop.DBus.Peer"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PROPERTIES = "org.freedesktop.DBus.Properties"
MONITORING = "org.freedesktop.DBus.Monitoring"
# RequestName's flags and answers (D-Bus specification).
DBUS_NAME_ALLOW_REPLACEMENT = 1
DBUS_NAME_REPLACE_EXISTING = 2
DBUS_NAME_DO_NOT_QUEUE = 4
PRIMARY_OWNER, IN_QUEUE, EXISTS, ALREADY_OWNER = 1, 2, 3, 4
RELEASED, NON_EXISTENT, NOT_OWNER = 1, 2, 3
START_SUCCESS, START_ALREADY_RUNNING = 1, 2
# Connections that are no D-Bus peers: activators (they hold a name for a service not running)
# and policy holders; dbus-daemon has neither, so no classic client sees them as owners.
_NOT_PEERS = HELLO_ACTIVATOR | HELLO_POLICY_HOLDER

# The driver's methods by (interface, member): (input signature, output signature), for argument
# checks and introspection. A call without an interface takes the first method of its name, in
# dbus-daemon's order of interfaces.
METHODS: dict[tuple[str, str], tuple[str, str]] = {
    **{(INTERFACE, member): signatures for member, signatures in {
        "Hello": ("", "s"), "RequestName": ("su", "u"), "ReleaseName": ("s", "u"),
        "StartServiceByName": ("su", "u"), "UpdateActivationEnvironment": ("a{ss}", ""),
        "NameHasOwner": ("s", "b"), "ListNames": ("", "as"), "ListActivatableNames": ("", "as"),
        "AddMatch": ("s", ""), "RemoveMatch": ("s", ""), "GetNameOwner": ("s", "s"),
        "ListQueuedOwners": ("s", "as"), "GetConnectionUnixUser": ("s", "u"),
        "GetConnectionUnixProcessID": ("s", "u"), "GetAdtAuditSessionData": ("s", "ay"),
        "GetConnectionSELinuxSecurityContext": ("s", "ay"), "ReloadConfig": ("", ""),
        "GetId": ("", "s"), "GetConnectionCredentials": ("s", "a{sv}")}.items()},
    (PROPERTIES, "Get"): ("ss", "v"),
    (PROPERTIES, "GetAll"): ("s", "a{sv}"),
    (PROPERTIES, "Set"): ("ssv", ""),
    (INTROSPECTABLE, "Introspect"): ("", "s"),
    # Served by the client itself (client.py), which replaces its connection with a monitor.
    (MONITORING, "BecomeMonitor"): ("asu", ""),
    (PEER, "GetMachineId"): ("", "s"),
    (PEER, "Ping"): ("", ""),
}
SIGNALS = {"NameOwnerChanged": "sss", "NameLost": "s", "NameAcquired": "s"}
# The driver's properties (all read-only, constant for the bus's life): optional features it has
# (dbus-daemon's names; HeaderFiltering: receivers get only the header fields the specification
# knows, and SENDER always from the bus) and the optional interfaces it serves.
PROPERTY_VALUES: dict[str, Variant] = {
    "Features": Variant("as", ["HeaderFiltering"]),
    "Interfaces": Variant("as", [MONITORING]),
}
# dbus-daemon serves these on every object path; the others on /org/freedesktop/DBus only.
_ANY_PATH = (INTERFACE, INTROSPECTABLE, PEER)


def interfaces_at(path: str | None) -> list[str]:
    interfaces = dict.fromkeys(interface for interface, _ in METHODS)
    return [name for name in interfaces if path == DRIVER_PATH or name in _ANY_PATH]


def resolve(interface: str | None, member: str, path: str | None = DRIVER_PATH) -> tuple[str, str]:
    """The (interface, member) a call to the driver at `path` means; DriverError as dbus-daemon
    answers for an interface it does not serve there (UnknownInterface) or a method it does not
    have (UnknownMethod)."""
    served = interfaces_at(path)
    if interface is not None and interface not in served:
        raise _error("UnknownInterface", f"{DRIVER} does not understand message {member}")
    for key in METHODS:
        if key[1] == member and key[0] in served and interface in (None, key[0]):
            return key
    raise _error("UnknownMethod", f"{DRIVER} does not understand message {member}")


def _introspection(path: str | None) -> str:
    def args(signature: str, direction: str) -> str:
        return "".join(f'<arg direction="{direction}" type="{kind.signature}"/>'
                       for kind in parse_signature(signature))

    const = '<annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>'
    interfaces = []
    for name in interfaces_at(path):
        members = "".join(f'    <method name="{member}">{args(i, "in")}{args(o, "out")}</method>\n'
                          for (interface, member), (i, o) in METHODS.items() if interface == name)
        if name == INTERFACE:
            members += "".join(f'    <property name="{prop}" type="{value.signature}" access="read">'
                               f'{const}</property>\n' for prop, value in PROPERTY_VALUES.items())
            members += "".join(f'    <signal name="{signal}">{args(s, "out")}</signal>\n'
                               for signal, s in SIGNALS.items())
        if name == PROPERTIES:
            members += ('    <signal name="PropertiesChanged"><arg type="s" name="interface_name"/>'
                        '<arg type="a{sv}" name="changed_properties"/>'
                        '<arg type="as" name="invalidated_properties"/></signal>\n')
        interfaces.append(f'  <interface name="{name}">\n{members}  </interface>\n')
    # As dbus-daemon: the root names the driver's object, so that tools walking the tree find it.
    child = '  <node name="org/freedesktop/DBus"/>\n' if path == "/" else ""
    return ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n<node>\n'
            f'{"".join(interfaces)}{child}</node>\n')


class DriverError(Exception):
    """A D-Bus error answer."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(name, text)
        self.name = name
        self.text = text


def _error(short: str, text: str) -> DriverError:
    return DriverError(f"org.freedesktop.DBus.Error.{short}", text)


@dataclass(slots=True)
class Answer:
    """What a driver call produces: the reply's signature and body."""

    signature: str = ""
    body: tuple[Any, ...] = ()


class Driver:
    """The bus driver as one classic client sees it."""

    def __init__(self, conn: ClassicConnection, subscriptions: Subscriptions,
                 machine_id: Callable[[], str]) -> None:
        self.conn = conn
        self.subscriptions = subscriptions
        self._machine_id = machine_id
        self._methods: dict[tuple[str, str], Callable[[DBusMessage], Answer]] = {
            (INTERFACE, "Hello"): self._hello_again,
            (INTERFACE, "RequestName"): self._request_name,
            (INTERFACE, "ReleaseName"): self._release_name,
            (INTERFACE, "ListNames"): self._list_names,
            (INTERFACE, "ListActivatableNames"): self._list_activatable,
            (INTERFACE, "ListQueuedOwners"): self._list_queued,
            (INTERFACE, "NameHasOwner"): self._name_has_owner,
            (INTERFACE, "GetNameOwner"): self._get_name_owner,
            (INTERFACE, "GetConnectionUnixUser"): self._unix_user,
            (INTERFACE, "GetConnectionUnixProcessID"): self._unix_pid,
            (INTERFACE, "GetConnectionCredentials"): self._credentials,
            (INTERFACE, "AddMatch"): self._add_match,
            (INTERFACE, "RemoveMatch"): self._remove_match,
            (INTERFACE, "StartServiceByName"): self._start_service,
            (INTERFACE, "GetId"): self._get_id,
            (PEER, "Ping"): lambda _: Answer(),
            (PEER, "GetMachineId"): lambda _: Answer("s", (self._machine_id(),)),
            (INTERFACE, "UpdateActivationEnvironment"): self._update_activation_environment,
            (INTERFACE, "ReloadConfig"): self._reload_config,
            (INTERFACE, "GetAdtAuditSessionData"): self._audit_session_data,
            (INTERFACE, "GetConnectionSELinuxSecurityContext"): self._selinux_context,
            (PROPERTIES, "Get"): self._get_property,
            (PROPERTIES, "GetAll"): self._get_all_properties,
            (PROPERTIES, "Set"): self._set_property,
            (INTROSPECTABLE, "Introspect"): lambda call: Answer("s", (_introspection(call.path),)),
        }

    def call(self, message: DBusMessage) -> Answer:
        """Answer a method call to the driver; DriverError for an error reply."""
        member = message.member or ""
        key = resolve(message.interface, member, message.path)
        wanted = METHODS[key][0]
        if message.signature != wanted:
            # dbus-daemon's text ends with a newline.
            raise _error("InvalidArgs",
                         f"Call to {member} has wrong args ({message.signature}, expected {wanted})\n")
        method = self._methods.get(key)
        if method is None:  # BecomeMonitor, which the client serves before it gets here
            raise _error("UnknownMethod", f"{DRIVER} does not understand message {member}")
        try:
            return method(message)
        except KdbusError as exc:
            raise _error("Failed", f"{member} failed: {exc.why}") from None

    # -- names ----------------------------------------------------------------------------------
    def _hello_again(self, message: DBusMessage) -> Answer:
        raise _error("Failed", "Already handled an Hello message")

    def _request_name(self, message: DBusMessage) -> Answer:
        name, dbus_flags = message.body
        me = unique_name(self.conn.id)
        if name.startswith(":"):
            raise _error("InvalidArgs", f"Cannot acquire a service starting with ':' such as \"{name}\"")
        if name == DRIVER:
            raise _error("InvalidArgs", f"Connection \"{me}\" is not allowed to own the service \"{name}\""
                                        "because it is reserved for D-Bus' use only")
        if not is_valid_name(name):
            raise _error("InvalidArgs", f"Requested bus name \"{name}\" is not valid")
        flags = 0 if dbus_flags & DBUS_NAME_DO_NOT_QUEUE else NAME_QUEUE
        if dbus_flags & DBUS_NAME_ALLOW_REPLACEMENT:
            flags |= NAME_ALLOW_REPLACEMENT
        if dbus_flags & DBUS_NAME_REPLACE_EXISTING:
            flags |= NAME_REPLACE_EXISTING
        try:
            returned = self.conn.name_acquire(name, flags)
        except NameTaken:
            return Answer("u", (EXISTS,))
        except KdbusError as exc:
            if exc.errno == errno.EPERM:
                raise _error("AccessDenied",
                             f"Connection \"{me}\" is not allowed to own the service \"{name}\" "
                             "due to security policies in the configuration file") from None
            if exc.errno == errno.EALREADY:
                return Answer("u", (ALREADY_OWNER,))
            if exc.errno in (errno.E2BIG, errno.EMFILE, errno.ENOBUFS):
                raise _error("LimitsExceeded",
                             f"Connection \"{me}\" is not allowed to own more services") from None
            raise
        if returned & NAME_IN_QUEUE:
            return Answer("u", (IN_QUEUE,))
        if returned & NAME_PRIMARY:
            return Answer("u", (PRIMARY_OWNER if returned & NAME_ACQUIRED else ALREADY_OWNER,))
        return Answer("u", (EXISTS,))

    def _release_name(self, message: DBusMessage) -> Answer:
        (name,) = message.body
        if name.startswith(":"):
            raise _error("InvalidArgs", f"Cannot release a service starting with ':' such as \"{name}\"")
        if name == DRIVER:
            raise _error("InvalidArgs",
                         f"Cannot release the service \"{name}\" because it is owned by the bus")
        if not is_valid_name(name):
            raise _error("InvalidArgs", f"Given bus name \"{name}\" is not valid")
        try:
            self.conn.name_release(name)
        except KdbusError as exc:
            if exc.errno == errno.ESRCH:
                return Answer("u", (NON_EXISTENT,))
            if exc.errno == errno.EADDRINUSE:
                return Answer("u", (NOT_OWNER,))
            raise
        return Answer("u", (RELEASED,))

    def _list_names(self, message: DBusMessage) -> Answer:
        entries = self.conn.list(LIST_UNIQUE | LIST_NAMES)
        # Every connection by its unique name (LIST gives one record per name it owns, or one
        # without a name), then the well-known names.
        unique = dict.fromkeys(unique_name(entry.id) for entry in entries if not entry.flags & _NOT_PEERS)
        owned = [entry.name.name for entry in entries
                 if entry.name is not None and entry.name.flags & NAME_PRIMARY]
        return Answer("as", ([DRIVER, *unique, *owned],))

    def _list_activatable(self, message: DBusMessage) -> Answer:
        names = [DRIVER] + sorted({entry.name.name for entry in self.conn.list(LIST_ACTIVATORS)
                                   if entry.name is not None})
        return Answer("as", (names,))

    def _holders(self, name: str, flags: int) -> list[ListEntry]:
        """The records of `name` LIST gives this client's connection (so the bus's SEE policy
        decides what it may know): the primary owner first, then the queue in its order, then
        the activator. LIST tells who holds the name and how, not in which order: kdbus walks the
        bus's connections (names.c, kdbus_list_all) and its records carry only the name flags, so
        the order is the bus's own queue's."""
        records = [entry for entry in self.conn.list(flags)
                   if entry.name is not None and entry.name.name == name]
        assert self.conn.conn is not None
        held = self.conn.conn.bus.names.lookup(name)
        queue = [] if held is None else [owner.conn.id for owner in held.queue]
        position = {conn_id: index for index, conn_id in enumerate(queue)}
        return sorted(records, key=lambda entry: position.get(entry.id, len(queue)))

    def _owner_of(self, name: str) -> str | None:
        """The unique name owning `name` (itself for a live unique name), as this client may see it."""
        if name == DRIVER:
            return DRIVER
        if name.startswith(":"):
            found = connection_id(name)
            if found is None:
                return None
            try:
                info = self.conn.conn_info(found, 0)
            except KdbusError:
                return None
            return None if info.flags & _NOT_PEERS else name
        if not is_valid_name(name):
            return None
        try:
            info = self.conn.conn_info(name, 0)
        except KdbusError:
            return None
        # CONN_INFO by name finds the activator when no service owns the name yet.
        return None if info.flags & _NOT_PEERS else unique_name(info.id)

    def _list_queued(self, message: DBusMessage) -> Answer:
        (name,) = message.body
        if name == DRIVER:
            return Answer("as", ([DRIVER],))
        if name.startswith(":") and self._owner_of(name) is not None:
            return Answer("as", ([name],))
        owners = [unique_name(entry.id) for entry in self._holders(name, LIST_NAMES | LIST_QUEUED)
                  if not entry.flags & _NOT_PEERS] if is_valid_name(name) else []
        if not owners:
            raise _error("NameHasNoOwner", f"Could not get owners of name '{name}': no such name")
        return Answer("as", (owners,))

    def _name_has_owner(self, message: DBusMessage) -> Answer:
        return Answer("b", (self._owner_of(message.body[0]) is not None,))

    def _get_name_owner(self, message: DBusMessage) -> Answer:
        (name,) = message.body
        owner = self._owner_of(name)
        if owner is None:
            raise _error("NameHasNoOwner", f"Could not get owner of name '{name}': no such name")
        return Answer("s", (owner,))

    # -- credentials --------------------------------------------------------------------------
    def _info(self, name: str, what: str) -> Any:
        owner = self._owner_of(name)
        if owner is None or owner == DRIVER:
            if owner == DRIVER:
                return None
            raise _error("NameHasNoOwner", f"Could not get {what} of name '{name}': no such name")
        found = connection_id(owner)
        assert found is not None
        try:
            return self.conn.conn_info(found, ATTACH_ALL)
        except KdbusError:
            raise _error("NameHasNoOwner", f"Could not get {what} of name '{name}': no such name") from None

    def _unix_user(self, message: DBusMessage) -> Answer:
        info = self._info(message.body[0], "UID")
        if info is None:
            return Answer("u", (os.geteuid(),))
        if info.metadata.creds is None:
            raise _error("Failed", f"Could not determine UID for '{message.body[0]}'")
        return Answer("u", (info.metadata.creds.uid,))

    def _unix_pid(self, message: DBusMessage) -> Answer:
        info = self._info(message.body[0], "PID")
        if info is None:
            return Answer("u", (os.getpid(),))
        if info.metadata.pids is None or not info.metadata.pids.pid:
            raise _error("UnixProcessIdUnknown", f"Could not determine PID for '{message.body[0]}'")
        return Answer("u", (info.metadata.pids.pid,))

    def _credentials(self, message: DBusMessage) -> Answer:
        info = self._info(message.body[0], "credentials")
        credentials: dict[str, Variant] = {}
        if info is None:
            credentials = {"ProcessID": Variant("u", os.getpid()), "UnixUserID": Variant("u", os.geteuid())}
            return Answer("a{sv}", (credentials,))
        metadata = info.metadata
        if metadata.pids is not None and metadata.pids.pid:
            credentials["ProcessID"] = Variant("u", metadata.pids.pid)
        if metadata.creds is not None:
            credentials["UnixUserID"] = Variant("u", metadata.creds.uid)
            # The D-Bus specification's UnixGroupIDs: the primary group and the supplementary
            # ones (kdbus's AUXGROUPS), sorted, complete or absent; dbus-daemon gives them so.
            groups = {metadata.creds.egid, *(metadata.auxgroups or ())}
            credentials["UnixGroupIDs"] = Variant("au", sorted(groups))
        if metadata.seclabel:
            credentials["LinuxSecurityLabel"] = Variant("ay", metadata.seclabel.encode() + b"\0")
        return Answer("a{sv}", (credentials,))

    def _get_id(self, message: DBusMessage) -> Answer:
        assert self.conn.conn is not None
        return Answer("s", (self.conn.conn.bus.id128.hex(),))

    def _audit_session_data(self, message: DBusMessage) -> Answer:
        """Solaris's ADT audit data: there is none on Linux, as dbus-daemon has none there."""
        (name,) = message.body
        if self._owner_of(name) is None:
            raise _error("NameHasNoOwner", f"Could not get audit session data of name '{name}': no such name")
        raise _error("AdtAuditDataUnknown", f"Could not determine audit session data for '{name}'")

    def _selinux_context(self, message: DBusMessage) -> Answer:
        """The connection's SELinux context when SELinux is on (dbus-daemon asks SELinux alone:
        another module's label, AppArmor's say, is no answer here), as its metadata recorded it."""
        (name,) = message.body
        info = self._info(name, "security context")
        label = None if info is None or not _selinux_enabled() else info.metadata.seclabel
        if not label:
            raise _error("SELinuxSecurityContextUnknown",
                         f"Could not determine security context for '{name}'")
        return Answer("ay", (label.encode(),))

    # -- configuration ----------------------------------------------------------------------------
    def _update_activation_environment(self, message: DBusMessage) -> Answer:
        """Refused on a system bus, as dbus-daemon refuses it; elsewhere the bus owner's uid may
        call it, and nothing is kept: kdbusfs starts no services, their activators do (systemd,
        whose environment is its own: `systemctl --user set-environment`)."""
        assert self.conn.conn is not None
        bus = self.conn.conn.bus
        me = unique_name(self.conn.id)
        if bus.name.partition("-")[2] == "system":
            log.debug("%s: UpdateActivationEnvironment on a system bus refused", me)
            raise _error("AccessDenied", "Cannot change activation environment on a system bus.")
        if self.conn.caller.uid not in (bus.uid, 0):
            log.debug("%s: UpdateActivationEnvironment refused to uid %d", me, self.conn.caller.uid)
            raise _error("AccessDenied", f"Connection \"{me}\" is not allowed to call "
                                         "UpdateActivationEnvironment (only the bus owner's uid may)")
        log.debug("%s: UpdateActivationEnvironment of %s not kept (activators start services)", me,
                  ", ".join(sorted(message.body[0])) or "nothing")
        return Answer()

    def _reload_config(self, message: DBusMessage) -> Answer:
        """There is no configuration file to read again: the bus's policy is its owner's (kdbus
        policy holders), so there is nothing to do, and success is what dbus-daemon answers."""
        return Answer()

    # -- properties -------------------------------------------------------------------------------
    def _property_interface(self, interface: str) -> dict[str, Variant]:
        if interface == INTERFACE:
            return PROPERTY_VALUES
        if interface in interfaces_at(DRIVER_PATH):
            return {}
        raise _error("UnknownInterface", f"Interface \"{interface}\" not found")

    def _property(self, interface: str, name: str) -> Variant:
        value = self._property_interface(interface).get(name)
        if value is None:
            raise _error("UnknownProperty", f"Property \"{interface}.{name}\" not found")
        return value

    def _get_property(self, message: DBusMessage) -> Answer:
        return Answer("v", (self._property(*message.body),))

    def _get_all_properties(self, message: DBusMessage) -> Answer:
        return Answer("a{sv}", (dict(self._property_interface(message.body[0])),))

    def _set_property(self, message: DBusMessage) -> Answer:
        interface, name, _ = message.body
        self._property(interface, name)
        log.debug("%s: Set of the driver's read-only property %s.%s refused", unique_name(self.conn.id),
                  interface, name)
        raise _error("PropertyReadOnly", f"Property '{interface}.{name}' cannot be set")

    # -- matches --------------------------------------------------------------------------------
    def _add_match(self, message: DBusMessage) -> Answer:
        me = unique_name(self.conn.id)
        # Before the rule is even read, as dbus-daemon counts.
        if self.subscriptions.full:
            self._match_limit(me, f"{limits.CLASSIC_MATCH_RULES_MAX} match rules already",
                              "match rules per classic client", limits.CLASSIC_MATCH_RULES_MAX)
        try:
            rule = parse(message.body[0])
        except InvalidRule as exc:
            log.debug("%s: AddMatch of an invalid rule: %s", me, exc)
            raise _error("MatchRuleInvalid", str(exc)) from None
        assert self.conn.conn is not None
        bus = self.conn.conn.bus
        try:
            self.subscriptions.add(rule, selectors(rule, bus.bloom_size, bus.bloom_n_hash), self.conn)
        except TooManySenders as exc:
            self._match_limit(me, f"its rules name {exc}", "well-known senders in a classic client's "
                              "match rules", ENTRY_BUDGET)
        except KdbusError as exc:
            if exc.errno == errno.EMFILE:
                self._match_limit(me, exc.why, "match entries per connection", limits.MATCH_MAX)
            raise
        return Answer()

    def _match_limit(self, me: str, why: str, limit: str, value: int) -> NoReturn:
        hit = LimitReached(errno.EMFILE, f"classic client {me}: {why}", limit, value, FIXED,
                           user_named(self.conn.caller.uid))
        for line in _limit_log.hit(hit, time.monotonic()):
            log.warning("%s", line)
        raise _error("LimitsExceeded", f"Connection \"{me}\" is not allowed to add more match rules "
                                       f"(max_match_rules_per_connection={limits.CLASSIC_MATCH_RULES_MAX})")

    def _remove_match(self, message: DBusMessage) -> Answer:
        try:
            rule = parse(message.body[0])
        except InvalidRule as exc:
            log.debug("%s: RemoveMatch of an invalid rule: %s", unique_name(self.conn.id), exc)
            raise _error("MatchRuleInvalid", str(exc)) from None
        if not self.subscriptions.remove(rule, self.conn):
            raise _error("MatchRuleNotFound", "The given match rule wasn't found and can't be removed")
        return Answer()

    # -- activation -------------------------------------------------------------------------
    def _start_service(self, message: DBusMessage) -> Answer:
        name = message.body[0]
        if not is_valid_name(name):
            raise _error("ServiceUnknown", f"The name {name} was not provided by any .service files")
        holders = self._holders(name, LIST_NAMES | LIST_ACTIVATORS)
        if not holders:
            raise _error("ServiceUnknown", f"The name {name} was not provided by any .service files")
        if not holders[0].flags & _NOT_PEERS:
            return Answer("u", (START_ALREADY_RUNNING,))
        # As sd-bus's proxy did: a Ping to the name waits at its activator, which starts the service.
        ping = DBusMessage.method_call(name, "/", PEER, "Ping", serial=1, flags=1)
        self.conn.send(name, wire.encode_gvariant(ping.replace(sender=unique_name(self.conn.id))),
                       flags=0, cookie=1, timeout_or_reply=0)
        return Answer("u", (START_SUCCESS,))


def _selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def driver_reply(call: DBusMessage, answer: Answer, serial: int) -> DBusMessage:
    reply = DBusMessage.method_return(call, answer.signature, answer.body, serial=serial)
    return reply.replace(sender=DRIVER)


def driver_error(call: DBusMessage, name: str, text: str, serial: int) -> DBusMessage:
    return DBusMessage.error(call, name, text, serial=serial).replace(sender=DRIVER)


