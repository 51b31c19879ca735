"""HTTP route that creates customer portal links."""

from __future__ import annotations

from fastapi import Depends, Request

from tallystick.server import clock
from tallystick.server.checkout.routes import public_root
from tallystick.server.customers import service as customers
from tallystick.server.deps import CurrentPrincipal, DbSession, authenticate
from tallystick.server.errors import bad_request
from tallystick.server.portal import service
from tallystick.server.portal.schemas import CustomerPortalCreate, CustomerPortalOut
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES

router = Router(tags=["customer portals"], dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)


@router.post("/customer-portals/", status_code=201, response_model=CustomerPortalOut)
def create_customer_portal(
    body: CustomerPortalCreate, request: Request, principal: CurrentPrincipal, session: DbSession
) -> CustomerPortalOut:
    """Create a short-lived link to the customer's portal; send the customer to its `url`.

    Name the customer by `customerId` or `externalCustomerId`. The link works until
    `expiresAt` (default: one hour, at most 7 days). The portal shows the customer's plan,
    credit balances, usage, invoices and delivered value, and offers an upgrade through a
    checkout that returns to `returnUrl`.
    """
    if body.customer_id is not None and body.external_customer_id is not None:
        raise bad_request("customerId", "send either customerId or externalCustomerId, not both", body.customer_id)
    if body.customer_id is not None:
        customer = customers.get_customer(session, principal.organization_id, body.customer_id)
    elif body.external_customer_id is not None:
        customer = customers.get_customer_by_external_id(session, principal.organization_id, body.external_customer_id)
    else:
        raise bad_request("customerId", "send customerId or externalCustomerId")

    now = clock.now()
    portal = service.create_portal(session, customer, return_url=body.return_url, expires_at=body.expires_at, now=now)
    return CustomerPortalOut(
        id=portal.id,
        customer_id=customer.id,
        url=service.portal_url(public_root(request), request.app.state.secret_key, portal),
        status=service.portal_status(portal, now),
        return_url=portal.return_url,
        expires_at=portal.expires_at,
        created_at=portal.created_at,
    )
