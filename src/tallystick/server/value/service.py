"""Value model versions: upload, history, backfill, and delivered value totals for other pages.

Every change to the value model, whether a whole upload or a value metric edit, writes a new
version that becomes active, archives the previous one, evaluates every signal again under it
and repopulates the draft value receipts. Sealed receipts keep their figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.errors import ApiError, bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.models.value import ValueModelVersion
from tallystick.server.value import receipts
from tallystick.server.value.content import prepare_content
from tallystick.server.value.definitions import ContentError
from tallystick.server.value.schemas import ValueModelContentIn
from tallystick.server.value.signal_values import (
    DeliveredValueSummary,
    ValueScope,
    active_definition,
    active_version,
    backfill_signal_values,
    definition_of,
    lock_values,
    summarize,
    summarize_by_customer,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillResult:
    version: ValueModelVersion
    signals_evaluated: int
    receipts_refreshed: int


def content_error(error: ContentError) -> ApiError:
    return bad_request(error.path, error.message, error.value)


def get_active_version(session: Session, organization_id: str) -> ValueModelVersion:
    """Return the active version or raise the API's 404."""
    version = active_version(session, organization_id)
    if version is None:
        raise ApiError(404, "not_found", "This organization has no value model yet; upload one with PUT /value-models/")
    return version


def get_version(session: Session, organization_id: str, number: int) -> ValueModelVersion:
    version = session.scalar(
        select(ValueModelVersion).where(
            ValueModelVersion.organization_id == organization_id, ValueModelVersion.version == number
        )
    )
    if version is None:
        raise not_found("Value model version", "version", str(number))
    return version


def versions_statement(organization_id: str) -> Select[tuple[ValueModelVersion]]:
    """Select the organization's versions, newest first."""
    return (
        select(ValueModelVersion)
        .where(ValueModelVersion.organization_id == organization_id)
        .order_by(ValueModelVersion.version.desc())
    )


def upload_content(
    session: Session,
    organization_id: str,
    content: ValueModelContentIn,
    *,
    effective_from: datetime | None = None,
    effective_to: datetime | None = None,
) -> BackfillResult:
    """Check `content` and make it the new active version. Flushes only.

    Content and dates equal to the active version's change nothing and return that version, so
    a client that repeats an upload after a lost response does not add a version and evaluate
    every signal again.

    Raises:
        ApiError: 400 naming the first problem in the content.
    """
    try:
        stored = prepare_content(content)
    except ContentError as error:
        raise content_error(error) from None
    lock_values(session, organization_id)
    current = active_version(session, organization_id)
    if (
        current is not None
        and current.content == stored
        and (current.effective_from, current.effective_to) == (effective_from, effective_to)
    ):
        log.info(
            "value_model.unchanged",
            extra={"organization_id": organization_id, "value_model_version_id": current.id, "version": current.version},
        )
        return BackfillResult(current, signals_evaluated=0, receipts_refreshed=0)
    return publish_version(
        session, organization_id, stored, effective_from=effective_from, effective_to=effective_to
    )


def publish_version(
    session: Session,
    organization_id: str,
    stored: dict[str, Any],
    *,
    effective_from: datetime | None = None,
    effective_to: datetime | None = None,
    expected_active_version: int | None = None,
) -> BackfillResult:
    """Write checked content as the next version, activate it and backfill. Flushes only.

    `effective_from` and `effective_to` are kept and returned as they were sent.
    NOTE: they do not limit which signals the version evaluates: the active version applies to
    every signal, and a value type's calculationTimeline is what varies a calculation in time.

    Raises:
        ApiError: 409 when `expected_active_version` is given and another version is active.
    """
    lock_values(session, organization_id)
    current = active_version(session, organization_id)
    check_expected_version(current, expected_active_version)

    if effective_from and effective_to and effective_to <= effective_from:
        raise bad_request("effectiveTo", "must be after effectiveFrom", effective_to)

    latest = session.scalar(
        select(func.max(ValueModelVersion.version)).where(ValueModelVersion.organization_id == organization_id)
    )
    now = clock.now()
    if current is not None:
        current.status = "archived"
        current.archived_at = now
    version = ValueModelVersion(
        id=new_id("value_model_version"),
        organization_id=organization_id,
        version=(latest or 0) + 1,
        status="active",
        content=stored,
        created_at=now,
        activated_at=now,
        effective_from=effective_from,
        effective_to=effective_to,
    )
    session.add(version)
    session.flush()
    log.info(
        "value_model.published",
        extra={"organization_id": organization_id, "value_model_version_id": version.id, "version": version.version},
    )
    return _backfill(session, organization_id, version)


def check_expected_version(current: ValueModelVersion | None, expected: int | None) -> None:
    if expected is None:
        return
    actual = current.version if current is not None else 0
    if actual != expected:
        raise ApiError(
            409,
            "version_conflict",
            f"Invalid expectedActiveVersion {expected}: the active value model version is {actual}; "
            "read the value model again and retry",
            fields=[{"field": "expectedActiveVersion", "message": f"active version is {actual}", "value": expected}],
        )


def backfill(session: Session, organization_id: str) -> BackfillResult:
    """Evaluate every signal again under the active version and repopulate draft receipts."""
    lock_values(session, organization_id)
    version = get_active_version(session, organization_id)
    return _backfill(session, organization_id, version)


def _backfill(session: Session, organization_id: str, version: ValueModelVersion) -> BackfillResult:
    definition = definition_of(version)
    evaluated = backfill_signal_values(session, organization_id, definition)
    refreshed = receipts.refresh_drafts(session, organization_id, definition)
    return BackfillResult(version=version, signals_evaluated=evaluated, receipts_refreshed=refreshed)


def delivered_value(
    session: Session,
    organization_id: str,
    *,
    customer_id: str | None = None,
    product_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> DeliveredValueSummary:
    """Return the delivered value per value type for a customer, product and period.

    For the dashboard and the customer portal: it only reads, so it runs in a read session,
    and signals not yet evaluated under the active version are evaluated in memory.
    """
    definition = active_definition(session, organization_id)
    scope = ValueScope(customer_id=customer_id, product_id=product_id, start=start, end=end)
    return summarize(session, organization_id, definition, scope)


def delivered_value_by_customer(
    session: Session,
    organization_id: str,
    *,
    product_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, DeliveredValueSummary]:
    """Return the delivered value per customer id, for dashboard tables. Only reads."""
    definition = active_definition(session, organization_id)
    scope = ValueScope(product_id=product_id, start=start, end=end)
    return summarize_by_customer(session, organization_id, definition, scope)
