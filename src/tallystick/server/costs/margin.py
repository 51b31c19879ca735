"""Per-signal money: the cost of the AI calls attributed to a signal, its revenue and margin.

- cost: the sum of the signal's priced cost records. Its status is `priced` when every record
  is priced, `partial` when some are unpriced, `unpriced` when none is priced, and `none` when
  the signal has no cost records.
- revenue: the money value of the credits the signal drew from grants (its spend ledger
  entries, including later settlements of its pending consumption), each credit valued at its
  grant's unit value (see `credit_unit_values`).
- margin: revenue minus cost.

All amounts are exact USD decimals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from tallystick.server.costs.money_schemas import CostSummaryOut, MoneyOut
from tallystick.server.costs.pricing import round_cost
from tallystick.server.models import CreditGrant, LedgerEntry, Order
from tallystick.server.orders.periods import add_months
from tallystick.server.models.cost import CostRecord

ZERO = Decimal(0)


@dataclass(frozen=True)
class SignalMoney:
    cost: Decimal
    priced_records: int
    unpriced_records: int
    revenue: Decimal

    @property
    def cost_status(self) -> str:
        if self.priced_records == 0 and self.unpriced_records == 0:
            return "none"
        if self.unpriced_records == 0:
            return "priced"
        if self.priced_records == 0:
            return "unpriced"
        return "partial"

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost


NO_MONEY = SignalMoney(cost=ZERO, priced_records=0, unpriced_records=0, revenue=ZERO)


def usd_text(amount: Decimal) -> str:
    """Render a USD amount for the wire, with the twelve places that costs are stored with."""
    return f"{round_cost(amount):f}"


def margin_fields(money: SignalMoney | None) -> dict[str, MoneyOut]:
    """Return the `cost`, `revenue` and `margin` fields of a signal item."""
    money = money or NO_MONEY
    return {
        "cost": CostSummaryOut(amount=usd_text(money.cost), currency="USD", status=money.cost_status),
        "revenue": MoneyOut(amount=usd_text(money.revenue), currency="USD"),
        "margin": MoneyOut(amount=usd_text(money.margin), currency="USD"),
    }


def signal_money(session: Session, organization_id: str, signal_ids: Iterable[str]) -> dict[str, SignalMoney]:
    """Return cost, revenue and margin inputs for each of `signal_ids` (absent ids get none)."""
    ids = list(dict.fromkeys(signal_ids))
    if not ids:
        return {}
    costs = _costs_by_signal(session, organization_id, ids)
    revenues = _revenue_by_signal(session, organization_id, ids)
    result: dict[str, SignalMoney] = {}
    for signal_id in ids:
        cost, priced, unpriced = costs.get(signal_id, (ZERO, 0, 0))
        result[signal_id] = SignalMoney(
            cost=cost, priced_records=priced, unpriced_records=unpriced, revenue=revenues.get(signal_id, ZERO)
        )
    return result


def _costs_by_signal(
    session: Session, organization_id: str, ids: list[str]
) -> dict[str, tuple[Decimal, int, int]]:
    priced = CostRecord.cost_status == "priced"
    rows = session.execute(
        select(
            CostRecord.signal_id,
            func.coalesce(func.sum(CostRecord.cost_amount), 0),
            func.sum(case((priced, 1), else_=0)),
            func.sum(case((priced, 0), else_=1)),
        )
        .where(CostRecord.organization_id == organization_id, CostRecord.signal_id.in_(ids))
        .group_by(CostRecord.signal_id)
    )
    return {
        signal_id: (Decimal(total), int(priced_count or 0), int(unpriced_count or 0))
        for signal_id, total, priced_count, unpriced_count in rows
    }


def _revenue_by_signal(session: Session, organization_id: str, ids: list[str]) -> dict[str, Decimal]:
    rows = session.execute(
        select(LedgerEntry.signal_id, LedgerEntry.grant_id, func.sum(LedgerEntry.amount))
        .where(
            LedgerEntry.organization_id == organization_id,
            LedgerEntry.signal_id.in_(ids),
            LedgerEntry.entry_type == "spend",
        )
        .group_by(LedgerEntry.signal_id, LedgerEntry.grant_id)
    )
    drawn = [(signal_id, grant_id, -Decimal(amount)) for signal_id, grant_id, amount in rows]
    values = credit_unit_values(session, organization_id, {grant_id for _, grant_id, _ in drawn})
    revenue: dict[str, Decimal] = {}
    for signal_id, grant_id, credits in drawn:
        revenue[signal_id] = revenue.get(signal_id, ZERO) + credits * values.get(grant_id, ZERO)
    return revenue


def credit_unit_values(session: Session, organization_id: str, grant_ids: set[str]) -> dict[str, Decimal]:
    """Return the USD value of one credit of each grant.

    A grant without an order, such as a manual grant, is worth the unit value it was given, and
    0 when it was given none.

    A grant from an order's billing period is worth the share of the period price that it
    covers, divided by its credits. A monthly plan granting 2,000 credits for $79 values a credit
    at $0.0395. A monthly grant of a three-month order covers a third of the period price. When
    an order grants several credit currencies, its price is split equally between them, because
    the catalog does not state what each is worth. Each currency's grants over a period then
    add up to an equal share of the price. This rule applies even to an order's grant that has
    a unit value (only the manual grant endpoint sets one), because the order's price is what
    was paid for its credits, and a second figure could value them at more or less than that.

    NOTE: Orders in a currency other than USD are worth 0, because costs are USD and there is
    no exchange rate to convert with.
    """
    if not grant_ids:
        return {}
    grants = session.execute(
        select(
            CreditGrant.id,
            CreditGrant.order_id,
            CreditGrant.amount,
            CreditGrant.period_start,
            CreditGrant.period_end,
            CreditGrant.unit_value,
        ).where(CreditGrant.organization_id == organization_id, CreditGrant.id.in_(grant_ids))
    ).all()
    values = {grant_id: ZERO for grant_id in grant_ids}
    for row in grants:
        if row.order_id is None and row.unit_value is not None:
            values[row.id] = row.unit_value
    order_ids = {row.order_id for row in grants if row.order_id is not None}
    if not order_ids:
        return values

    orders = {
        order.id: order
        for order in session.scalars(
            select(Order).where(Order.organization_id == organization_id, Order.id.in_(order_ids))
        )
    }
    currencies = dict(
        session.execute(
            select(CreditGrant.order_id, func.count(func.distinct(CreditGrant.credits_currency_id)))
            .where(CreditGrant.organization_id == organization_id, CreditGrant.order_id.in_(order_ids))
            .group_by(CreditGrant.order_id)
        ).all()
    )
    for row in grants:
        order = orders.get(row.order_id) if row.order_id is not None else None
        if order is None or order.currency.upper() != "USD" or row.amount <= 0:
            continue
        period_months = max(order.billing_period_months, 1)
        covered_months = _months_between(row.period_start, row.period_end, period_months)
        with localcontext() as context:
            # Enough digits that a repeating quotient such as 7900 / 3 stays exact far below
            # the twelve places that amounts are shown with.
            context.prec = 40
            share = Decimal(order.period_amount) / 100 * covered_months / period_months
            values[row.id] = share / max(currencies.get(row.order_id, 1), 1) / row.amount
    return values


def _months_between(start: datetime | None, end: datetime | None, limit: int) -> int:
    """Count whole months from `start` to `end` with the billing periods' month-end clamping."""
    if start is None or end is None:
        return 1
    months = 1
    while months < limit and add_months(start, months + 1) <= end:
        months += 1
    return months
