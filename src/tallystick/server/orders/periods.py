"""Calendar month arithmetic for reports that count months from a date.

Billing periods are not computed here: `tallystick.server.billing.periods` derives them from an
order's start date and billing anchor.
"""

from __future__ import annotations

from datetime import datetime

from dateutil.relativedelta import relativedelta


def add_months(start: datetime, months: int) -> datetime:
    """Return `start` moved `months` calendar months later, clamped to the last day of a month.

    relativedelta clamps the day of month (Jan 31 + 1 month = Feb 28, or Feb 29 in a leap
    year) and keeps the time of day and the timezone. Chaining calls drifts (Jan 31 + 1 month
    + 1 month = Mar 28), so count months from one fixed start, as callers here do.
    """
    return start + relativedelta(months=months)
