"""Billing period arithmetic: anchored boundaries, month-end clamping, stubs, slots and proration."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tallystick.server.billing.periods import (
    Schedule,
    anchored,
    prorate_credits,
    prorate_minor_units,
    whole_days,
)


def at(year: int, month: int, day: int, hour: int = 9, minute: int = 30) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# (start, period months, the starts of periods 1 to 6)
CLAMPING_TABLE = [
    (at(2026, 1, 31), 1, [at(2026, 1, 31), at(2026, 2, 28), at(2026, 3, 31), at(2026, 4, 30), at(2026, 5, 31), at(2026, 6, 30)]),
    (at(2028, 1, 31), 1, [at(2028, 1, 31), at(2028, 2, 29), at(2028, 3, 31), at(2028, 4, 30), at(2028, 5, 31), at(2028, 6, 30)]),
    (at(2026, 1, 30), 1, [at(2026, 1, 30), at(2026, 2, 28), at(2026, 3, 30), at(2026, 4, 30), at(2026, 5, 30), at(2026, 6, 30)]),
    (at(2026, 3, 31), 1, [at(2026, 3, 31), at(2026, 4, 30), at(2026, 5, 31), at(2026, 6, 30), at(2026, 7, 31), at(2026, 8, 31)]),
    (at(2026, 11, 30), 3, [at(2026, 11, 30), at(2027, 2, 28), at(2027, 5, 30), at(2027, 8, 30), at(2027, 11, 30), at(2028, 2, 29)]),
    (at(2027, 8, 31), 6, [at(2027, 8, 31), at(2028, 2, 29), at(2028, 8, 31), at(2029, 2, 28), at(2029, 8, 31), at(2030, 2, 28)]),
    (at(2028, 2, 29), 12, [at(2028, 2, 29), at(2029, 2, 28), at(2030, 2, 28), at(2031, 2, 28), at(2032, 2, 29), at(2033, 2, 28)]),
    (at(2026, 12, 15), 1, [at(2026, 12, 15), at(2027, 1, 15), at(2027, 2, 15), at(2027, 3, 15), at(2027, 4, 15), at(2027, 5, 15)]),
]


@pytest.mark.parametrize(("start", "months", "expected"), CLAMPING_TABLE)
def test_period_starts_are_clamped_from_anchor(start: datetime, months: int, expected: list[datetime]):
    schedule = Schedule(start, start.day, months)

    starts = [schedule.period(number).start for number in range(1, 7)]  # type: ignore[union-attr]

    assert starts == expected


def test_periods_tile_time_without_gaps():
    schedule = Schedule(at(2026, 1, 31), 31, 1)

    periods = [schedule.period(number) for number in range(1, 25)]

    for earlier, later in zip(periods, periods[1:], strict=False):
        assert earlier is not None and later is not None
        assert earlier.end == later.start
        assert earlier.is_full


def test_anchored_ignores_origin_day():
    assert anchored(at(2026, 2, 28), 1, 31) == at(2026, 3, 31)
    assert anchored(at(2026, 2, 28), -1, 31) == at(2026, 1, 31)
    assert anchored(at(2026, 1, 31), 13, 31) == at(2027, 2, 28)


def test_period_at_finds_containing_period():
    schedule = Schedule(at(2026, 1, 31), 31, 1)

    assert schedule.period_at(at(2026, 1, 31)).number == 1  # type: ignore[union-attr]
    assert schedule.period_at(at(2026, 2, 28, 9, 29)).number == 1  # type: ignore[union-attr]
    assert schedule.period_at(at(2026, 2, 28)).number == 2  # type: ignore[union-attr]
    assert schedule.period_at(at(2027, 3, 31)).number == 15  # type: ignore[union-attr]
    assert schedule.period_at(at(2026, 1, 30)) is None


def test_unaligned_anchor_starts_with_stub():
    schedule = Schedule(at(2026, 1, 15, 0, 0), 1, 1)

    stub = schedule.period(1)
    second = schedule.period(2)

    assert stub is not None and second is not None
    assert (stub.start, stub.end) == (at(2026, 1, 15, 0, 0), at(2026, 2, 1, 0, 0))
    assert (stub.days, stub.nominal_days) == (17, 31)
    assert not stub.is_full
    assert (second.start, second.end) == (at(2026, 2, 1, 0, 0), at(2026, 3, 1, 0, 0))
    assert second.is_full


def test_end_date_cuts_last_period():
    schedule = Schedule(at(2026, 1, 1, 0, 0), 1, 1, end=at(2026, 3, 11, 0, 0))

    last = schedule.period(3)

    assert last is not None
    assert (last.start, last.end, last.days, last.nominal_days) == (at(2026, 3, 1, 0, 0), at(2026, 3, 11, 0, 0), 10, 31)
    assert schedule.period(4) is None


def test_monthly_slots_of_quarter_follow_anchor():
    schedule = Schedule(at(2026, 1, 31), 31, 3)
    period = schedule.period(1)
    assert period is not None

    slots = schedule.slots(period, "monthly")

    assert [(slot.start, slot.end) for slot in slots] == [
        (at(2026, 1, 31), at(2026, 2, 28)),
        (at(2026, 2, 28), at(2026, 3, 31)),
        (at(2026, 3, 31), at(2026, 4, 30)),
    ]
    assert schedule.slots(period, "upfront")[0].end == at(2026, 4, 30)


def test_proration_rounds_once_half_up():
    assert prorate_minor_units(5000, 20, 30) == 3333
    assert prorate_minor_units(5001, 15, 30) == 2501  # 2500.5 rounds half up
    assert prorate_minor_units(2900, 30, 30) == 2900
    assert prorate_credits(Decimal(500), 17, 31) == Decimal("274.193548387")
    assert whole_days(at(2026, 1, 1), at(2026, 1, 11, 10)) == 11
