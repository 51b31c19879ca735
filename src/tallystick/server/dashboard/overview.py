"""The overview page's figures: revenue, AI cost, gross margin, credits moved, signals per day
and the customers closest to running out of credits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from markupsafe import Markup
from sqlalchemy.orm import Session

from tallystick.server.dashboard import queries
from tallystick.server.dashboard.charts import day_bar_chart, fill_days
from tallystick.server.web import format_credits, format_money, format_usd_cost

# Periods the overview can show, in days.
PERIODS = (7, 30, 90)
DEFAULT_PERIOD = 30
# Usage over this many past days sets the pace at which a customer's credits run out.
BURN_WINDOW = timedelta(days=7)
RUNNING_OUT_ROWS = 8


@dataclass(frozen=True)
class CreditLine:
    currency: str
    granted: str
    consumed: str


@dataclass(frozen=True)
class RunningOut:
    customer_id: str
    customer_name: str
    currency: str
    available: str
    used_last_week: str
    outlook: str
    exhausted: bool


@dataclass(frozen=True)
class Overview:
    days: int
    revenue: list[str]
    ai_cost: str
    unpriced_costs: int
    gross_margin: str | None
    margin_percent: str | None
    credit_lines: list[CreditLine]
    signals_total: int
    signals_chart: Markup
    running_out: list[RunningOut]


def build_overview(session: Session, organization_id: str, now: datetime, days: int) -> Overview:
    """Collect the overview of the last `days` days up to `now`."""
    start = now - timedelta(days=days)
    end = now + timedelta(microseconds=1)

    revenue = queries.revenue_by_currency(session, organization_id, start, end)
    cost = queries.ai_cost(session, organization_id, start, end)
    # AI costs are in USD, so only USD revenue has a gross margin; other currencies are listed.
    usd_revenue = Decimal(revenue.get("USD", 0)) / 100
    margin = usd_revenue - cost.amount
    margin_percent = f"{(margin / usd_revenue * 100):.1f}%" if usd_revenue > 0 else None

    currencies = queries.currencies_by_id(session, organization_id)
    granted, consumed = queries.credits_moved(session, organization_id, start, end)
    credit_lines = [
        CreditLine(
            currency=currency.name,
            granted=format_credits(granted.get(currency_id, Decimal(0))),
            consumed=format_credits(consumed.get(currency_id, Decimal(0))),
        )
        for currency_id, currency in currencies.items()
        if currency_id in granted or currency_id in consumed
    ]

    per_day = queries.signals_per_day(session, organization_id, start, end)
    points = fill_days(per_day, start.date(), now.date())
    chart = day_bar_chart(points, label=f"Signals per day, last {days} days", unit="signals")

    return Overview(
        days=days,
        revenue=[format_money(amount, code) for code, amount in sorted(revenue.items())],
        ai_cost=format_usd_cost(cost.amount),
        unpriced_costs=cost.unpriced_records,
        gross_margin=format_usd_cost(margin) if revenue or cost.amount else None,
        margin_percent=margin_percent,
        credit_lines=credit_lines,
        signals_total=int(sum(per_day.values())),
        signals_chart=chart,
        running_out=running_out(session, organization_id, now, currencies),
    )


def running_out(
    session: Session, organization_id: str, now: datetime, currencies: dict[str, object]
) -> list[RunningOut]:
    """Return the accounts that ran out or will run out first at last week's pace of use.

    Accounts that used nothing in the last week never run out at that pace and are left out.
    """
    balances = queries.account_balances(session, organization_id, now)
    used = queries.credits_used_since(session, organization_id, now - BURN_WINDOW)

    ranked = []
    for balance in balances:
        week = used.get((balance.customer_id, balance.currency_id), Decimal(0))
        if week <= 0:
            continue
        days_left = balance.available / (week / BURN_WINDOW.days)
        ranked.append((days_left, balance, week))
    ranked.sort(key=lambda item: (item[0], item[1].customer_id))
    ranked = ranked[:RUNNING_OUT_ROWS]

    customers = queries.customers_by_id(session, organization_id, {balance.customer_id for _, balance, _ in ranked})
    rows = []
    for days_left, balance, week in ranked:
        customer = customers.get(balance.customer_id)
        currency = currencies.get(balance.currency_id)
        exhausted = balance.available <= 0
        if exhausted:
            outlook = "Ran out"
        elif days_left < 1:
            outlook = "Within a day"
        else:
            outlook = f"In about {int(days_left)} day{'s' if int(days_left) != 1 else ''}"
        rows.append(
            RunningOut(
                customer_id=balance.customer_id,
                customer_name=customer.name if customer is not None else balance.customer_id,
                currency=getattr(currency, "name", balance.currency_id),
                available=format_credits(balance.available),
                used_last_week=format_credits(week),
                outlook=outlook,
                exhausted=exhausted,
            )
        )
    return rows
