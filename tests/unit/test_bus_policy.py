"""Policy: who may own which names, talk to whom and see what, on the default endpoint (bus
policy, set by policy holders and activators) and on custom endpoints (their own policy)
(KDBUS-SPEC.md §9, §2.4-2.5, §3.6)."""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest
from bus_helpers import (
    ANY_SIGNAL,
    SERVICE,
    EndpointOwner,
    access_item,
    acquire,
    activator,
    add_match,
    broadcast,
    call,
    conn_info,
    conn_of,
    connect_on,
    drain,
    from_connections,
    id_rule,
    list_bus,
    make_endpoint,
    name_rule,
    notifications,
    policy_holder,
    policy_items,
    send,
    send_to_name,
)
from helpers import CREATOR, STRANGER, Conn, FakeCaller, cmd_bytes, connect, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import (
    HELLO_ACTIVATOR,
    HELLO_POLICY_HOLDER,
    LIST_NAMES,
    LIST_UNIQUE,
    NAME_ACQUIRED,
    NAME_PRIMARY,
    POLICY_ACCESS_GROUP,
    POLICY_ACCESS_USER,
    POLICY_ACCESS_WORLD,
    POLICY_OWN,
    POLICY_SEE,
    POLICY_TALK,
    Cmd,
    Item,
)
from kdbusfs.abi.items import item, string_item
from kdbusfs.bus.bus import Bus
from kdbusfs.bus.metadata import Creds
from kdbusfs.bus.policy import NO_ACCESS, PolicyDb, parse_upload
from kdbusfs.handle import Handle

USER, GROUP, WORLD = POLICY_ACCESS_USER, POLICY_ACCESS_GROUP, POLICY_ACCESS_WORLD
SEE, TALK, OWN = POLICY_SEE, POLICY_TALK, POLICY_OWN
# Another user, in group 2000 by its egid and in group 3000 as a supplementary group.
MEMBER = replace(Creds.for_ids(1002, 2000, 4444), groups=(3000,))



def update_policy(holder: Conn, items: bytes) -> None:
    run(holder.handle, holder.caller, Cmd.UPDATE, cmd_bytes(structs.CMD, items))


# -- the default: secure (§9.4) -----------------------------------------------------------------

def test_by_default_only_the_bus_owner_owns_names(bus: Bus) -> None:
    stranger = connect(bus, STRANGER)
    with raises_errno(errno.EPERM):
        acquire(stranger)
    assert acquire(connect(bus)) == NAME_PRIMARY | NAME_ACQUIRED


def test_by_default_users_talk_to_their_own_connections_and_owners_to_everyone(bus: Bus) -> None:
    stranger, other_stranger_conn = connect(bus, STRANGER), connect(bus, STRANGER)
    owners = connect(bus)
    send(stranger, other_stranger_conn.id, cookie=1)
    with raises_errno(errno.EPERM):
        send(stranger, owners.id)
    send(owners, stranger.id, cookie=2)
    assert [m.header.cookie for m in drain(other_stranger_conn)] == [1]
    assert [m.header.cookie for m in drain(stranger)] == [2]


def test_own_is_checked_before_the_name_is_looked_up(bus: Bus) -> None:
    acquire(connect(bus))
    # EPERM, not EEXIST: a refused name does not reveal that it exists.
    with raises_errno(errno.EPERM):
        acquire(connect(bus, STRANGER))


# -- policy holders (§9.1, §9.2, §2.7) ----------------------------------------------------------

@pytest.mark.parametrize(("access", "creds"), [
    (access_item(USER, OWN, 1001), STRANGER),
    (access_item(GROUP, OWN, 2000), MEMBER),  # by egid
    (access_item(GROUP, OWN, 3000), MEMBER),  # by a supplementary group
    (access_item(WORLD, OWN), STRANGER),
], ids=["user", "group-egid", "group-supplementary", "world"])
def test_a_policy_holder_grants_own(bus: Bus, access: bytes, creds: Creds) -> None:
    policy_holder(bus, SERVICE, access)
    assert acquire(connect(bus, creds)) == NAME_PRIMARY | NAME_ACQUIRED


def test_the_highest_applying_record_counts_wherever_it_is(bus: Bus) -> None:
    policy_holder(bus, SERVICE, access_item(USER, SEE, 1001), access_item(WORLD, SEE),
                  access_item(USER, OWN, 1001), access_item(GROUP, TALK, 1001), access_item(USER, OWN, 7))
    acquire(connect(bus, STRANGER))
    with raises_errno(errno.EPERM):
        acquire(connect(bus, MEMBER), SERVICE)


