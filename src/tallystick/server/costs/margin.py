"""Per-signal money: the cost of the AI calls attributed to a signal, its revenue and margin.

- cost: the sum of the signal's priced cost records. Its status is `priced` when every record
  is priced, `partial` when some are unpriced, `unpriced` when none is priced, and `none` when
  the signal has no cost records.
- revenue: the money value of the credits the signal drew from grants (its spend ledger
  entries, including later settlements of its pending consumption), each credit valued at its
  grant's unit value.
- margin: revenue minus cost.

All amounts are exact USD decimals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from tallystick.server.costs.money_schemas import CostSummaryOut, MoneyOut
from tallystick.server.costs.pricing import round_cost
from tallystick.server.models import LedgerEntry
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

    NOTE: the ledger does not yet record what a credit was sold for. A grant from an order's
    billing period should be worth the period's price divided by the credits it grants. A
    manual grant should be worth the unit value given with it. Until grants and orders carry
    those prices, every credit is valued at 0, so revenue is 0.
    """
    return {grant_id: ZERO for grant_id in grant_ids}
