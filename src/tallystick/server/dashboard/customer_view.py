"""The data of a customer's page: orders and plans, balances with their grants, ledger entries,
pending consumption, signals with cost and margin, traces, delivered value and invoices.

The customer portal reuses the parts a customer may see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from tallystick.server.costs.margin import SignalMoney, signal_money
from tallystick.server.costs.reports import TraceFilters, list_traces
from tallystick.server.customers.service import find_customer
from tallystick.server.dashboard import queries
from tallystick.server.dashboard.charts import day_bar_chart, fill_days
from tallystick.server.ledger import queries as ledger_queries
from tallystick.server.ledger.service import BalanceView, customer_balances
from tallystick.server.models import (
    CreditCurrency,
    Customer,
    Invoice,
    LedgerEntry,
    Order,
    PendingConsumption,
)
from tallystick.server.models.value import ValueReceipt
from tallystick.server.orders.queries import invoices_statement, orders_statement
from tallystick.server.signals.queries import SignalFilters, SignalRow, list_signals
from tallystick.server.value import receipts
from tallystick.server.value import service as value_service
from tallystick.server.value.signal_values import DeliveredValueSummary

RECENT_ROWS = 20
# Rows of the customer page's signal and ledger tables; the explorers show the rest.
SHORT_LIST_ROWS = 10


@dataclass(frozen=True)
class OrderView:
    order: Order
    product_name: str
    plan_name: str | None
    next_renewal: datetime | None


@dataclass(frozen=True)
class BalanceCard:
    currency: CreditCurrency
    balance: BalanceView


@dataclass(frozen=True)
class SignalView:
    row: SignalRow
    money: SignalMoney | None
    currency_name: str | None


@dataclass(frozen=True)
class UsageChart:
    currency_name: str
    total: Decimal
    chart: Markup


def next_renewal(order: Order, now: datetime) -> datetime | None:
    """Return when the active order renews: the end of its current billing period.

    None when the order is not active, has no period in progress yet, or ends by then.
    """
    if order.status != "active" or order.period_end is None or order.period_end <= now:
        return None
    if order.end_date is not None and order.end_date <= order.period_end:
        return None
    return order.period_end


def order_views(session: Session, organization_id: str, customer_id: str, now: datetime) -> list[OrderView]:
    orders = list(session.scalars(orders_statement(organization_id, customer_id=customer_id).limit(RECENT_ROWS)))
    product_ids = {order.product_id for order in orders if order.product_id}
    plan_ids = {order.plan_id for order in orders if order.plan_id}
    products = queries.product_names(session, organization_id, product_ids)
    plans = queries.plan_names(session, organization_id, plan_ids)
    return [
        OrderView(
            order=order,
            product_name=products.get(order.product_id or "", order.name),
            plan_name=plans.get(order.plan_id or ""),
            next_renewal=next_renewal(order, now),
        )
        for order in orders
    ]


def balance_cards(session: Session, organization_id: str, customer_id: str, now: datetime) -> list[BalanceCard]:
    return [
        BalanceCard(currency=currency, balance=balance)
        for currency, balance in customer_balances(session, organization_id, customer_id, now)
    ]


def recent_signals(session: Session, organization_id: str, customer_id: str, limit: int = SHORT_LIST_ROWS) -> list[SignalView]:
    rows, _ = list_signals(session, organization_id, SignalFilters(customer_id=customer_id), limit, 0)
    return signal_views(session, organization_id, rows)


def signal_views(session: Session, organization_id: str, rows: list[SignalRow]) -> list[SignalView]:
    money = signal_money(session, organization_id, [row.signal.id for row in rows])
    currencies = queries.currencies_by_id(session, organization_id)
    views = []
    for row in rows:
        currency = currencies.get(row.signal.credit_currency_id or "")
        views.append(SignalView(row=row, money=money.get(row.signal.id), currency_name=currency.name if currency else None))
    return views


def ledger_entries(session: Session, organization_id: str, customer_id: str) -> list[LedgerEntry]:
    statement = ledger_queries.transactions_statement(organization_id, customer_id=customer_id)
    return list(session.scalars(statement.limit(SHORT_LIST_ROWS)))


def pending_consumption(session: Session, organization_id: str, customer_id: str) -> list[PendingConsumption]:
    return list(session.scalars(ledger_queries.pending_statement(organization_id, customer_id).limit(RECENT_ROWS)))


def recent_traces(session: Session, organization_id: str, customer_id: str) -> list[Any]:
    return list_traces(session, organization_id, TraceFilters(customer_id=customer_id), limit=10, offset=0).traces


def invoices(session: Session, organization_id: str, customer_id: str) -> list[Invoice]:
    return list(session.scalars(invoices_statement(organization_id, customer_id=customer_id).limit(RECENT_ROWS)))


def usage_charts(session: Session, organization_id: str, customer_id: str, now: datetime, days: int = 30) -> list[UsageChart]:
    """Return one chart per credit currency of the credits the customer used per day."""
    start = now - timedelta(days=days - 1)
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    used = queries.credits_used_per_day(session, organization_id, customer_id, start, now + timedelta(microseconds=1))
    currencies = queries.currencies_by_id(session, organization_id)
    charts = []
    for currency_id, per_day in used.items():
        currency = currencies.get(currency_id)
        name = currency.name if currency is not None else currency_id
        points = fill_days(per_day, start.date(), now.date())
        charts.append(
            UsageChart(
                currency_name=name,
                total=sum(per_day.values(), Decimal(0)),
                chart=day_bar_chart(points, label=f"{name} used per day, last {days} days", unit=name),
            )
        )
    return charts


def delivered_value(session: Session, organization_id: str, customer_id: str) -> DeliveredValueSummary:
    """Return the customer's delivered value per value type, all time."""
    return value_service.delivered_value(session, organization_id, customer_id=customer_id)


def value_receipts(session: Session, organization_id: str, customer_id: str) -> list[ValueReceipt]:
    return list(session.scalars(receipts.list_statement(organization_id, customer_id=customer_id).limit(RECENT_ROWS)))


def customer_of(session: Session, organization_id: str, customer_id: str) -> Customer | None:
    return find_customer(session, organization_id, customer_id)
