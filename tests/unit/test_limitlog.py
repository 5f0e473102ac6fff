"""Limit warnings: one line per burst of refusals, per user and limit."""

from __future__ import annotations

import errno

import pytest
from helpers import CREATOR, connect, make_bus, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import Cmd
from kdbusfs.bus.domain import Domain, DomainLimits
from kdbusfs.bus.errors import LimitReached
from kdbusfs.bus.limits import CONN_MAX_MSGS
from kdbusfs.limitlog import LimitLog


def reached(uid: int | None = 1000, limit: str = "connections per user") -> LimitReached:
    return LimitReached(errno.EMFILE, "too many", limit, 3, "raise it with max_connections=N", uid)


def test_the_first_refusal_is_told_with_the_user_the_limit_its_value_and_the_remedy() -> None:
    line = LimitLog(quiet_s=10, repeat_s=60).hit(reached(), now=0.0)
    assert line == ("user 1000 reached the limit on connections per user (3): too many; "
                    "raise it with max_connections=N")


def test_a_burst_makes_one_line_and_a_pause_starts_a_new_burst() -> None:
    log = LimitLog(quiet_s=10, repeat_s=60)
    assert log.hit(reached(), 0.0) is not None
    assert [log.hit(reached(), t) for t in (1.0, 5.0, 14.0, 23.9)] == [None] * 4
    assert log.hit(reached(), 34.0) is not None  # 10 s without a refusal: a new burst


def test_a_long_burst_is_recalled_once_a_minute_with_its_count() -> None:
    log = LimitLog(quiet_s=10, repeat_s=60)
    log.hit(reached(), 0.0)
    lines = [log.hit(reached(), float(t)) for t in range(1, 121)]
    told = [line for line in lines if line is not None]
    assert len(told) == 2
    assert "still at the limit" in told[0] and "60 more refusals in 60 s" in told[0]


def test_users_and_limits_have_bursts_of_their_own() -> None:
    log = LimitLog(quiet_s=10, repeat_s=60)
    assert log.hit(reached(1000), 0.0) is not None
    assert log.hit(reached(1001), 0.5) is not None
    assert log.hit(reached(1000, "buses per user"), 1.0) is not None
    assert log.hit(reached(None), 1.5) is not None
    assert "anonymous users" in (LimitLog().hit(reached(None), 0.0) or "")


def test_the_connection_limit_names_its_mount_option() -> None:
    domain = Domain(limits=DomainLimits(max_connections=1))
    bus = make_bus(domain).bus
    assert bus is not None
    connect(bus)
    with raises_errno(errno.EMFILE) as info:
        connect(bus)
    exc = info.value
    assert isinstance(exc, LimitReached)
    assert (exc.uid, exc.limit, exc.value) == (CREATOR.uid, "connections per user", 1)
    assert "max_connections" in exc.raised_by


@pytest.mark.parametrize("max_buses", [1, 2])
def test_the_bus_limit_names_its_mount_option(max_buses: int) -> None:
    domain = Domain(limits=DomainLimits(max_buses=max_buses))
    names = [f"{CREATOR.euid}-b{i}" for i in range(max_buses + 1)]
    for name in names[:-1]:
        make_bus(domain, name=name)
    with raises_errno(errno.EMFILE) as info:
        make_bus(domain, name=names[-1])
    assert isinstance(info.value, LimitReached)
    assert (info.value.limit, info.value.value) == ("buses per user", max_buses)
    assert "max_buses" in info.value.raised_by


def test_a_full_message_quota_is_a_limit_of_the_sending_user() -> None:
    domain = Domain()
    bus = make_bus(domain).bus
    assert bus is not None
    receiver, sender = connect(bus, pool_size=1 << 20), connect(bus)
    msg = structs.MSG.pack(structs.MSG.size, 0, 0, receiver.id, 0, 0xBB, 1, 0)
    address = sender.caller.place(msg, 0x1000)
    send = structs.CMD_SEND.pack(structs.CMD_SEND.size, 0, 0, address, 0, 0, 0)
    for _ in range(CONN_MAX_MSGS):
        run(sender.handle, sender.caller, Cmd.SEND, send)
    with raises_errno(errno.ENOBUFS) as info:
        run(sender.handle, sender.caller, Cmd.SEND, send)
    exc = info.value
    assert isinstance(exc, LimitReached)
    assert (exc.uid, exc.value) == (CREATOR.uid, CONN_MAX_MSGS)
    assert exc.limit == "queued messages per receiver and sending user"
