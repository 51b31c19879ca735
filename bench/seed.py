"""Database set-up of the server benchmark: a catalog, customers with credits, and history.

Everything is written with set-based statements (one executemany per table, or one
INSERT ... SELECT over a generated series), never one request or one ORM object per row.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import insert, text

from payloads import CURRENCY_KEY, EVENT_NAME, PRODUCT_EXTERNAL_ID, customer_external_id
from tallystick.server.api_keys import create_api_key
from tallystick.server.db import Store
from tallystick.server.ids import new_id
from tallystick.server.models import (
    CreditAccount,
    CreditCurrency,
    CreditGrant,
    Customer,
    LedgerEntry,
    Product,
    ProductAttribute,
)

# Credits granted to each benchmark customer: far more than any run consumes, so every
# signal is covered by a grant and none becomes pending consumption.
GRANT_CREDITS = Decimal(900_000_000)


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    api_key: str
    currency_id: str
    product_id: str
    line_id: str
    customer_ids: list[str]


def seed_tenant(store: Store, *, customers: int) -> Tenant:
    """Create an organization, its key, a chat-credits catalog and `customers` customers.

    Customer number k has external id bench-k and one grant of GRANT_CREDITS credits, with its
    ledger entry and credit account, as `ledger.grant` would write them.
    """
    now = datetime.now(UTC)
    with store.transaction() as session:
        created = create_api_key(session, f"bench-{secrets.token_hex(4)}")
        organization_id = created.organization_id
        currency = CreditCurrency(
            id=new_id("credit_currency"), organization_id=organization_id, name="Chat Credits", key=CURRENCY_KEY
        )
        product = Product(
            id=new_id("product"), organization_id=organization_id, external_id=PRODUCT_EXTERNAL_ID, name="ChatBot"
        )
        session.add_all([currency, product])
        session.flush()
        line = ProductAttribute(
            id=new_id("product_attribute"),
            organization_id=organization_id,
            product_id=product.id,
            name=EVENT_NAME,
            pricing={
                "pricingType": "UsagePrepaidCredits",
                "eventName": EVENT_NAME,
                "creditsCurrencyId": currency.id,
                "creditCost": 1,
            },
            pricing_type="UsagePrepaidCredits",
            event_name=EVENT_NAME,
            credits_currency_id=currency.id,
            credit_cost=Decimal(1),
        )
        session.add(line)
        session.flush()

        customer_ids = [new_id("customer") for _ in range(customers)]
        grant_ids = [new_id("credit_grant") for _ in range(customers)]
        session.execute(
            insert(Customer.__table__),
            [
                {
                    "id": customer_id,
                    "organization_id": organization_id,
                    "external_id": customer_external_id(number),
                    "name": customer_external_id(number),
                }
                for number, customer_id in enumerate(customer_ids)
            ],
        )
        session.execute(
            insert(CreditAccount.__table__),
            [
                {
                    "organization_id": organization_id,
                    "customer_id": customer_id,
                    "credits_currency_id": currency.id,
                    "last_sequence": 2,
                }
                for customer_id in customer_ids
            ],
        )
        session.execute(
            insert(CreditGrant.__table__),
            [
                {
                    "id": grant_id,
                    "organization_id": organization_id,
                    "customer_id": customer_id,
                    "credits_currency_id": currency.id,
                    "amount": GRANT_CREDITS,
                    "remaining": GRANT_CREDITS,
                    "starts_at": now,
                    "priority": 0,
                    "source": "manual",
                    "origin_code": "manual",
                    "period_start": now,
                    "sequence": 1,
                    "created_at": now,
                }
                for customer_id, grant_id in zip(customer_ids, grant_ids, strict=True)
            ],
        )
        session.execute(
            insert(LedgerEntry.__table__),
            [
                {
                    "id": new_id("ledger_entry"),
                    "organization_id": organization_id,
                    "customer_id": customer_id,
                    "credits_currency_id": currency.id,
                    "grant_id": grant_id,
                    "entry_type": "grant",
                    "amount": GRANT_CREDITS,
                    "effective_at": now,
                    "sequence": 2,
                    "created_at": now,
                }
                for customer_id, grant_id in zip(customer_ids, grant_ids, strict=True)
            ],
        )
    _analyze(store)
    return Tenant(organization_id, created.secret, currency.id, product.id, line.id, customer_ids)


def _analyze(store: Store, *, vacuum: bool = False) -> None:
    """Refresh PostgreSQL's statistics after a bulk load, as autovacuum would within a minute.

    Without them the planner takes each freshly loaded table for nearly empty: looking up a
    batch's 1,000 customers scanned all 10,000 of the organization and compared each with the
    whole list, about 100 ms instead of 2 ms. With `vacuum`, the tables are vacuumed too, as
    autovacuum does after many inserts. Done here, that work does not overlap the measured runs.
    """
    if store.is_sqlite:
        return
    with store.engine.connect() as connection:
        command = "VACUUM (ANALYZE)" if vacuum else "ANALYZE"
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text(command))


def _series(store: Store) -> str:
    """SQL of a relation `series(n)` with n = 0 .. :count - 1."""
    if store.is_sqlite:
        return (
            "WITH RECURSIVE series(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM series WHERE n + 1 < :count), "
        )
    return "WITH series(n) AS (SELECT generate_series(0, :count - 1)), "


def seed_history(store: Store, tenant: Tenant, *, signals: int) -> float:
    """Add `signals` past signals, each with its spend entry, spread over the tenant's customers.

    Each customer's grant is raised by what its history spent, so every grant's remaining still
    equals the sum of its entries. Returns the seconds the statements took.
    """
    started = time.perf_counter()
    sqlite = store.is_sqlite
    past = "datetime('now', '-1 day')" if sqlite else "now() - interval '1 day'"
    data = "'{\"model\": \"gpt-4o-mini\", \"tokens\": 100}'" if sqlite else "'{\"model\": \"gpt-4o-mini\", \"tokens\": 100}'::jsonb"
    # Credits are stored as integers of 10**-9 credits: one credit per past signal.
    one_credit = 1_000_000_000
    customers = (
        "customers_numbered AS MATERIALIZED (SELECT c.id AS customer_id, g.id AS grant_id, "
        "row_number() OVER (ORDER BY c.id) - 1 AS k FROM customers c "
        "JOIN credit_grants g ON g.customer_id = c.id AND g.organization_id = c.organization_id "
        "WHERE c.organization_id = :org) "
    )
    parameters = {
        "count": signals,
        "org": tenant.organization_id,
        "product": tenant.product_id,
        "line": tenant.line_id,
        "currency": tenant.currency_id,
        "customers": len(tenant.customer_ids),
        "credit": one_credit,
        "event": EVENT_NAME,
    }
    with store.transaction() as session:
        session.execute(
            text(
                _series(store)
                + customers
                + "INSERT INTO signals (id, organization_id, customer_id, product_id, event_name, occurred_at, "
                "received_at, data, idempotency_key, product_attribute_id, credit_currency_id, credits_consumed, "
                "credits_pending) "
                f"SELECT 'sig_history_' || n, :org, c.customer_id, :product, :event, {past}, {past}, {data}, "
                "'history-' || n, :line, :currency, :credit, 0 "
                "FROM series JOIN customers_numbered c ON c.k = n % :customers"
            ),
            parameters,
        )
        session.execute(
            text(
                _series(store)
                + customers
                + "INSERT INTO credit_ledger_entries (id, organization_id, customer_id, credits_currency_id, grant_id, "
                "entry_type, amount, signal_id, event_name, product_id, effective_at, sequence, created_at) "
                "SELECT 'ctx_history_' || n, :org, c.customer_id, :currency, c.grant_id, 'spend', -:credit, "
                f"'sig_history_' || n, :event, :product, {past}, -1 - n, {past} "
                "FROM series JOIN customers_numbered c ON c.k = n % :customers"
            ),
            parameters,
        )
        # Raise each grant and its grant entry by the history it spent.
        spent = (
            "(SELECT -COALESCE(SUM(e.amount), 0) FROM credit_ledger_entries e "
            "WHERE e.grant_id = {table}.{column} AND e.entry_type = 'spend' AND e.id LIKE 'ctx_history_%')"
        )
        session.execute(
            text(
                "UPDATE credit_grants SET amount = amount + "
                + spent.format(table="credit_grants", column="id")
                + " WHERE organization_id = :org"
            ),
            parameters,
        )
        session.execute(
            text(
                "UPDATE credit_ledger_entries SET amount = amount + "
                + spent.format(table="credit_ledger_entries", column="grant_id")
                + " WHERE organization_id = :org AND entry_type = 'grant'"
            ),
            parameters,
        )
    _analyze(store, vacuum=True)
    return time.perf_counter() - started
