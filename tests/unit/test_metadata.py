"""How a receiver sees a sender's metadata through its namespaces (KDBUS-SPEC.md §8.4)."""

from __future__ import annotations

import struct

from helpers import connect, make_bus

from kdbusfs.abi import structs
from kdbusfs.abi.constants import Attach, Item
from kdbusfs.bus import metadata
from kdbusfs.bus.domain import Domain
from kdbusfs.bus.message import stage_user
from kdbusfs.bus.metadata import (
    DAEMON_VIEW,
    OVERFLOW_ID,
    UNKNOWN_NS,
    UNKNOWN_ROOT,
    UNKNOWN_USERNS,
    UNSET_ID,
    Creds,
    IdMap,
    Snapshot,
    UserNamespace,
    View,
    render,
)

LAST_CAP = 40
FULL = (1 << (LAST_CAP + 1)) - 1


def caps_bytes(inh: int, prm: int, eff: int, bnd: int) -> bytes:
    return struct.pack("<I", LAST_CAP) + b"".join(struct.pack("<II", v & 0xFFFFFFFF, v >> 32)
                                                  for v in (inh, prm, eff, bnd))


def sender(uid: int = 0, userns: tuple[int, ...] = (), pidns: tuple[int, ...] = (),
           ns_pids: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None,
           root: tuple[int, str] | None = (1, "/")) -> Snapshot:
    creds = Creds(100, 101, 99, uid, uid, uid, uid, uid, uid, uid, uid, groups=(uid, 5))
    return Snapshot(creds, tid_comm_="sender", exe_="/usr/bin/sender", caps_=caps_bytes(0, 0xF0, 0xF0, FULL),
                    audit_=(7, uid), userns_=UserNamespace(userns), pidns_=pidns, ns_pids_=ns_pids,
                    root_=root)


def items(data: bytes) -> dict[int, bytes]:
    found, pos = {}, 0
    while pos < len(data):
        size, kind = struct.unpack_from("<QQ", data, pos)
        found[kind] = data[pos + 16 : pos + size]
        pos += (size + 7) & ~7
    return found


ALL = Attach.CREDS | Attach.PIDS | Attach.AUXGROUPS | Attach.EXE | Attach.CAPS | Attach.AUDIT

# A receiver in a child user namespace (inode 50, created by uid 1000) mapping 0 -> 100000
# (65536 ids), and a child pid namespace (inode 60).
CHILD_USERNS = UserNamespace((50,), (1000,), IdMap(((0, 100000, 65536),)), IdMap(((0, 100000, 65536),)))
CHILD_VIEW = View(CHILD_USERNS, (60,), (1, "/"))


def test_the_daemons_namespaces_see_everything_as_it_is() -> None:
    got = items(render(sender(uid=1000), ALL, view=DAEMON_VIEW))
    assert structs.CREDS.unpack(got[Item.CREDS]).uid == 1000
    assert structs.PIDS.struct.unpack(got[Item.PIDS]) == (100, 101, 99)
    assert got[Item.CAPS] == caps_bytes(0, 0xF0, 0xF0, FULL)
    assert Item.EXE in got


def test_ids_are_mapped_into_the_receivers_user_namespace_or_overflow() -> None:
    inside = items(render(sender(uid=100005), ALL, view=CHILD_VIEW))
    assert set(structs.CREDS.struct.unpack(inside[Item.CREDS])) == {5}
    # Group 5 has no mapping there.
    assert struct.unpack("<QQ", inside[Item.AUXGROUPS]) == (5, OVERFLOW_ID)
    outside = items(render(sender(uid=0), ALL, view=CHILD_VIEW))
    assert set(structs.CREDS.struct.unpack(outside[Item.CREDS])) == {OVERFLOW_ID}
    # The login uid is unset rather than overflowed.
    assert structs.AUDIT.struct.unpack(outside[Item.AUDIT]) == (7, UNSET_ID)


def test_unset_ids_stay_unset_in_every_namespace() -> None:
    assert CHILD_USERNS.uid(UNSET_ID) == UNSET_ID
    assert CHILD_USERNS.gid(UNSET_ID) == UNSET_ID


def test_pids_of_tasks_outside_the_receivers_pid_namespace_are_zero() -> None:
    got = items(render(sender(), ALL, view=CHILD_VIEW))
    assert structs.PIDS.struct.unpack(got[Item.PIDS]) == (0, 0, 0)


