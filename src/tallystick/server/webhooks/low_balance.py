"""The billing-credits-low event: a balance falling to or below its currency's threshold.

The ledger calls `record_low_balance_crossing` at the end of every write to one customer's
credits in one currency, under that account's lock, with the available balance before and
after the write. The event fires only when the balance goes from above the threshold to at or
below it, so it fires once per crossing: further consumption below the threshold is silent
until the balance rises above it again.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server import events
from tallystick.server.models import Customer, LowBalanceThreshold


def record_low_balance_crossing(
    session: Session,
    *,
    organization_id: str,
    customer_id: str,
    currency_id: str,
    available_before: Decimal,
    available_after: Decimal,
) -> None:
    """Record billing-credits-low in the caller's transaction if this write crossed the threshold."""
    # Most writes do not lower the balance; they need no query.
    if available_after >= available_before:
        return
    threshold = session.scalar(
        select(LowBalanceThreshold.threshold).where(
            LowBalanceThreshold.organization_id == organization_id,
            LowBalanceThreshold.credits_currency_id == currency_id,
        )
    )
    if threshold is None or not available_before > threshold >= available_after:
        return

    customer = session.get(Customer, customer_id)
    payload = {
        "customerId": customer_id,
        "externalCustomerId": customer.external_id if customer is not None else None,
        "creditsCurrencyId": currency_id,
        "threshold": format_credits(threshold),
        "available": format_credits(available_after),
    }
    events.record_event(session, organization_id, events.CREDITS_LOW, payload)


def format_credits(value: Decimal) -> str:
    """Render credits as a plain decimal string without trailing zeros, such as "12.5"."""
    text = f"{value.normalize():f}"
    return "0" if text in ("-0", "0") else text
