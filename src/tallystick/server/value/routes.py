"""HTTP routes of delivered value: value metrics, value models and value receipts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.customers.service import find_customer_by_external_id
from tallystick.server.deps import CurrentPrincipal, DbSession, ReadSession, authenticate
from tallystick.server.errors import bad_request
from tallystick.server.filters import ExternalCustomerFilter, parse_bool_filter
from tallystick.server.models import Customer
from tallystick.server.models.value import ValueModelVersion, ValueReceipt
from tallystick.server.pagination import Page, paginate, pagination_body
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES, ErrorBody
from tallystick.server.value import links, metrics, receipts, service
from tallystick.server.value.schemas import (
    BackfillOut,
    PublishRequest,
    ReceiptLinkOut,
    ReceiptLinkRequest,
    SuccessOut,
    ValueMetricCreate,
    ValueMetricListOut,
    ValueMetricUpdate,
    ValueMetricWriteAckOut,
    ValueModelDetailOut,
    ValueModelSummaryOut,
    ValueModelUpdate,
    ValueModelVersionListOut,
    ValueReceiptDetailOut,
    ValueReceiptLineOut,
    ValueReceiptListOut,
    ValueReceiptRequest,
    ValueReceiptSummaryOut,
    ValueReceiptSyncOut,
)
from tallystick.server.value.calculations import decimal_text

router = Router(dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)

CONFLICT = {
    409: {"model": ErrorBody, "description": "The value model or receipt changed in a way that forbids this request."}
}
# Largest version number a path accepts: the column is a 32-bit integer.
MAX_VERSION = 2**31 - 1


# Value metrics


@router.post("/value-metrics/", status_code=201, response_model=ValueMetricWriteAckOut, tags=["value metrics"], responses=CONFLICT)
def create_value_metric(body: ValueMetricCreate, principal: CurrentPrincipal, session: DbSession) -> ValueMetricWriteAckOut:
    """Add a value metric (a value type with one formula and one signal binding).

    Publishes a new value model version and evaluates every signal again. Money is in minor
    units: `monetaryConversion.valuePerUnit` 6000 is $60.00 per unit.
    """
    slug, name, version = metrics.create_metric(session, principal.organization_id, body)
    return ValueMetricWriteAckOut(slug=slug, name=name, version=version)


@router.get("/value-metrics/", response_model=ValueMetricListOut, tags=["value metrics"])
def list_value_metrics(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    include_archived: Annotated[str | None, Query(alias="includeArchived")] = None,
) -> ValueMetricListOut:
    """List the metrics of the active value model, without formulas."""
    archived = parse_bool_filter("includeArchived", include_archived) or False
    items = metrics.list_metrics(session, principal.organization_id, include_archived=archived)
    window = items[page.offset : page.offset + page.limit]
    return ValueMetricListOut(data=window, pagination=pagination_body(page, len(items)))


@router.get("/value-metrics/{slug}", tags=["value metrics"])
def get_value_metric(slug: str, principal: CurrentPrincipal, session: ReadSession) -> dict:
    """Return one metric with its formula, signal binding and monetary conversion."""
    return metrics.get_metric(session, principal.organization_id, slug)


@router.patch("/value-metrics/{slug}", response_model=ValueMetricWriteAckOut, tags=["value metrics"], responses=CONFLICT)
def update_value_metric(
    slug: str, body: ValueMetricUpdate, principal: CurrentPrincipal, session: DbSession
) -> ValueMetricWriteAckOut:
    """Change a metric; fields not sent are left alone. `archivedAt: null` restores it."""
    slug, name, version = metrics.update_metric(session, principal.organization_id, slug, body)
    return ValueMetricWriteAckOut(slug=slug, name=name, version=version)


@router.delete("/value-metrics/{slug}", response_model=ValueMetricWriteAckOut, tags=["value metrics"], responses=CONFLICT)
def archive_value_metric(
    slug: str,
    principal: CurrentPrincipal,
    session: DbSession,
    expected_active_version: Annotated[int | None, Query(alias="expectedActiveVersion")] = None,
) -> ValueMetricWriteAckOut:
    """Archive a metric. Its signals are still evaluated, so receipts keep resolving it."""
    slug, name, version = metrics.archive_metric(session, principal.organization_id, slug, expected_active_version)
    return ValueMetricWriteAckOut(slug=slug, name=name, version=version)


# Value models


def version_out(version: ValueModelVersion) -> ValueModelDetailOut:
    return ValueModelDetailOut(
        id=version.id,
        version=version.version,
        content=version.content,
        created_at=version.created_at,
        activated_at=version.activated_at,
        effective_from=version.effective_from,
        effective_to=version.effective_to,
        status=version.status,
    )


@router.get("/value-models/", response_model=ValueModelDetailOut, tags=["value models"])
def get_current_value_model(principal: CurrentPrincipal, session: ReadSession) -> ValueModelDetailOut:
    """Return the active value model version with its content."""
    return version_out(service.get_active_version(session, principal.organization_id))


@router.put("/value-models/", response_model=ValueModelDetailOut, tags=["value models"])
def update_value_model(body: ValueModelUpdate, principal: CurrentPrincipal, session: DbSession) -> ValueModelDetailOut:
    """Upload the whole value model as a new active version.

    The content is checked first: formulas, references, units, and a value for every
    variable. Then every signal is evaluated again and draft value receipts are repopulated.
    """
    result = service.upload_content(
        session,
        principal.organization_id,
        body.content,
        effective_from=body.effective_from,
        effective_to=body.effective_to,
    )
    return version_out(result.version)


@router.get("/value-models/versions", response_model=ValueModelVersionListOut, tags=["value models"])
def list_value_model_versions(principal: CurrentPrincipal, session: ReadSession, page: Page) -> ValueModelVersionListOut:
    """List value model versions, newest first, without their content."""
    rows, pagination = paginate(session, service.versions_statement(principal.organization_id), page)
    return ValueModelVersionListOut(
        data=[
            ValueModelSummaryOut(
                id=row.id,
                version=row.version,
                status=row.status,
                created_at=row.created_at,
                activated_at=row.activated_at,
                archived_at=row.archived_at,
                effective_from=row.effective_from,
                effective_to=row.effective_to,
            )
            for row in rows
        ],
        pagination=pagination,
    )


@router.get("/value-models/versions/{version}", response_model=ValueModelDetailOut, tags=["value models"])
def get_value_model_version(
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)], principal: CurrentPrincipal, session: ReadSession
) -> ValueModelDetailOut:
    """Return one version, active or archived, with its content."""
    return version_out(service.get_version(session, principal.organization_id, version))


@router.post("/value-models/backfill", response_model=BackfillOut, tags=["value models"])
def refresh_value_model_backfill(principal: CurrentPrincipal, session: DbSession) -> BackfillOut:
    """Evaluate every signal again under the active version and repopulate draft receipts."""
    result = service.backfill(session, principal.organization_id)
    return BackfillOut(
        value_model_id=result.version.id,
        version=result.version.version,
        signals_evaluated=result.signals_evaluated,
        receipts_refreshed=result.receipts_refreshed,
    )


# Value receipts


def _base_url(request: Request) -> str:
    configured = getattr(request.app.state.settings, "public_url", None)
    return configured or str(request.base_url)


def _secret(request: Request) -> str:
    secret = getattr(request.app.state, "secret_key", None)
    if not secret:
        raise RuntimeError("the application has no secret_key to sign receipt links with")
    return secret


def sync_out(receipt: ValueReceipt, request: Request) -> ValueReceiptSyncOut:
    return ValueReceiptSyncOut(
        id=receipt.id,
        status=receipt.status,
        public_url_token=receipt.public_url_token,
        public_url=receipts.public_url(_base_url(request), receipt.public_url_token),
        generated_at=receipt.generated_at,
    )


def _summary_fields(receipt: ValueReceipt, customer: Customer | None, request: Request) -> dict:
    return {
        "id": receipt.id,
        "status": receipt.status,
        "public_url_token": receipt.public_url_token,
        "public_url": receipts.public_url(_base_url(request), receipt.public_url_token),
        "is_published": receipt.is_published,
        "customer_id": receipt.customer_id,
        "customer_name": customer.name if customer else None,
        "customer_external_id": customer.external_id if customer else None,
        "order_id": receipt.order_id,
        "product_id": receipt.product_id,
        "currency": receipt.currency,
        "start_date": receipt.start_date,
        "end_date": receipt.end_date,
        "total_delivered_value": receipt.total_delivered_value,
        "archived_at": receipt.archived_at,
        "created_at": receipt.created_at,
    }


def detail_out(session: Session, receipt: ValueReceipt, request: Request) -> ValueReceiptDetailOut:
    customer = session.get(Customer, receipt.customer_id)
    lines = [
        ValueReceiptLineOut(
            value_type_slug=line.value_type_slug,
            name=line.name,
            description=line.description,
            unit=line.unit,
            aggregation=line.aggregation,
            quantity=decimal_text(line.quantity),
            money=line.money,
            signal_count=line.signal_count,
            unknown_count=line.unknown_count,
            unknown_reasons=line.unknown_reasons,
            inputs=line.inputs,
        )
        for line in receipts.receipt_lines(session, receipt.id)
    ]
    return ValueReceiptDetailOut(
        **_summary_fields(receipt, customer, request),
        published_at=receipt.published_at,
        publish_expires_at=receipt.publish_expires_at,
        allow_embed=False,
        sealed_at=receipt.sealed_at,
        generated_at=receipt.generated_at,
        value_model_version=receipt.value_model_version,
        lines=lines,
    )


@router.post("/value-receipts/", status_code=201, response_model=ValueReceiptSyncOut, tags=["value receipts"])
def create_value_receipt(
    body: ValueReceiptRequest, principal: CurrentPrincipal, session: DbSession, request: Request
) -> ValueReceiptSyncOut:
    """Create a receipt for a customer and a period that has ended (endDate exclusive).

    Every call creates a new receipt. Scope it to a product (id or external id) or to an
    order with `product` or `orderId`, at most one of them.
    """
    receipt = receipts.create_receipt(session, principal.organization_id, body)
    return sync_out(receipt, request)


@router.get("/value-receipts/", response_model=ValueReceiptListOut, tags=["value receipts"])
def list_value_receipts(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    request: Request,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    external_customer_id: ExternalCustomerFilter = None,
    order_id: Annotated[str | None, Query(alias="orderId")] = None,
    product_id: Annotated[str | None, Query(alias="productId")] = None,
    archived: Annotated[str | None, Query(description="true to include archived receipts.")] = None,
) -> ValueReceiptListOut:
    """List receipts, newest first. The response is `{data, total}`, without a pagination object."""
    organization_id = principal.organization_id
    if external_customer_id is not None:
        customer = find_customer_by_external_id(session, organization_id, external_customer_id)
        if customer is None or (customer_id is not None and customer.id != customer_id):
            return ValueReceiptListOut(data=[], total=0)
        customer_id = customer.id
    statement = receipts.list_statement(
        organization_id,
        customer_id=customer_id,
        order_id=order_id,
        product_id=product_id,
        include_archived=parse_bool_filter("archived", archived) or False,
    )
    rows, pagination = paginate(session, statement, page)
    customer_ids = {row.customer_id for row in rows}
    customers = {
        customer.id: customer
        for customer in session.scalars(select(Customer).where(Customer.id.in_(customer_ids)))
    } if customer_ids else {}
    return ValueReceiptListOut(
        data=[ValueReceiptSummaryOut(**_summary_fields(row, customers.get(row.customer_id), request)) for row in rows],
        total=pagination["total"],
    )


@router.post(
    "/value-receipts/sync",
    response_model=ValueReceiptSyncOut,
    tags=["value receipts"],
    responses={201: {"model": ValueReceiptSyncOut, "description": "No receipt existed; this one was created."}},
)
def sync_value_receipt(
    body: ValueReceiptRequest, principal: CurrentPrincipal, session: DbSession, request: Request, response: Response
) -> ValueReceiptSyncOut:
    """Return the receipt for this customer, scope and period (200), or create it (201).

    A draft is refreshed with current data first; a sealed receipt is returned as it is.
    """
    receipt, created = receipts.sync_receipt(session, principal.organization_id, body)
    response.status_code = 201 if created else 200
    return sync_out(receipt, request)


@router.get("/value-receipts/{receipt_id}", response_model=ValueReceiptDetailOut, tags=["value receipts"])
def get_value_receipt_by_id(
    receipt_id: str, principal: CurrentPrincipal, session: ReadSession, request: Request
) -> ValueReceiptDetailOut:
    """Return a receipt with its publishing state and its lines."""
    receipt = receipts.get_receipt(session, principal.organization_id, receipt_id)
    return detail_out(session, receipt, request)


@router.post("/value-receipts/{receipt_id}/refresh", response_model=ValueReceiptSyncOut, tags=["value receipts"], responses=CONFLICT)
def refresh_value_receipt(
    receipt_id: str, principal: CurrentPrincipal, session: DbSession, request: Request
) -> ValueReceiptSyncOut:
    """Repopulate a draft with current data. A sealed receipt returns 409."""
    receipt = receipts.refresh_receipt(session, principal.organization_id, receipt_id)
    return sync_out(receipt, request)


@router.post("/value-receipts/{receipt_id}/seal", response_model=SuccessOut, tags=["value receipts"])
def seal_value_receipt(receipt_id: str, principal: CurrentPrincipal, session: DbSession) -> SuccessOut:
    """Seal a draft with its current figures (status posted). They never change again."""
    receipts.seal_receipt(session, principal.organization_id, receipt_id)
    return SuccessOut(success=True)


@router.post("/value-receipts/{receipt_id}/publish", response_model=ValueReceiptDetailOut, tags=["value receipts"], responses=CONFLICT)
def publish_value_receipt(
    receipt_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    request: Request,
    body: PublishRequest | None = None,
) -> ValueReceiptDetailOut:
    """Open the receipt's public URL to anyone, until `publishExpiresAt` when given."""
    expires_at = body.publish_expires_at if body is not None else None
    receipt = receipts.publish_receipt(session, principal.organization_id, receipt_id, expires_at)
    return detail_out(session, receipt, request)