def test_records_for_other_users_and_lower_levels_grant_nothing(bus: Bus) -> None:
    policy_holder(bus, SERVICE, access_item(USER, OWN, 1002), access_item(WORLD, TALK),
                  access_item(GROUP, OWN, 1002))
    with raises_errno(errno.EPERM):
        acquire(connect(bus, STRANGER))


def test_talk_goes_by_the_names_the_destination_owns_as_primary(bus: Bus) -> None:
    policy_holder(bus, SERVICE, access_item(WORLD, TALK))
    owner, waiter = connect(bus), connect(bus)
    stranger = connect(bus, STRANGER)
    acquire(owner)
    acquire(waiter, flags=4)  # queued: not owned
    call(stranger, owner.id, cookie=1)
    send_to_name(stranger, SERVICE, cookie=2)
    with raises_errno(errno.EPERM):
        send(stranger, waiter.id)
    assert [m.header.cookie for m in drain(owner)] == [1, 2]


def test_a_wildcard_entry_covers_names_one_element_longer(bus: Bus) -> None:
    policy_holder(bus, "org.example.*", access_item(WORLD, OWN))
    stranger = connect(bus, STRANGER)
    acquire(stranger, "org.example.foo")
    with raises_errno(errno.EPERM):
        acquire(stranger, "org.example.foo.bar")
    with raises_errno(errno.EPERM):
        acquire(stranger, "org.other")


def test_an_exact_entry_wins_over_a_wildcard(bus: Bus) -> None:
    policy_holder(bus, "org.example.*", access_item(WORLD, OWN))
    policy_holder(bus, "org.example.closed")  # no records: deny
    stranger = connect(bus, STRANGER)
    with raises_errno(errno.EPERM):
        acquire(stranger, "org.example.closed")


def test_a_holder_replaces_its_policy_and_it_goes_with_the_holder(bus: Bus) -> None:
    holder = policy_holder(bus, SERVICE, access_item(USER, OWN, 1001))
    stranger = connect(bus, STRANGER)
    update_policy(holder, policy_items("org.example.other", access_item(USER, OWN, 1001)))
    with raises_errno(errno.EPERM):
        acquire(stranger, SERVICE)
    acquire(stranger, "org.example.other")
    conn_of(holder).disconnect()
    assert bus.policy.entries == {}
    # What was acquired stays acquired; new acquisitions need the policy.
    with raises_errno(errno.EPERM):
        acquire(connect(bus, STRANGER), "org.example.third")
    assert [r.name for r in list_bus(stranger, LIST_NAMES)] == ["org.example.other"]


def test_a_holder_holds_one_name_and_none_held_by_another(bus: Bus) -> None:
    first = policy_holder(bus, SERVICE, access_item(WORLD, OWN))
    second = policy_holder(bus, "org.example.second")
    with raises_errno(errno.E2BIG):
        update_policy(first, policy_items("org.example.a") + policy_items("org.example.b"))
    with raises_errno(errno.EEXIST):
        update_policy(second, policy_items(SERVICE))
    # A refused update changes nothing.
    assert bus.policy.owners == {SERVICE: conn_of(first), "org.example.second": conn_of(second)}
    with raises_errno(errno.EEXIST):
        policy_holder(bus, SERVICE)


def test_a_holder_name_must_be_a_valid_name_or_wildcard(bus: Bus) -> None:
    with raises_errno(errno.EINVAL):
        policy_holder(bus, "no-dots")


def test_an_activator_puts_up_policy_for_its_name(bus: Bus) -> None:
    activator(bus, SERVICE, access_item(WORLD, TALK))
    stranger = connect(bus, STRANGER)
    send_to_name(stranger, SERVICE, cookie=1)
    # With no records an activator still claims the name's policy: deny, and no holder may add any.
    activator(bus, "org.example.closed")
    with raises_errno(errno.EEXIST):
        policy_holder(bus, "org.example.closed", access_item(WORLD, OWN))
    with raises_errno(errno.EPERM):
        send_to_name(stranger, "org.example.closed")


def test_special_connections_need_owner_rights(bus: Bus) -> None:
    for flags in (HELLO_ACTIVATOR, HELLO_POLICY_HOLDER):
        with raises_errno(errno.EPERM):
            connect_on(bus.default_endpoint, STRANGER, flags=flags, items=string_item(Item.NAME, SERVICE))


