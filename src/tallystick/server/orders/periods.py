"""Billing period arithmetic for an order's first period."""

from __future__ import annotations

from datetime import datetime

from dateutil.relativedelta import relativedelta


def add_months(start: datetime, months: int) -> datetime:
    """Return `start` moved `months` calendar months later, clamped to the last day of a month.

    relativedelta clamps the day of month (Jan 31 + 1 month = Feb 28, or Feb 29 in a leap
    year) and keeps the time of day and the timezone.

    NOTE: this is right for one period from the start date. Later periods must be computed
    from the start date and the billing anchor (Jan 31 -> Feb 28 -> Mar 31), not by chaining
    this function (which would give Mar 28).
    """
    return start + relativedelta(months=months)


def first_period(start: datetime, period_months: int) -> tuple[datetime, datetime]:
    """Return the (start, end) of an order's first billing period; the end is exclusive."""
    return start, add_months(start, period_months)
