"""Credit allocations: the credits an order's benefits grant per billing period, exactly once.

Each benefit of each order line grants per slot of a period: one slot for an upfront benefit
(the whole period), one per month for a monthly one. A slot is allocated when it has started
and its benefit's grant timing is met: on_order_activation as soon as the order is active,
on_invoice_posted once the period's invoice is posted, on_payment once it is paid (or has
nothing to pay). Every allocation inserts a `CreditAllocation` row whose unique key is
(order, period, order line, benefit, slot), in the same transaction as its ledger grant, so a
second insert of the same slot fails and rolls the grant back with it.

Callers hold the order's row lock, so the existence check below and the insert do not race.

Rollover: when an allocation with a rollover amount expires, min(unused credits, rollover
amount) is granted again from the expiry until `rollover_until`. The ledger records the expiry
of the whole remainder first, so the carried credits show as a new grant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.billing.periods import (
    Period,
    Schedule,
    Slot,
    anchored,
    prorate_credits,
)
from tallystick.server.ids import new_id
from tallystick.server.ledger import service as ledger
from tallystick.server.models import (
    BillingPeriod,
    CreditAllocation,
    Invoice,
    LedgerEntry,
    Order,
    OrderLine,
)
from tallystick.server.orders.terms import BenefitTerms, monthly_allowance

log = logging.getLogger(__name__)

# The ledger's originCode of credits that came with a purchased plan, and of carried credits.
PURCHASED_ORIGIN = "purchased"
ROLLOVER_ORIGIN = "rollover"
# Order line types that bill and grant credits.
BILLED_LINE_TYPES = ("STANDARD", "CREDIT")
# A late allocation is granted as of this long before its slot ended (see `_grant_slot`).
_LAST_INSTANT = timedelta(microseconds=1)


@dataclass(frozen=True)
class LineBenefit:
    line: OrderLine
    line_name: str  # the pricing line's name, for ledger descriptions
    benefit: BenefitTerms


def schedule_of(order: Order) -> Schedule:
    return Schedule(order.start_date, order.billing_anchor, order.billing_period_months, order.end_date)


def line_benefits(order: Order) -> list[LineBenefit]:
    """Return every credit benefit of the order's billed lines, ended lines included."""
    found = []
    for line in order.lines:
        if line.line_type not in BILLED_LINE_TYPES:
            continue
        for attribute in line.attributes or []:
            for snapshot in attribute.get("creditBenefits") or []:
                found.append(LineBenefit(line, attribute.get("name", ""), BenefitTerms.from_snapshot(snapshot)))
    return found


def line_covers(line: OrderLine, moment: datetime) -> bool:
    """Return whether the line is in force at `moment`: started and not yet ended."""
    return line.start_date <= moment and (line.end_date is None or line.end_date > moment)


def slot_amount(order: Order, period: Period, benefit: BenefitTerms, slot: Slot) -> Decimal:
    """Return the credits of one slot: the period's amount (upfront) or one month's share,
    prorated when the slot is shorter than a full one."""
    if benefit.allocation_cadence == "upfront":
        full = benefit.amount
    else:
        full = monthly_allowance(benefit, order.billing_period_months)
    return prorate_credits(full, slot.part_days, slot.whole_days)


def met_timings(session: Session, order: Order, period_number: int) -> set[str]:
    """Return the grant timings met for one period of an active order."""
    met = {"on_order_activation"}
    invoice = session.scalar(
        select(Invoice)
        .join(BillingPeriod, BillingPeriod.invoice_id == Invoice.id)
        .where(BillingPeriod.order_id == order.id, BillingPeriod.number == period_number)
    )
    if invoice is None or invoice.total == 0:
        # Nothing to post or pay: a period without charges grants every benefit at its start.
        return met | {"on_invoice_posted", "on_payment"}
    if invoice.status == "posted":
        met.add("on_invoice_posted")
    if invoice.payment_status == "paid":
        met.add("on_payment")
    return met


