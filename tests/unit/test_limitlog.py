"""Limit warnings: one line per burst of refusals, per user and limit."""

from __future__ import annotations

import errno

import pytest
from helpers import CREATOR, connect, make_bus, raises_errno, run

from kdbusfs.abi import structs
from kdbusfs.abi.constants import Cmd
from kdbusfs.bus.domain import Domain, DomainLimits
from kdbusfs.errors import LimitReached, user_named
from kdbusfs.limitlog import LimitLog
from kdbusfs.limits import CONN_MAX_MSGS


def reached(uid: int | None = 1000, limit: str = "connections per user") -> LimitReached:
    return LimitReached(errno.EMFILE, "too many", limit, 3, "raise it with max_connections=N",
                        user_named(uid))


def test_the_first_refusal_is_told_with_the_user_the_limit_its_value_and_the_remedy() -> None:
    lines = LimitLog(quiet_s=10, repeat_s=60).hit(reached(), now=0.0)
    assert lines == ["user 1000 reached the limit on connections per user (3): too many; "
                     "raise it with max_connections=N"]


def test_a_burst_makes_one_line_and_a_pause_starts_a_new_burst() -> None:
    log = LimitLog(quiet_s=10, repeat_s=60)
    assert log.hit(reached(), 0.0)
    assert [log.hit(reached(), t) for t in (1.0, 5.0, 14.0, 23.9)] == [[]] * 4
    assert log.hit(reached(), 34.0)  # 10 s without a refusal: a new burst


def test_a_long_burst_is_recalled_once_a_minute_with_its_count() -> None:
    log = LimitLog(quiet_s=10, repeat_s=60)
    log.hit(reached(), 0.0)
    told = [line for t in range(1, 121) for line in log.hit(reached(), float(t))]
    assert len(told) == 2
    assert "still at the limit" in told[0] and "60 more refusals in 60 s" in told[0]


def test_users_and_limits_have_bursts_of_their_own() -> None:
    log = LimitLog(quiet_s=10, repeat_s=60)
    assert log.hit(reached(1000), 0.0)
    assert log.hit(reached(1001), 0.5)
    assert log.hit(reached(1000, "buses per user"), 1.0)
    assert log.hit(reached(None), 1.5)
    assert "anonymous users" in LimitLog().hit(reached(None), 0.0)[0]


def test_many_users_share_one_budget_and_what_it_held_back_is_counted() -> None:
    log = LimitLog(quiet_s=10, repeat_s=60, lines_per_window=3, window_s=60)
    told = [line for uid in range(100) for line in log.hit(reached(uid), uid * 0.1)]
    assert len(told) == 3
    later = log.hit(reached(5000), 61.0)
    assert later[0] == "97 more limit warnings (97 users) were not logged in the last 61 s"
    assert later[1].startswith("user 5000 reached the limit")


def test_ended_bursts_are_forgotten() -> None:
    log = LimitLog(quiet_s=10, repeat_s=60)
    for uid in range(1000):
        log.hit(reached(uid), 0.0)
    log.hit(reached(0), 20.0)
    assert len(log._bursts) == 1


def test_the_connection_limit_names_its_mount_option() -> None:
    domain = Domain(limits=DomainLimits(max_connections=1))
    bus = make_bus(domain).bus
    assert bus is not None
    connect(bus)
    with raises_errno(errno.EMFILE) as info:
        connect(bus)
    exc = info.value
    assert isinstance(exc, LimitReached)
    assert (exc.user, exc.limit, exc.value) == (f"user {CREATOR.uid}", "connections per user", 1)
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
    assert (exc.user, exc.value) == (f"user {CREATOR.uid}", CONN_MAX_MSGS)
    assert exc.limit == "queued messages per receiver and sending user"