def test_pids_inside_the_receivers_pid_namespace_are_translated() -> None:
    # The sender lives in the receiver's pid namespace; its parent is outside it.
    inside = sender(pidns=(60,), ns_pids=((100, 1), (101, 2), (99,)))
    got = items(render(inside, ALL, view=CHILD_VIEW))
    assert structs.PIDS.struct.unpack(got[Item.PIDS]) == (1, 2, 0)
    # A sibling pid namespace is not below the receiver's.
    sibling = sender(pidns=(61,), ns_pids=((100, 1), (101, 2), (99,)))
    assert structs.PIDS.struct.unpack(items(render(sibling, ALL, view=CHILD_VIEW))[Item.PIDS]) == (0, 0, 0)


def test_capabilities_follow_the_user_namespace_tree() -> None:
    # Sender in the receiver's own namespace: as they are.
    same = items(render(sender(userns=(50,)), ALL, view=CHILD_VIEW))
    assert same[Item.CAPS] == caps_bytes(0, 0xF0, 0xF0, FULL)
    # Sender above the receiver, but not the namespace's creator: as they are.
    above = items(render(sender(uid=0), ALL, view=CHILD_VIEW))
    assert above[Item.CAPS] == caps_bytes(0, 0xF0, 0xF0, FULL)
    # The creator of the receiver's namespace holds every capability in it.
    creator = items(render(sender(uid=1000), ALL, view=CHILD_VIEW))
    assert creator[Item.CAPS] == caps_bytes(0, FULL, FULL, FULL)
    # A sender below the receiver (or beside it) has none that count there.
    below = items(render(sender(userns=(50, 51)), ALL, view=DAEMON_VIEW))
    assert below[Item.CAPS] == caps_bytes(0, 0, 0, 0)


def test_exe_only_between_equal_roots() -> None:
    assert Item.EXE in items(render(sender(root=(1, "/")), ALL, view=CHILD_VIEW))
    assert Item.EXE not in items(render(sender(root=(2, "/")), ALL, view=CHILD_VIEW))
    assert Item.EXE not in items(render(sender(root=(1, "/srv/jail")), ALL, view=CHILD_VIEW))


def test_the_receiver_sees_only_tasks_in_or_below_its_pid_namespace() -> None:
    assert DAEMON_VIEW.sees(sender(pidns=(60,)))
    assert CHILD_VIEW.sees(sender(pidns=(60, 70)))
    assert not CHILD_VIEW.sees(sender())


def test_items_the_sender_did_not_offer_need_visibility_in_the_receivers_pid_namespace() -> None:
    bus = make_bus(Domain()).bus
    assert bus is not None
    shy = connect(bus, attach_send=0, attach_recv=0)
    receiver = connect(bus, attach_send=0, attach_recv=int(ALL | Attach.TID_COMM))
    data = structs.MSG.pack(structs.MSG.size, 0, 0, receiver.id, 0, 0xBB, 1, 0)
    msg = stage_user(data, 0, bus.bloom_size)
    conn = receiver.handle.conn
    assert conn is not None and shy.handle.conn is not None
    process = sender()
    # Same pid namespace: /proc would show it all, so all of it is attached.
    conn.view = View(root=process.root())
    shown = set(items(metadata.for_receiver(conn, msg, shy.handle.conn, process)))
    assert {Item.TID_COMM, Item.CAPS, Item.EXE} <= shown
    # Receiver in a pid namespace the sender is not in: only the implicit items.
    conn.view = View(pidns=(60,), root=process.root())
    got = set(items(metadata.for_receiver(conn, msg, shy.handle.conn, process)))
    assert {Item.CREDS, Item.PIDS, Item.AUXGROUPS} <= got
    assert not got & {Item.TID_COMM, Item.CAPS, Item.EXE, Item.AUDIT}


def test_seclabel_comes_between_caps_and_audit_and_may_be_faked() -> None:
    labelled = Snapshot(sender().creds_, caps_=caps_bytes(0, 0, 0, 0), audit_=(1, 2),
                        seclabel_="system_u:system_r:init_t:s0")
    data = render(labelled, Attach.CAPS | Attach.SECLABEL | Attach.AUDIT)
    order = list(items(data))
    assert order == [Item.CAPS, Item.SECLABEL, Item.AUDIT]
    assert items(data)[Item.SECLABEL] == b"system_u:system_r:init_t:s0\0"
    # Without a security module there is no label, and no item.
    assert Item.SECLABEL not in items(render(sender(), Attach.SECLABEL))
    # A faked identity states only creds, pids and the label.
    faked = Snapshot(sender().creds_, seclabel_="faked", faked=True, faked_items=(True, False))
    got = items(render(faked, ALL | Attach.SECLABEL, stated=faked.faked_items))
    assert list(got) == [Item.CREDS, Item.SECLABEL]