def allocate_due(session: Session, order: Order, period_number: int, now: datetime) -> int:
    """Grant every slot of the period that has started by `now` and whose timing is met.

    Returns the number of allocations made. Slots already allocated are skipped.
    """
    period = schedule_of(order).period(period_number)
    if period is None:
        return 0
    timings = met_timings(session, order, period_number)
    done = _allocated_keys(session, order.id, period_number)

    allocated = 0
    for item in line_benefits(order):
        if item.benefit.credit_grant_timing not in timings:
            continue
        for slot in schedule_of(order).slots(period, item.benefit.allocation_cadence):
            key = (item.line.id, item.benefit.benefit_id, slot.index)
            if slot.start > now or key in done or not line_covers(item.line, slot.start):
                continue
            amount = slot_amount(order, period, item.benefit, slot)
            if amount <= 0:
                continue
            _grant_slot(session, order, period_number, item, slot, amount, now, kind="allowance", starts_at=slot.start)
            done.add(key)
            allocated += 1
    return allocated


def next_slot_start(order: Order, after: datetime) -> datetime | None:
    """Return the earliest start of a slot of the current period later than `after`."""
    if order.period_number < 1:
        return None
    period = schedule_of(order).period(order.period_number)
    if period is None:
        return None
    starts = [
        slot.start
        for item in line_benefits(order)
        for slot in schedule_of(order).slots(period, item.benefit.allocation_cadence)
        if slot.start > after and line_covers(item.line, slot.start)
    ]
    return min(starts, default=None)


def _allocated_keys(session: Session, order_id: str, period_number: int) -> set[tuple[str, str, int]]:
    rows = session.execute(
        select(CreditAllocation.order_line_id, CreditAllocation.credit_benefit_id, CreditAllocation.slot).where(
            CreditAllocation.order_id == order_id, CreditAllocation.period_number == period_number
        )
    )
    return {(line_id, benefit_id, slot) for line_id, benefit_id, slot in rows}


def _grant_slot(
    session: Session,
    order: Order,
    period_number: int,
    item: LineBenefit,
    slot: Slot,
    amount: Decimal,
    now: datetime,
    *,
    kind: str,
    starts_at: datetime,
) -> CreditAllocation:
    """Insert the allocation row and its ledger grant.

    A slot allocated after it ended (an invoice paid late) is granted as of its last instant.
    Its credits then settle the pending consumption recorded while the invoice was unpaid, and
    what they do not cover expires at the next ledger write, as it would have on time.
    """
    benefit = item.benefit
    rollover_until = _rollover_until(benefit, slot, order.billing_anchor) if benefit.rollover_amount else None
    allocation = CreditAllocation(
        id=new_id("credit_allocation"),
        organization_id=order.organization_id,
        order_id=order.id,
        order_line_id=item.line.id,
        period_number=period_number,
        credit_benefit_id=benefit.benefit_id,
        slot=slot.index,
        kind=kind,
        credits_currency_id=benefit.credits_currency_id,
        amount=amount,
        starts_at=starts_at,
        expires_at=slot.end,
        rollover_amount=benefit.rollover_amount if rollover_until is not None else None,
        rollover_until=rollover_until,
        created_at=now,
    )

    as_of = min(clock.now(), slot.end - _LAST_INSTANT)
    with clock.at(as_of):
        grant = ledger.grant(
            session,
            organization_id=order.organization_id,
            customer_id=order.customer_id,
            currency_id=benefit.credits_currency_id,
            amount=amount,
            starts_at=starts_at,
            expires_at=slot.end,
            source="order_period",
            origin_code=PURCHASED_ORIGIN,
            order_id=order.id,
            period_start=starts_at,
            period_end=slot.end,
            description=f"{order.name}: {item.line_name}",
        )
    allocation.grant_id = grant.id
    session.add(allocation)
    session.flush()
    log.info(
        "order.credits_allocated",
        extra={
            "organization_id": order.organization_id,
            "order_id": order.id,
            "period_number": period_number,
            "credit_benefit_id": benefit.benefit_id,
            "slot": slot.index,
            "credit_grant_id": grant.id,
            "kind": kind,
        },
    )
    return allocation


def _rollover_until(benefit: BenefitTerms, slot: Slot, anchor_day: int) -> datetime | None:
    """Return when carried credits of `slot` expire, or None when the benefit carries none.

    A duration in months counts on the order's anchor day, like billing periods (credits
    carried from Feb 28 for one month on an order anchored on the 31st last until Mar 31).
    Without a duration, carried credits last one more slot of the same length.
    """
    duration = benefit.rollover_duration
    if duration is not None and duration <= 0:
        return None
    if duration is None:
        return slot.end + (slot.end - slot.start)
    if benefit.rollover_duration_unit == "days":
        return slot.end + timedelta(days=duration)
    return anchored(slot.end, duration, anchor_day)


