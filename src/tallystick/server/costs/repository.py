"""SQL of cost tracking: inserting cost records once, and the lookups that pricing needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server.bulk_sql import insert_rows
from tallystick.server.costs.pricing import OverridePrice
from tallystick.server.customers.service import get_or_create_by_external_id, live_customers
from tallystick.server.models import Customer, Product
from tallystick.server.models.cost import CostRecord, PriceOverride

_COST_TABLE = CostRecord.__table__


@dataclass(frozen=True)
class InsertedCost:
    """A cost record this transaction inserted, with the fields attribution matches on."""

    id: str
    trace_id: str | None
    customer_id: str | None
    paid_scope_id: int | None


def insert_cost_rows(session: Session, rows: list[dict[str, Any]]) -> list[InsertedCost]:
    """Insert cost rows, skipping any whose span or idempotency key is already stored.

    One statement for the whole list: ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so a
    resent batch costs one round trip and returns only the rows that are new. Every row must
    carry the same keys (the table's column names). On PostgreSQL the rows travel as one JSON
    parameter (see `bulk_sql.insert_rows`); a placeholder per value made psycopg and
    SQLAlchemy spend more time on a 512-span export than PostgreSQL did.
    """
    inserted = insert_rows(
        session, _COST_TABLE, rows, skip_conflicts_on=(), returning=("id", "trace_id", "customer_id", "paid_scope_id")
    )
    return [InsertedCost(*row) for row in inserted]


def load_overrides(session: Session, organization_id: str) -> list[OverridePrice]:
    rows = session.scalars(
        select(PriceOverride).where(PriceOverride.organization_id == organization_id)
    )
    return [override_price(row) for row in rows]


def override_price(row: PriceOverride) -> OverridePrice:
    return OverridePrice(
        id=row.id,
        provider=row.provider,
        model=row.model,
        input_per_mtok=row.input_per_mtok,
        output_per_mtok=row.output_per_mtok,
        cache_read_per_mtok=row.cache_read_per_mtok,
        cache_write_per_mtok=row.cache_write_per_mtok,
        per_image=row.per_image,
        per_audio_second=row.per_audio_second,
        per_request=row.per_request,
    )


def product_ids_by_external_id(
    session: Session, organization_id: str, external_ids: Iterable[str]
) -> dict[str, str]:
    """Map external product ids to product ids; cost tracking never creates products."""
    wanted = set(external_ids)
    if not wanted:
        return {}
    rows = session.execute(
        select(Product.external_id, Product.id).where(
            Product.organization_id == organization_id, Product.external_id.in_(wanted)
        )
    )
    return {external_id: product_id for external_id, product_id in rows}


def existing_product_ids(session: Session, organization_id: str, ids: Iterable[str]) -> set[str]:
    wanted = set(ids)
    if not wanted:
        return set()
    return set(
        session.scalars(
            select(Product.id).where(Product.organization_id == organization_id, Product.id.in_(wanted))
        )
    )


def customer_ids_by_external_id(
    session: Session, organization_id: str, external_ids: Iterable[str], *, create: bool
) -> dict[str, str]:
    """Map external customer ids to customer ids, creating missing customers when `create`.

    Customers are created the way signals create them, so a trace that arrives before the
    customer's first signal still resolves to the same customer.
    """
    wanted = sorted(set(external_ids))
    if not wanted:
        return {}
    rows = session.execute(
        live_customers(organization_id)
        .with_only_columns(Customer.external_id, Customer.id)
        .where(Customer.external_id.in_(wanted))
    )
    found = {external_id: customer_id for external_id, customer_id in rows}
    if create:
        # Sorted, the same order signal ingestion uses, so concurrent creators do not deadlock.
        for external_id in wanted:
            if external_id not in found:
                customer, _ = get_or_create_by_external_id(session, organization_id, external_id)
                found[external_id] = customer.id
    return found


def existing_customer_ids(session: Session, organization_id: str, ids: Iterable[str]) -> set[str]:
    wanted = set(ids)
    if not wanted:
        return set()
    return set(
        session.scalars(
            live_customers(organization_id).with_only_columns(Customer.id).where(Customer.id.in_(wanted))
        )
    )