def test_a_policy_holder_only_holds_policy(bus: Bus) -> None:
    holder = policy_holder(bus, SERVICE)
    for cmd, data in ((Cmd.RECV, cmd_bytes(structs.CMD_RECV)), (Cmd.SEND, cmd_bytes(structs.CMD_SEND)),
                      (Cmd.BYEBYE, cmd_bytes(structs.CMD)), (Cmd.MATCH_ADD, cmd_bytes(structs.CMD_MATCH))):
        with raises_errno(errno.EOPNOTSUPP):
            run(holder.handle, holder.caller, cmd, data)
    with raises_errno(errno.EOPNOTSUPP):
        update_policy(holder, item(Item.ATTACH_FLAGS_RECV, bytes(8)))


@pytest.mark.parametrize(("items", "expected"), [
    (access_item(WORLD, OWN) + string_item(Item.NAME, SERVICE), errno.EINVAL),
    (policy_items(SERVICE) + policy_items(SERVICE), errno.EEXIST),
    (policy_items(SERVICE, access_item(0, OWN)), errno.EINVAL),
    (policy_items(SERVICE, access_item(4, OWN)), errno.EINVAL),
    (policy_items(SERVICE, access_item(WORLD, 3)), errno.EINVAL),
    (policy_items("no-dots"), errno.EINVAL),
], ids=["access-before-name", "name-twice", "type-0", "type-4", "level-3", "bad-name"])
def test_malformed_policy_uploads_are_refused(bus: Bus, items: bytes, expected: int) -> None:
    owner = make_endpoint(bus)
    owner.update(policy_items("org.example.kept", access_item(WORLD, SEE)))
    with raises_errno(expected):
        owner.update(items)
    assert owner.endpoint.policy is not None and list(owner.endpoint.policy.entries) == ["org.example.kept"]


def test_a_policy_database_answers_queries() -> None:
    db = PolicyDb()
    upload = parse_upload([], allow_wildcards=False)
    db.replace("holder", upload)
    assert db.query(STRANGER, SERVICE) == NO_ACCESS
    db.replace("holder", {SERVICE: ()})
    assert db.query(STRANGER, SERVICE) == NO_ACCESS
    db.remove_owner("holder")
    assert db.entries == {} and db.owners == {}


# -- custom endpoints (§2.4, §2.5, §9.3) --------------------------------------------------------

@pytest.fixture
def endpoint(bus: Bus) -> EndpointOwner:
    return make_endpoint(bus)


def test_a_custom_endpoint_is_made_by_the_bus_owner_on_the_default_endpoint(bus: Bus,
                                                                          endpoint: EndpointOwner) -> None:
    made = endpoint.endpoint
    assert (made.name, made.uid, made.is_default) == ("1000-custom", 1000, False)
    assert bus.endpoints["1000-custom"] is made
    stranger = Handle(bus.default_endpoint, STRANGER)
    with raises_errno(errno.EPERM):
        run(stranger, FakeCaller(STRANGER), Cmd.ENDPOINT_MAKE,
            cmd_bytes(structs.CMD, string_item(Item.MAKE_NAME, "1001-mine")))
    on_custom = Handle(made, CREATOR)
    with raises_errno(errno.EPERM):
        run(on_custom, FakeCaller(), Cmd.ENDPOINT_MAKE,
            cmd_bytes(structs.CMD, string_item(Item.MAKE_NAME, "1000-nested")))
    with raises_errno(errno.EEXIST):
        make_endpoint(bus)
    with raises_errno(errno.EINVAL):
        make_endpoint(bus, "1001-custom")


def test_on_an_empty_custom_endpoint_nobody_is_owner_and_nothing_is_allowed(
        bus: Bus, endpoint: EndpointOwner) -> None:
    service = connect(bus)
    acquire(service)
    # Even the bus creator, through a custom endpoint.
    guest = connect_on(endpoint.endpoint)
    assert not conn_of(guest).owner
    with raises_errno(errno.EPERM):
        send(guest, service.id)
    with raises_errno(errno.EPERM):
        acquire(guest, "org.example.guest")
    with raises_errno(errno.ENXIO):
        conn_info(guest, service.id)
    with raises_errno(errno.ESRCH):
        conn_info(guest, name=SERVICE)