@router.post("/value-receipts/{receipt_id}/unpublish", response_model=ValueReceiptDetailOut, tags=["value receipts"])
def unpublish_value_receipt(
    receipt_id: str, principal: CurrentPrincipal, session: DbSession, request: Request
) -> ValueReceiptDetailOut:
    """Close the public URL; it then needs a signed link."""
    receipt = receipts.unpublish_receipt(session, principal.organization_id, receipt_id)
    return detail_out(session, receipt, request)


@router.post("/value-receipts/{receipt_id}/archive", response_model=SuccessOut, tags=["value receipts"])
def archive_value_receipt(receipt_id: str, principal: CurrentPrincipal, session: DbSession) -> SuccessOut:
    """Hide the receipt from lists unless `archived=true`."""
    receipts.archive_receipt(session, principal.organization_id, receipt_id)
    return SuccessOut(success=True)


@router.post("/value-receipts/{receipt_id}/unarchive", response_model=SuccessOut, tags=["value receipts"])
def unarchive_value_receipt(receipt_id: str, principal: CurrentPrincipal, session: DbSession) -> SuccessOut:
    receipts.unarchive_receipt(session, principal.organization_id, receipt_id)
    return SuccessOut(success=True)


@router.post("/value-receipts/{receipt_id}/links", response_model=ReceiptLinkOut, tags=["value receipts"])
def create_value_receipt_link(
    receipt_id: str,
    principal: CurrentPrincipal,
    session: ReadSession,
    request: Request,
    body: ReceiptLinkRequest | None = None,
) -> ReceiptLinkOut:
    """Make a signed link that opens the receipt, published or not, until it expires.

    Not part of the Paid API. The default lifetime is one hour, the maximum 30 days.
    """
    receipt = receipts.get_receipt(session, principal.organization_id, receipt_id)
    seconds = body.expires_in_seconds if body is not None else None
    try:
        expires_at = links.link_expiry(clock.now(), seconds)
    except ValueError as error:
        raise bad_request("expiresInSeconds", str(error), seconds) from None
    token = links.sign_access(_secret(request), receipt.id, expires_at)
    url = receipts.public_url(_base_url(request), receipt.public_url_token) + f"?access={token}"
    return ReceiptLinkOut(url=url, expires_at=expires_at)
