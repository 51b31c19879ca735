"""Billing period arithmetic: period boundaries, allocation slots and proration.

Every boundary is computed from the order's start date and billing anchor, never from the
previous boundary, so month-end clamping does not drift: an order anchored on the 31st renews
Jan 31 -> Feb 28 (Feb 29 in a leap year) -> Mar 31 -> Apr 30. Boundaries keep the start date's
time of day.

When the anchor day differs from the start date's day, the first period is a stub that ends on
the first anchor day after the start, and its charge and allowance are prorated by days. An end
date cuts the last period short in the same way.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from tallystick.server.models.types import CREDIT_PLACES

_DAY = timedelta(days=1)
_CREDIT_QUANTUM = Decimal(1).scaleb(-CREDIT_PLACES)


def anchored(origin: datetime, months: int, anchor_day: int) -> datetime:
    """Return the instant `months` calendar months after `origin`'s month, on `anchor_day`.

    The day is clamped to the month's last day, and the time of day is `origin`'s. Only the
    month and time of `origin` matter, so chaining never loses the anchor.
    """
    month_index = origin.year * 12 + origin.month - 1 + months
    year, month_zero = divmod(month_index, 12)
    month = month_zero + 1
    day = min(anchor_day, calendar.monthrange(year, month)[1])
    return origin.replace(year=year, month=month, day=day)


def whole_days(start: datetime, end: datetime) -> int:
    """Return the days from `start` to `end`, a started day counting as a whole one."""
    return math.ceil((end - start) / _DAY)


def prorate_minor_units(amount: int, part_days: int, whole: int) -> int:
    """Return `amount` (minor units) times part_days / whole, rounded half up to a minor unit.

    This is the one rounding step of prorated charges.
    """
    if whole <= 0 or part_days >= whole:
        return amount
    share = Decimal(amount) * Decimal(part_days) / Decimal(whole)
    return int(share.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def prorate_credits(amount: Decimal, part_days: int, whole: int) -> Decimal:
    """Return `amount` credits times part_days / whole, rounded down to the ledger's 9 places."""
    if whole <= 0 or part_days >= whole:
        return amount
    share = amount * Decimal(part_days) / Decimal(whole)
    return share.quantize(_CREDIT_QUANTUM, rounding=ROUND_DOWN)


@dataclass(frozen=True)
class Period:
    """One billing period, numbered from 1; `end` is exclusive.

    `nominal_start` and `nominal_end` bound the full-length period this one belongs to. They
    differ from `start` and `end` only for a stub first period or a period cut short by the
    order's end date.
    """

    number: int
    start: datetime
    end: datetime
    nominal_start: datetime
    nominal_end: datetime

    @property
    def days(self) -> int:
        return whole_days(self.start, self.end)

    @property
    def nominal_days(self) -> int:
        return whole_days(self.nominal_start, self.nominal_end)

    @property
    def is_full(self) -> bool:
        return self.start == self.nominal_start and self.end == self.nominal_end


@dataclass(frozen=True)
class Slot:
    """One allocation of a credit benefit within a period: credits usable from start to end.

    `index` is 0 for an upfront allocation and the month number within the period (from 0)
    for a monthly one. `part_days` of `whole_days` is the share of a full slot it covers.
    """

    index: int
    start: datetime
    end: datetime
    part_days: int
    whole_days: int


@dataclass(frozen=True)
class Schedule:
    """The billing periods of an order: from `start`, every `period_months` on `anchor_day`."""

    start: datetime
    anchor_day: int
    period_months: int
    end: datetime | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.anchor_day <= 31:
            raise ValueError(f"anchor_day must be between 1 and 31, not {self.anchor_day}")
        if self.period_months < 1:
            raise ValueError(f"period_months must be at least 1, not {self.period_months}")

    @property
    def aligned(self) -> bool:
        """Whether the start date falls on the anchor day, so there is no stub period."""
        return anchored(self.start, 0, self.anchor_day) == self.start

    def _first_anchor(self) -> datetime:
        """Return the first anchor day strictly after an unaligned start."""
        candidate = anchored(self.start, 0, self.anchor_day)
        return candidate if candidate > self.start else anchored(self.start, 1, self.anchor_day)

    def boundary(self, index: int) -> datetime:
        """Return the start of period `index + 1` before the end date is applied (0 = start)."""
        if index <= 0:
            return self.start
        if self.aligned:
            return anchored(self.start, index * self.period_months, self.anchor_day)
        return anchored(self._first_anchor(), (index - 1) * self.period_months, self.anchor_day)

    def period(self, number: int) -> Period | None:
        """Return period `number` (from 1), or None when it would start at or after the end date."""
        if number < 1:
            raise ValueError(f"period numbers start at 1, not {number}")
        start = self.boundary(number - 1)
        if self.end is not None and start >= self.end:
            return None
        nominal_end = self.boundary(number)
        if number == 1 and not self.aligned:
            nominal_start = anchored(nominal_end, -self.period_months, self.anchor_day)
        else:
            nominal_start = start
        end = min(nominal_end, self.end) if self.end is not None else nominal_end
        return Period(number, start, end, nominal_start, nominal_end)

    def period_at(self, moment: datetime) -> Period | None:
        """Return the period that contains `moment`, or None before the start or after the end."""
        if moment < self.start:
            return None
        # Estimate from the month difference, then walk: boundaries are months apart.
        months = (moment.year - self.start.year) * 12 + moment.month - self.start.month
        number = max(1, months // self.period_months)
        while number > 1 and self.boundary(number - 1) > moment:
            number -= 1
        while True:
            period = self.period(number)
            if period is None:
                return None
            if period.start <= moment < period.end:
                return period
            if moment < period.start:
                return None
            number += 1

    def slots(self, period: Period, cadence: str) -> list[Slot]:
        """Return the allocation slots of a benefit with `cadence` (upfront or monthly) in `period`.

        An upfront benefit has one slot covering the period. A monthly benefit has one slot
        per month of the full-length period, clipped to the period. A clipped slot's share is
        its days over the full month's days.
        """
        if cadence == "upfront":
            return [Slot(0, period.start, period.end, period.days, period.nominal_days)]

        slots = []
        for month in range(self.period_months):
            month_start = anchored(period.nominal_start, month, self.anchor_day)
            month_end = (
                period.nominal_end
                if month == self.period_months - 1
                else anchored(period.nominal_start, month + 1, self.anchor_day)
            )
            start, end = max(month_start, period.start), min(month_end, period.end)
            if start >= end:
                continue
            slots.append(Slot(month, start, end, whole_days(start, end), whole_days(month_start, month_end)))
        return slots
