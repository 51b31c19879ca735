"""Low-balance thresholds: one per credit currency, set by the operator."""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.catalog.service import get_currency
from tallystick.server.errors import bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.ledger.service import check_credit_amount
from tallystick.server.models import LowBalanceThreshold

log = logging.getLogger(__name__)


def parse_threshold(raw: str | int | Decimal) -> Decimal:
    """Parse a threshold sent as a decimal string or a number; raise a 400 if it is not one."""
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise bad_request("threshold", "must be a decimal number such as \"100\"", raw) from None
    check_credit_amount("threshold", value)
    return value


def list_thresholds(session: Session, organization_id: str) -> list[LowBalanceThreshold]:
    statement = (
        select(LowBalanceThreshold)
        .where(LowBalanceThreshold.organization_id == organization_id)
        .order_by(LowBalanceThreshold.created_at, LowBalanceThreshold.id)
    )
    return list(session.scalars(statement))


def set_threshold(
    session: Session, organization_id: str, currency_id: str, threshold: Decimal
) -> LowBalanceThreshold:
    """Create or replace the currency's threshold; a 404 when the currency is not the organization's."""
    get_currency(session, organization_id, currency_id)

    now = clock.now()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # An upsert, so two concurrent first requests cannot collide on the unique constraint.
    statement = insert(LowBalanceThreshold).values(
        id=new_id("low_balance_threshold"),
        organization_id=organization_id,
        credits_currency_id=currency_id,
        threshold=threshold,
        created_at=now,
        updated_at=now,
    )
    statement = statement.on_conflict_do_update(
        index_elements=["organization_id", "credits_currency_id"],
        set_={"threshold": statement.excluded.threshold, "updated_at": now},
    )
    session.flush()
    session.execute(statement)
    row = _find(session, organization_id, currency_id)
    assert row is not None
    session.refresh(row)
    log.info(
        "webhooks.low_balance_threshold_set",
        extra={"organization_id": organization_id, "credits_currency_id": currency_id},
    )
    return row


def delete_threshold(session: Session, organization_id: str, currency_id: str) -> None:
    row = _find(session, organization_id, currency_id)
    if row is None:
        raise not_found("Low-balance threshold", "creditsCurrencyId", currency_id)
    session.delete(row)
    session.flush()


def _find(session: Session, organization_id: str, currency_id: str) -> LowBalanceThreshold | None:
    return session.scalar(
        select(LowBalanceThreshold).where(
            LowBalanceThreshold.organization_id == organization_id,
            LowBalanceThreshold.credits_currency_id == currency_id,
        )
    )