def test_see_shows_a_name_but_talking_needs_talk(bus: Bus, endpoint: EndpointOwner) -> None:
    service = connect(bus)
    acquire(service)
    acquire(service, "org.example.hidden")
    endpoint.update(policy_items(SERVICE, access_item(WORLD, SEE)))
    guest = connect_on(endpoint.endpoint)
    assert conn_info(guest, name=SERVICE).id == service.id
    assert conn_info(guest, service.id).id == service.id
    # Name records the guest may not see are left out; bare ids are not filtered.
    listed = list_bus(guest, LIST_UNIQUE | LIST_NAMES)
    assert [(r.id, r.name) for r in listed] == [(service.id, SERVICE), (guest.id, None)]
    with raises_errno(errno.EPERM):
        send_to_name(guest, SERVICE)
    endpoint.update(policy_items(SERVICE, access_item(WORLD, TALK)))
    send_to_name(guest, SERVICE, cookie=1)
    assert [m.header.cookie for m in drain(service)] == [1]


def test_own_on_a_custom_endpoint_needs_the_endpoint_and_the_bus_policy(
        bus: Bus, endpoint: EndpointOwner) -> None:
    endpoint.update(policy_items(SERVICE, access_item(USER, OWN, 1000)))
    guest = connect_on(endpoint.endpoint)
    with raises_errno(errno.EPERM):
        acquire(guest)  # the bus creator is no owner here: the bus policy applies too
    policy_holder(bus, SERVICE, access_item(USER, OWN, 1000))
    assert acquire(guest) == NAME_PRIMARY | NAME_ACQUIRED


def test_name_notifications_are_filtered_by_see_id_notifications_are_not(
        bus: Bus, endpoint: EndpointOwner) -> None:
    endpoint.update(policy_items(SERVICE, access_item(WORLD, SEE)))
    guest = connect_on(endpoint.endpoint)
    add_match(guest, name_rule(Item.NAME_ADD), cookie=1)
    add_match(guest, id_rule(Item.ID_ADD), cookie=2)
    service = connect(bus)
    acquire(service, "org.example.hidden")
    acquire(service)
    assert [kind for kind, _ in notifications(guest)] == [Item.ID_ADD, Item.NAME_ADD]


def test_broadcasts_reach_a_custom_endpoint_only_from_peers_it_may_talk_to(
        bus: Bus, endpoint: EndpointOwner) -> None:
    endpoint.update(policy_items(SERVICE, access_item(WORLD, TALK)))
    guest = connect_on(endpoint.endpoint)
    add_match(guest, ANY_SIGNAL)
    service, anonymous = connect(bus), connect(bus)
    acquire(service)
    broadcast(service, cookie=1)
    broadcast(anonymous, cookie=2)
    assert [m.header.cookie for m in from_connections(guest)] == [1]


def test_custom_endpoint_connections_share_one_anonymous_account(bus: Bus, endpoint: EndpointOwner) -> None:
    user = endpoint.endpoint.user
    assert user is not None and user.uid is None
    connect_on(endpoint.endpoint)
    connect_on(endpoint.endpoint, STRANGER)
    assert user.connections == 2
    assert bus.domain.user(1000).connections == 0


def test_special_connections_are_refused_on_custom_endpoints(endpoint: EndpointOwner) -> None:
    with raises_errno(errno.EPERM):
        connect_on(endpoint.endpoint, flags=HELLO_POLICY_HOLDER, items=string_item(Item.NAME, SERVICE))


def test_closing_the_endpoint_owner_removes_the_endpoint_and_its_connections(
        bus: Bus, endpoint: EndpointOwner) -> None:
    guest = connect_on(endpoint.endpoint)
    regular = connect(bus)
    endpoint.handle.release()
    assert "1000-custom" not in bus.endpoints
    assert not conn_of(guest).active and conn_of(regular).active
    with raises_errno(errno.ECONNRESET):
        run(guest.handle, guest.caller, Cmd.RECV, cmd_bytes(structs.CMD_RECV))
    with raises_errno(errno.ESHUTDOWN):
        connect_on(endpoint.endpoint)


def test_a_gone_endpoint_takes_no_policy(bus: Bus, endpoint: EndpointOwner) -> None:
    bus.shutdown()
    with raises_errno(errno.ESHUTDOWN):
        endpoint.update(policy_items(SERVICE))
    with raises_errno(errno.ESHUTDOWN):
        bus.make_endpoint("1000-late", CREATOR, 0)
