"""The bus driver as a classic client sees it, where it must answer as dbus-daemon answers: the
order of ListQueuedOwners, the errors for unknown interfaces, org.freedesktop.DBus.Properties and
the methods dbus-daemon has for configuration and security modules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from xml.etree import ElementTree

import pytest
from test_classic_endpoint import DRIVER, Loop, Peer, _client_of, setup

from kdbusfs.bus.domain import Domain
from kdbusfs.classic import driver
from kdbusfs.classic.driver import METHODS
from kdbusfs.classic.endpoint import ClassicEndpoint
from kdbusfs.classic.listening import listen
from kdbusfs.client.info import ConnectionInfo
from kdbusfs.dbus import DBusMessage, MessageType, Variant
from kdbusfs.fs import Filesystem

__all__ = ["setup"]

PEER = "org.freedesktop.DBus.Peer"
PROPERTIES = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
NAME_HAS_NO_OWNER = "org.freedesktop.DBus.Error.NameHasNoOwner"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"


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


def _error_of(reply: DBusMessage) -> tuple[str | None, str]:
    return reply.error_name, reply.body[0] if reply.body else ""


def test_an_interface_the_driver_does_not_serve_is_unknown_interface(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    assert _error_of(peer.call(DRIVER, "GetId", interface="org.example.Nope")) == (
        UNKNOWN_INTERFACE, "org.freedesktop.DBus does not understand message GetId")
    assert _error_of(peer.call(DRIVER, "Nope")) == (
        UNKNOWN_METHOD, "org.freedesktop.DBus does not understand message Nope")
    assert peer.call(DRIVER, "Nope", interface=None).error_name == UNKNOWN_METHOD
    assert peer.call(DRIVER, "Nope", interface=PEER).error_name == UNKNOWN_METHOD
    # Properties and Monitoring live on the driver's own path; the rest on any path.
    assert peer.call(DRIVER, "GetId", path="/elsewhere").type == MessageType.METHOD_RETURN
    assert peer.call(DRIVER, "Get", "ss", (DRIVER, "Features"), interface=PROPERTIES,
                     path="/elsewhere").error_name == UNKNOWN_INTERFACE
    assert peer.call(DRIVER, "Get", "ss", (DRIVER, "Features"), interface=None,
                     path="/elsewhere").error_name == UNKNOWN_METHOD
    assert peer.call(DRIVER, "BecomeMonitor", "asu", ([], 0), interface="org.freedesktop.DBus.Monitoring",
                     path="/elsewhere").error_name == UNKNOWN_INTERFACE


def test_the_driver_s_properties(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()

    def properties(member: str, signature: str, *body: object) -> DBusMessage:
        return peer.call(DRIVER, member, signature, body, interface=PROPERTIES)

    assert properties("Get", "ss", DRIVER, "Features").body == (Variant("as", ["HeaderFiltering"]),)
    assert properties("Get", "ss", DRIVER, "Interfaces").body == (
        Variant("as", ["org.freedesktop.DBus.Monitoring"]),)
    without_interface = peer.call(DRIVER, "Get", "ss", (DRIVER, "Features"), interface=None)
    assert without_interface.type == MessageType.METHOD_RETURN
    assert properties("GetAll", "s", DRIVER).body == ({
        "Features": Variant("as", ["HeaderFiltering"]),
        "Interfaces": Variant("as", ["org.freedesktop.DBus.Monitoring"])},)
    assert properties("GetAll", "s", PEER).body == ({},)
    assert _error_of(properties("Get", "ss", DRIVER, "Nope")) == (
        "org.freedesktop.DBus.Error.UnknownProperty", 'Property "org.freedesktop.DBus.Nope" not found')
    assert _error_of(properties("Get", "ss", PEER, "Nope")) == (
        "org.freedesktop.DBus.Error.UnknownProperty", 'Property "org.freedesktop.DBus.Peer.Nope" not found')
    for interface in ("org.example.X", ""):
        for member, signature, body in (("Get", "ss", (interface, "Features")), ("GetAll", "s", (interface,)),
                                        ("Set", "ssv", (interface, "Features", Variant("as", [])))):
            assert _error_of(properties(member, signature, *body)) == (
                UNKNOWN_INTERFACE, f'Interface "{interface}" not found')
    assert _error_of(properties("Set", "ssv", DRIVER, "Features", Variant("as", []))) == (
        "org.freedesktop.DBus.Error.PropertyReadOnly",
        "Property 'org.freedesktop.DBus.Features' cannot be set")
    assert _error_of(properties("Set", "ssv", DRIVER, "Nope", Variant("s", ""))) == (
        "org.freedesktop.DBus.Error.UnknownProperty", 'Property "org.freedesktop.DBus.Nope" not found')
    assert _error_of(properties("Get", "s", "x")) == (
        "org.freedesktop.DBus.Error.InvalidArgs", "Call to Get has wrong args (s, expected ss)\n")


def test_introspection_lists_what_is_served(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()

    def introspect(at: str) -> ElementTree.Element:
        xml = peer.call(DRIVER, "Introspect", interface=INTROSPECTABLE, path=at).body[0]
        return ElementTree.fromstring(xml)

    root = introspect("/org/freedesktop/DBus")
    methods = {(interface.get("name"), method.get("name")) for interface in root.iter("interface")
               for method in interface.iter("method")}
    assert methods == set(METHODS)
    # Every method listed is answered (none is UnknownMethod or UnknownInterface).
    for interface, member in methods - {("org.freedesktop.DBus.Monitoring", "BecomeMonitor"),
                                        ("org.freedesktop.DBus", "Hello")}:
        in_signature = METHODS[(interface or "", member or "")][0]
        arguments = (DRIVER,) if member == "GetAll" else _sample_arguments(in_signature, peer.name)
        reply = peer.call(DRIVER, member or "", in_signature, arguments, interface=interface)
        assert reply.error_name not in (UNKNOWN_METHOD, UNKNOWN_INTERFACE), (interface, member, reply.body)
    bus_driver = next(i for i in root.iter("interface") if i.get("name") == DRIVER)
    assert {(p.get("name"), p.get("type"), p.get("access")) for p in bus_driver.iter("property")} == {
        ("Features", "as", "read"), ("Interfaces", "as", "read")}
    signals = {s.get("name") for s in bus_driver.iter("signal")}
    assert signals == {"NameOwnerChanged", "NameLost", "NameAcquired"}
    elsewhere = introspect("/elsewhere")
    assert [i.get("name") for i in elsewhere.iter("interface")] == [DRIVER, INTROSPECTABLE, PEER]
    assert [n.get("name") for n in introspect("/").iter("node") if n.get("name")] == ["org/freedesktop/DBus"]


def _sample_arguments(signature: str, me: str) -> tuple[object, ...]:
    samples = {"": (), "s": (me,), "su": ("org.example.Sample", 0), "ss": (DRIVER, "Features"),
               "ssv": (DRIVER, "Features", Variant("as", [])), "a{ss}": ({},)}
    return samples[signature]


def test_security_module_and_audit_queries_answer_as_without_selinux_or_adt(
        setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    _, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    for name in (peer.name, DRIVER):
        assert _error_of(peer.call(DRIVER, "GetAdtAuditSessionData", "s", (name,))) == (
            "org.freedesktop.DBus.Error.AdtAuditDataUnknown",
            f"Could not determine audit session data for '{name}'")
        assert _error_of(peer.call(DRIVER, "GetConnectionSELinuxSecurityContext", "s", (name,))) == (
            "org.freedesktop.DBus.Error.SELinuxSecurityContextUnknown",
            f"Could not determine security context for '{name}'")
    for name in (":1.999", "not a name"):
        assert _error_of(peer.call(DRIVER, "GetAdtAuditSessionData", "s", (name,))) == (
            NAME_HAS_NO_OWNER, f"Could not get audit session data of name '{name}': no such name")
        assert _error_of(peer.call(DRIVER, "GetConnectionSELinuxSecurityContext", "s", (name,))) == (
            NAME_HAS_NO_OWNER, f"Could not get security context of name '{name}': no such name")


def test_the_selinux_context_is_the_connection_s_label_where_selinux_is_on(
        setup: tuple[ClassicEndpoint, Loop, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    monkeypatch.setattr(driver, "_selinux_enabled", lambda: True)
    conn = _client_of(endpoint, peer).conn
    assert conn is not None
    real_info = conn.conn_info

    def labelled(target: int | str, attach: int) -> ConnectionInfo:
        info = real_info(target, attach)
        return dataclasses.replace(info, metadata=dataclasses.replace(
            info.metadata, seclabel="system_u:system_r:example_t:s0"))

    monkeypatch.setattr(conn, "conn_info", labelled)
    reply = peer.call(DRIVER, "GetConnectionSELinuxSecurityContext", "s", (peer.name,))
    assert reply.body == (b"system_u:system_r:example_t:s0",)


def test_configuration_methods_on_a_session_like_bus(setup: tuple[ClassicEndpoint, Loop, Path]) -> None:
    endpoint, loop, path = setup
    peer = Peer(path, loop)
    peer.authenticate()
    assert peer.call(DRIVER, "ReloadConfig").type == MessageType.METHOD_RETURN
    update = ("UpdateActivationEnvironment", "a{ss}", ({"FOO": "bar"},))
    assert peer.call(DRIVER, *update).type == MessageType.METHOD_RETURN
    client = _client_of(endpoint, peer)
    assert client.conn is not None
    client.conn.caller.uid = 4242  # another user than the bus's owner
    refused = peer.call(DRIVER, *update)
    assert refused.error_name == ACCESS_DENIED


def test_configuration_methods_on_a_system_bus(tmp_path: Path) -> None:
    served = Filesystem(Domain())
    loop = Loop()
    path = tmp_path / "system_bus_socket"
    endpoint = ClassicEndpoint(served, listen(str(path), 0o600), str(path), "system")
    endpoint.attach(loop)
    try:
        peer = Peer(path, loop)
        peer.authenticate()
        assert _error_of(peer.call(DRIVER, "UpdateActivationEnvironment", "a{ss}", ({"FOO": "bar"},))) == (
            ACCESS_DENIED, "Cannot change activation environment on a system bus.")
        assert peer.call(DRIVER, "ReloadConfig").type == MessageType.METHOD_RETURN
    finally:
        endpoint.close()
        served.shutdown()