def roll_over_due(session: Session, order: Order, now: datetime) -> int:
    """Carry over the unused credits of allocations that expired by `now`; return how many."""
    due = list(
        session.scalars(
            select(CreditAllocation)
            .where(
                CreditAllocation.order_id == order.id,
                CreditAllocation.rolled_over_at.is_(None),
                CreditAllocation.rollover_amount.is_not(None),
                CreditAllocation.expires_at <= now,
            )
            .order_by(CreditAllocation.expires_at, CreditAllocation.id)
        )
    )
    for allocation in due:
        _roll_over(session, order, allocation, now)
    return len(due)


def next_rollover_at(session: Session, order: Order) -> datetime | None:
    return session.scalar(
        select(func.min(CreditAllocation.expires_at)).where(
            CreditAllocation.order_id == order.id,
            CreditAllocation.rolled_over_at.is_(None),
            CreditAllocation.rollover_amount.is_not(None),
        )
    )


def _roll_over(session: Session, order: Order, allocation: CreditAllocation, now: datetime) -> None:
    # Writes the expiry entry of the expired grant's remainder, if no write has yet.
    ledger.sweep_account(
        session,
        organization_id=order.organization_id,
        customer_id=order.customer_id,
        currency_id=allocation.credits_currency_id,
    )
    expired = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.grant_id == allocation.grant_id, LedgerEntry.entry_type == "expiry"
        )
    )
    unused = -Decimal(expired)
    assert allocation.rollover_amount is not None and allocation.rollover_until is not None
    carried = min(unused, allocation.rollover_amount)

    allocation.rolled_over_at = now
    if carried > 0 and allocation.rollover_until > allocation.expires_at:
        grant = ledger.grant(
            session,
            organization_id=order.organization_id,
            customer_id=order.customer_id,
            currency_id=allocation.credits_currency_id,
            amount=carried,
            starts_at=allocation.expires_at,
            expires_at=allocation.rollover_until,
            source="order_period",
            origin_code=ROLLOVER_ORIGIN,
            order_id=order.id,
            period_start=allocation.expires_at,
            period_end=allocation.rollover_until,
            description=f"{order.name}: unused credits carried over",
        )
        allocation.rollover_grant_id = grant.id
    session.flush()
    log.info(
        "order.credits_rolled_over",
        extra={
            "organization_id": order.organization_id,
            "order_id": order.id,
            "credit_allocation_id": allocation.id,
            "carried": str(carried),
        },
    )


def grant_upgrade_difference(
    session: Session, order: Order, old_line: OrderLine, new_line: OrderLine, now: datetime
) -> list[CreditAllocation]:
    """Grant what the new line's allowance adds over the old one's for the slots in progress.

    Per credit currency, the old line's credits for the slots containing `now` are compared
    with the new line's. A positive difference is granted now, until that slot ends, against
    the new line's first benefit in that currency. A lower allowance grants nothing.
    """
    period = schedule_of(order).period(order.period_number)
    if period is None:
        return []
    schedule = schedule_of(order)

    def current(line: OrderLine) -> dict[str, list[tuple[LineBenefit, Slot, Decimal]]]:
        by_currency: dict[str, list[tuple[LineBenefit, Slot, Decimal]]] = {}
        for item in line_benefits(order):
            if item.line.id != line.id:
                continue
            for slot in schedule.slots(period, item.benefit.allocation_cadence):
                if slot.start <= now < slot.end:
                    amount = slot_amount(order, period, item.benefit, slot)
                    by_currency.setdefault(item.benefit.credits_currency_id, []).append((item, slot, amount))
        return by_currency

    old, new = current(old_line), current(new_line)
    granted = []
    for currency_id, entries in new.items():
        difference = sum((amount for _, _, amount in entries), Decimal(0)) - sum(
            (amount for _, _, amount in old.get(currency_id, [])), Decimal(0)
        )
        if difference <= 0:
            continue
        item, slot, _ = entries[0]
        granted.append(
            _grant_slot(session, order, order.period_number, item, slot, difference, now, kind="upgrade", starts_at=now)
        )
    return granted
