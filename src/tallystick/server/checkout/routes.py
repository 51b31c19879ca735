"""HTTP routes of checkouts: create, list, get and archive."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from tallystick.server import clock
from tallystick.server.checkout import service
from tallystick.server.checkout.schemas import (
    CHECKOUT_STATUSES,
    CheckoutCreate,
    CheckoutDetailsOut,
    CheckoutListOut,
    checkout_out,
)
from tallystick.server.deps import CurrentPrincipal, DbSession, ReadSession, authenticate
from tallystick.server.filters import parse_choice_filter
from tallystick.server.pagination import Page, paginate
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES, EmptyResponse

router = Router(tags=["checkouts"], dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)


def public_root(request: Request) -> str:
    """Return the server's root URL as buyers reach it: the configured public URL, else the
    root of this request."""
    configured = request.app.state.settings.public_url
    return configured or str(request.base_url)


@router.post("/checkouts/", status_code=201, response_model=CheckoutDetailsOut)
def create_checkout(
    body: CheckoutCreate, request: Request, principal: CurrentPrincipal, session: DbSession
) -> CheckoutDetailsOut:
    """Create a hosted checkout and return its `url`, where the app sends the buyer.

    Send `externalCustomerId` (created on first purchase), `customerId`, or neither for an
    anonymous buyer, whose name and email the page collects. When the buyer has paid,
    tallystick creates the order, grants the plan's credits and redirects to `successUrl`
    with `{CHECKOUT_ID}` replaced by the checkout id. Before granting access, the app should
    read the checkout and check that its status is completed and that its
    `externalCustomerId` is the signed-in user's.
    """
    now = clock.now()
    checkout = service.create_checkout(
        session, principal.organization_id, body, public_root=public_root(request), now=now
    )
    return checkout_out(checkout, service.effective_status(checkout, now))


@router.get("/checkouts/", response_model=CheckoutListOut)
def list_checkouts(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    status: Annotated[str | None, Query(description="active, completed, expired or archived.")] = None,
) -> CheckoutListOut:
    """List checkouts, newest first."""
    now = clock.now()
    chosen = parse_choice_filter("status", status, CHECKOUT_STATUSES)
    rows, pagination = paginate(session, service.checkouts_statement(principal.organization_id, chosen, now), page)
    data = [checkout_out(row, service.effective_status(row, now)) for row in rows]
    return CheckoutListOut.model_validate({"data": data, "pagination": pagination})


@router.get("/checkouts/{checkout_id}", response_model=CheckoutDetailsOut)
def get_checkout(checkout_id: str, principal: CurrentPrincipal, session: ReadSession) -> CheckoutDetailsOut:
    """Read a checkout; once completed it carries `orderId` and `selectedProduct`."""
    now = clock.now()
    checkout = service.get_checkout(session, principal.organization_id, checkout_id)
    return checkout_out(
        checkout, service.effective_status(checkout, now), service.selected_product(session, checkout)
    )


@router.delete("/checkouts/{checkout_id}", response_model=EmptyResponse)
def archive_checkout(checkout_id: str, principal: CurrentPrincipal, session: DbSession) -> EmptyResponse:
    """Archive a checkout so it can no longer be paid. A completed checkout stays completed."""
    checkout = service.get_checkout(session, principal.organization_id, checkout_id)
    service.archive_checkout(session, checkout, clock.now())
    return EmptyResponse()
