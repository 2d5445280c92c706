"""PIN sign-in limits on the Gate itself (the API tests drive the same through HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.web.auth import LOCKOUT, MAX_FAILURES, Gate, LockedOut, Person
from drivers.clock import ManualClock

STAFF = (Person("小王", "cashier", "1234"), Person("李店长", "manager", "8888"))


def test_a_cashier_signing_in_between_guesses_still_runs_into_the_lockout() -> None:
    clock = ManualClock(datetime(2026, 11, 27, 14, 0, tzinfo=UTC))
    gate = Gate(clock, idle=3600, longest=7200)
    guesses = iter(f"{n:04d}" for n in range(10000) if f"{n:04d}" not in ("1234", "8888"))
    with pytest.raises(LockedOut):
        for _ in range(3 * MAX_FAILURES):
            assert gate.sign_in(next(guesses), STAFF, "10.0.0.7") is None
            assert gate.sign_in("1234", STAFF, "10.0.0.7") is not None   # their own PIN, right every time
    clock.advance(LOCKOUT + 1)
    assert gate.sign_in("1234", STAFF, "10.0.0.7") is not None
