"""Mount options of the kdbusfs command (kdbusfs(1)) that no other test covers."""

from __future__ import annotations

import pytest

from kdbusfs.cli import UsageError, parse_options
from kdbusfs.limits import SPIN_BEFORE_SLEEP_US


def test_spin_us_sets_how_long_the_daemon_looks_for_requests_before_it_sleeps() -> None:
    assert parse_options([], as_root=True).spin_us == SPIN_BEFORE_SLEEP_US
    assert parse_options(["nosuid,spin_us=0"], as_root=True).spin_us == 0
    assert parse_options(["spin_us=200"], as_root=False).spin_us == 200
    with pytest.raises(UsageError, match="needs a number"):
        parse_options(["spin_us=fast"], as_root=True)
    with pytest.raises(UsageError, match="at least 0"):
        parse_options(["spin_us=-1"], as_root=True)