def test_a_task_gone_before_its_ids_were_read_shows_zero_pids() -> None:
    # Its pid namespace was read, its status no longer: ids at the receiver's depth are missing.
    gone = sender(pidns=(60,), ns_pids=((100,), (101,), ()))
    assert structs.PIDS.struct.unpack(items(render(gone, ALL, view=CHILD_VIEW))[Item.PIDS]) == (0, 0, 0)


def test_a_receiver_whose_namespaces_could_not_be_read_sees_nothing_of_others() -> None:
    unknown = View(UNKNOWN_USERNS, (UNKNOWN_NS,), UNKNOWN_ROOT)
    got = items(render(sender(uid=0, pidns=(UNKNOWN_NS,), ns_pids=((100, 1), (101, 1), (99, 1))),
                       ALL, view=unknown))
    assert set(structs.CREDS.struct.unpack(got[Item.CREDS])) == {OVERFLOW_ID}
    assert structs.PIDS.struct.unpack(got[Item.PIDS]) == (0, 0, 0)
    assert got[Item.CAPS] == caps_bytes(0, 0, 0, 0)
    assert Item.EXE not in got
    # A sender whose namespaces could not be read shows no capabilities either.
    assert items(render(sender(userns=(UNKNOWN_NS,)), ALL))[Item.CAPS] == caps_bytes(0, 0, 0, 0)


def test_bus_creator_info_is_translated_for_the_asking_connection() -> None:
    bus = make_bus(Domain()).bus
    assert bus is not None
    asking = connect(bus).handle.conn
    assert asking is not None
    bus.creator_attach = int(Attach.CREDS)
    asking.view = CHILD_VIEW
    record = asking.bus.creator_record(int(Attach.CREDS), asking.view)
    creds = items(record[structs.INFO.size:])[Item.CREDS]
    assert set(structs.CREDS.struct.unpack(creds)) == {OVERFLOW_ID}


def test_what_kdbus_era_sd_bus_asked_for_is_rendered_byte_for_byte() -> None:
    # TIMESTAMP|CREDS|PIDS|TID_COMM|PID_COMM|NAMES|CONN_DESCRIPTION, as benchmarks/calls.py
    # --metadata asks: fixed items packed whole, strings NUL-terminated and padded, kdbus's order.
    process = Snapshot(Creds(100, 101, 99, 1, 2, 3, 4, 5, 6, 7, 8), tid_comm_="thread", pid_comm_="leader!")
    mask = (Attach.TIMESTAMP | Attach.CREDS | Attach.PIDS | Attach.TID_COMM | Attach.PID_COMM | Attach.NAMES
            | Attach.CONN_DESCRIPTION)
    got = render(process, mask, [(1, "org.a"), (4, "org.kdbusfs.Bench")], "callee", (9, 10, 11))
    assert got == b"".join((
        struct.pack("<10Q", 16 + 64, Item.CREDS, 1, 2, 3, 4, 5, 6, 7, 8),
        struct.pack("<5Q", 16 + 24, Item.PIDS, 100, 101, 99),
        struct.pack("<QQ", 16 + 7, Item.TID_COMM), b"thread\0", b"\0",           # 23 bytes, padded to 24
        struct.pack("<QQ", 16 + 8, Item.PID_COMM), b"leader!\0",                 # 24: no padding
        struct.pack("<QQQ", 24 + 6, Item.OWNED_NAME, 1), b"org.a\0", b"\0\0",    # 30, padded to 32
        struct.pack("<QQQ", 24 + 18, Item.OWNED_NAME, 4), b"org.kdbusfs.Bench\0", b"\0" * 6,
        struct.pack("<QQ", 16 + 7, Item.CONN_DESCRIPTION), b"callee\0", b"\0",
        struct.pack("<5Q", 16 + 24, Item.TIMESTAMP, 9, 10, 11),
    ))
