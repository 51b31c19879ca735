"""Value receipts: create, sync, refresh, seal, publish, archive, and their lines.

A receipt covers one customer, optionally one product or one order, and the period
start_date <= occurred_at < end_date. Its lines are the value types' totals over that scope,
computed when the receipt is created or refreshed. A draft is also refreshed whenever a new
value model version is published. Sealing (status "posted") freezes the lines for good.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.customers.service import get_customer, get_customer_by_external_id
from tallystick.server.errors import ApiError, bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.models import Customer, Order, Product
from tallystick.server.models.value import ValueReceipt, ValueReceiptLine
from tallystick.server.value.definitions import ValueModelDefinition
from tallystick.server.value.evaluation import describe_calculation
from tallystick.server.value.schemas import ValueReceiptRequest
from tallystick.server.value.signal_values import (
    ValueScope,
    active_definition,
    evaluate_stale_signals,
    lock_values,
    summarize,
)

log = logging.getLogger(__name__)

STATUS_DRAFT = "draft"
# The wire status of a sealed receipt.
STATUS_SEALED = "posted"
# Random bytes of a public URL token: 192 bits, 32 URL-safe characters.
_TOKEN_BYTES = 24


@dataclass(frozen=True)
class ReceiptTarget:
    """Whom and what a receipt covers, resolved from a request."""

    customer: Customer
    product_id: str | None
    order_id: str | None
    start: datetime
    end: datetime
    currency: str | None

    @property
    def sync_key(self) -> str:
        return "|".join(
            [self.customer.id, self.product_id or "", self.order_id or "", self.start.isoformat(), self.end.isoformat()]
        )


def resolve_target(session: Session, organization_id: str, body: ValueReceiptRequest) -> ReceiptTarget:
    """Check a create or sync request and resolve its customer, product and order.

    Raises:
        ApiError: 400 for an invalid combination or period, 404 for an unknown id.
    """
    if (body.customer_id is None) == (body.external_customer_id is None):
        raise bad_request("customerId", "send exactly one of customerId or externalCustomerId")
    if body.product is not None and body.order_id is not None:
        raise bad_request("orderId", "send at most one of product or orderId", body.order_id)
    if body.end_date <= body.start_date:
        raise bad_request("endDate", "must be after startDate", body.end_date)

    if body.customer_id is not None:
        customer = get_customer(session, organization_id, body.customer_id)
    else:
        assert body.external_customer_id is not None
        customer = get_customer_by_external_id(session, organization_id, body.external_customer_id)

    product_id = None
    order_id = None
    currency = None
    if body.product is not None:
        product_id = _find_product(session, organization_id, body.product.product_id).id
        currency = body.product.currency.upper() if body.product.currency else None
    if body.order_id is not None:
        order = session.execute(
            select(Order.id, Order.customer_id, Order.product_id).where(
                Order.organization_id == organization_id, Order.id == body.order_id
            )
        ).first()
        if order is None:
            raise not_found("Order", "id", body.order_id)
        if order.customer_id != customer.id:
            raise bad_request("orderId", f"the order belongs to another customer than {customer.id!r}", body.order_id)
        order_id, product_id = order.id, order.product_id
    return ReceiptTarget(
        customer=customer,
        product_id=product_id,
        order_id=order_id,
        start=body.start_date,
        end=body.end_date,
        currency=currency,
    )


def _find_product(session: Session, organization_id: str, reference: str) -> Product:
    """Find a product by id, or else by external id."""
    for column in (Product.id, Product.external_id):
        product = session.scalar(select(Product).where(Product.organization_id == organization_id, column == reference))
        if product is not None:
            return product
    raise not_found("Product", "id or externalId", reference)


def create_receipt(session: Session, organization_id: str, body: ValueReceiptRequest) -> ValueReceipt:
    """Create a receipt for a period that has ended, and populate it. Flushes only."""
    target = resolve_target(session, organization_id, body)
    if target.end > clock.now():
        raise bad_request("endDate", "the period must have ended; use sync for a period in progress", target.end)
    lock_values(session, organization_id)
    definition = _definition_for(session, organization_id, target)
    receipt = _new_receipt(organization_id, target, definition, sync_key=None)
    session.add(receipt)
    session.flush()
    populate(session, receipt, definition)
    log.info("value_receipt.created", extra={"organization_id": organization_id, "value_receipt_id": receipt.id})
    return receipt


def sync_receipt(session: Session, organization_id: str, body: ValueReceiptRequest) -> tuple[ValueReceipt, bool]:
    """Return the receipt for this customer, scope and period, refreshed if a draft, or create one.

    Returns the receipt and whether it was created. Flushes only.
    """
    target = resolve_target(session, organization_id, body)
    lock_values(session, organization_id)
    definition = _definition_for(session, organization_id, target)

    existing = _find_same_period(session, organization_id, target)
    if existing is not None:
        if existing.status == STATUS_DRAFT:
            populate(session, existing, definition)
        return existing, False

    receipt = _new_receipt(organization_id, target, definition, sync_key=target.sync_key)
    try:
        with session.begin_nested():
            session.add(receipt)
            session.flush()
    except IntegrityError:
        # A concurrent sync created it first (only possible on PostgreSQL).
        existing = session.scalar(
            select(ValueReceipt).where(
                ValueReceipt.organization_id == organization_id, ValueReceipt.sync_key == target.sync_key
            )
        )
        if existing is None:
            raise
        return existing, False
    populate(session, receipt, definition)
    log.info("value_receipt.created", extra={"organization_id": organization_id, "value_receipt_id": receipt.id})
    return receipt, True


def _definition_for(session: Session, organization_id: str, target: ReceiptTarget) -> ValueModelDefinition | None:
    definition = active_definition(session, organization_id)
    if target.currency is not None and definition is not None and target.currency != definition.currency:
        raise bad_request(
            "product.currency",
            f"the value model computes money in {definition.currency}, and tallystick converts no currencies",
            target.currency,
        )
    return definition


def _find_same_period(session: Session, organization_id: str, target: ReceiptTarget) -> ValueReceipt | None:
    """Find a receipt with the same natural key; live ones before archived, newest first."""
    return session.scalar(
        select(ValueReceipt)
        .where(
            ValueReceipt.organization_id == organization_id,
            ValueReceipt.customer_id == target.customer.id,
            _equals_or_null(ValueReceipt.product_id, target.product_id),
            _equals_or_null(ValueReceipt.order_id, target.order_id),
            ValueReceipt.start_date == target.start,
            ValueReceipt.end_date == target.end,
        )
        .order_by(ValueReceipt.archived_at.is_not(None), ValueReceipt.created_at.desc())
        .limit(1)
    )


def _equals_or_null(column, value):  # type: ignore[no-untyped-def]
    return column.is_(None) if value is None else column == value


def _new_receipt(
    organization_id: str, target: ReceiptTarget, definition: ValueModelDefinition | None, sync_key: str | None
) -> ValueReceipt:
    now = clock.now()
    return ValueReceipt(
        id=new_id("value_receipt"),
        organization_id=organization_id,
        customer_id=target.customer.id,
        product_id=target.product_id,
        order_id=target.order_id,
        currency=definition.currency if definition else (target.currency or target.customer.default_currency or "USD"),
        start_date=target.start,
        end_date=target.end,
        status=STATUS_DRAFT,
        public_url_token=secrets.token_urlsafe(_TOKEN_BYTES),
        is_published=False,
        total_delivered_value=0,
        sync_key=sync_key,
        created_at=now,
        updated_at=now,
    )


def populate(session: Session, receipt: ValueReceipt, definition: ValueModelDefinition | None) -> None:
    """Recompute a receipt's lines and total from the stored signal values. Flushes only.

    The caller must have taken `lock_values`, because stale signals of the scope are
    evaluated and stored.
    """
    assert receipt.status == STATUS_DRAFT, "sealed receipts are never repopulated"
    organization_id = receipt.organization_id
    scope = ValueScope(
        customer_id=receipt.customer_id, product_id=receipt.product_id, start=receipt.start_date, end=receipt.end_date
    )
    if definition is not None:
        evaluate_stale_signals(session, organization_id, definition, scope)
    summary = summarize(session, organization_id, definition, scope)

    customer = session.get(Customer, receipt.customer_id)
    # The calculation described is the one in effect at the end of the period.
    moment = receipt.end_date - timedelta(microseconds=1)
    session.execute(delete(ValueReceiptLine).where(ValueReceiptLine.receipt_id == receipt.id))
    for position, total in enumerate(summary.totals):
        inputs = []
        if definition is not None:
            value_type = definition.value_type(total.slug)
            if value_type is not None:
                inputs = describe_calculation(
                    definition, value_type, moment, receipt.customer_id, customer.external_id if customer else None
                )
        session.add(
            ValueReceiptLine(
                receipt_id=receipt.id,
                value_type_slug=total.slug,
                organization_id=organization_id,
                position=position,
                name=total.name,
                description=total.description,
                unit=total.unit.to_dict(),
                aggregation=total.aggregation,
                quantity=total.quantity,
                money=total.rounded_money,
                signal_count=total.signal_count,
                unknown_count=total.unknown_count,
                unknown_reasons=dict(total.unknown_reasons),
                inputs=inputs,
            )
        )

    receipt.currency = summary.currency if definition is not None else receipt.currency
    receipt.total_delivered_value = summary.total_money
    receipt.value_model_version_id = definition.version_id if definition else None
    receipt.value_model_version = definition.version if definition else None
    receipt.generated_at = clock.now()
    receipt.updated_at = receipt.generated_at
    session.flush()


def refresh_drafts(session: Session, organization_id: str, definition: ValueModelDefinition | None) -> int:
    """Repopulate every draft receipt of the organization; return how many. Flushes only."""
    drafts = list(
        session.scalars(
            select(ValueReceipt).where(
                ValueReceipt.organization_id == organization_id, ValueReceipt.status == STATUS_DRAFT
            )
        )
    )
    for receipt in drafts:
        populate(session, receipt, definition)
    return len(drafts)


# Lookups and lifecycle


def get_receipt(session: Session, organization_id: str, receipt_id: str) -> ValueReceipt:
    receipt = session.scalar(
        select(ValueReceipt).where(ValueReceipt.organization_id == organization_id, ValueReceipt.id == receipt_id)
    )
    if receipt is None:
        raise not_found("Value receipt", "id", receipt_id)
    return receipt


def list_statement(
    organization_id: str,
    *,
    customer_id: str | None = None,
    order_id: str | None = None,
    product_id: str | None = None,
    include_archived: bool = False,
) -> Select[tuple[ValueReceipt]]:
    """Select receipts, newest first; archived ones only when `include_archived`."""
    statement = select(ValueReceipt).where(ValueReceipt.organization_id == organization_id)
    if customer_id is not None:
        statement = statement.where(ValueReceipt.customer_id == customer_id)
    if order_id is not None:
        statement = statement.where(ValueReceipt.order_id == order_id)
    if product_id is not None:
        statement = statement.where(ValueReceipt.product_id == product_id)
    if not include_archived:
        statement = statement.where(ValueReceipt.archived_at.is_(None))
    return statement.order_by(ValueReceipt.created_at.desc(), ValueReceipt.id)


def receipt_lines(session: Session, receipt_id: str) -> list[ValueReceiptLine]:
    return list(
        session.scalars(
            select(ValueReceiptLine).where(ValueReceiptLine.receipt_id == receipt_id).order_by(ValueReceiptLine.position)
        )
    )


def refresh_receipt(session: Session, organization_id: str, receipt_id: str) -> ValueReceipt:
    """Repopulate a draft with current data.

    Raises:
        ApiError: 409 when the receipt is sealed.
    """
    lock_values(session, organization_id)
    receipt = get_receipt(session, organization_id, receipt_id)
    if receipt.status != STATUS_DRAFT:
        raise ApiError(409, "receipt_sealed", f"Value receipt {receipt_id!r} is sealed; sealed receipts never change")
    populate(session, receipt, active_definition(session, organization_id))
    return receipt


def seal_receipt(session: Session, organization_id: str, receipt_id: str) -> ValueReceipt:
    """Seal a draft with its current lines, which never change again. Sealing twice changes nothing."""
    receipt = get_receipt(session, organization_id, receipt_id)
    if receipt.status == STATUS_DRAFT:
        receipt.status = STATUS_SEALED
        receipt.sealed_at = clock.now()
        receipt.updated_at = receipt.sealed_at
        log.info("value_receipt.sealed", extra={"organization_id": organization_id, "value_receipt_id": receipt.id})
    return receipt


def publish_receipt(
    session: Session, organization_id: str, receipt_id: str, expires_at: datetime | None
) -> ValueReceipt:
    """Make the receipt readable by anyone with its public URL, until `expires_at` if given.

    Raises:
        ApiError: 409 when the receipt is archived; 400 when `expires_at` has passed.
    """
    receipt = get_receipt(session, organization_id, receipt_id)
    if receipt.archived_at is not None:
        raise ApiError(409, "receipt_archived", f"Value receipt {receipt_id!r} is archived; unarchive it before publishing")
    now = clock.now()
    if expires_at is not None and expires_at <= now:
        raise bad_request("publishExpiresAt", "must be in the future", expires_at)
    receipt.is_published = True
    receipt.published_at = now
    receipt.publish_expires_at = expires_at
    receipt.updated_at = now
    return receipt


def unpublish_receipt(session: Session, organization_id: str, receipt_id: str) -> ValueReceipt:
    """Revoke public access; signed private links keep working until they expire."""
    receipt = get_receipt(session, organization_id, receipt_id)
    receipt.is_published = False
    receipt.publish_expires_at = None
    receipt.updated_at = clock.now()
    return receipt


def archive_receipt(session: Session, organization_id: str, receipt_id: str) -> ValueReceipt:
    receipt = get_receipt(session, organization_id, receipt_id)
    if receipt.archived_at is None:
        receipt.archived_at = clock.now()
        receipt.updated_at = receipt.archived_at
    return receipt


def unarchive_receipt(session: Session, organization_id: str, receipt_id: str) -> ValueReceipt:
    receipt = get_receipt(session, organization_id, receipt_id)
    receipt.archived_at = None
    receipt.updated_at = clock.now()
    return receipt


def is_publicly_visible(receipt: ValueReceipt, at: datetime) -> bool:
    """Return whether the public URL alone opens the receipt: published and not expired."""
    return receipt.is_published and (receipt.publish_expires_at is None or receipt.publish_expires_at > at)


def find_by_public_token(session: Session, token: str) -> ValueReceipt | None:
    return session.scalar(select(ValueReceipt).where(ValueReceipt.public_url_token == token))


def public_url(base_url: str, token: str) -> str:
    """Return the receipt page URL under `base_url`, the server root as buyers reach it."""
    return f"{base_url.rstrip('/')}/receipts/{token}"
