"""The customer portal page at /portal/{token}, and its upgrade button.

The page only reads, except the upgrade form, which creates a checkout for the customer and
sends the browser to it. That form carries a token signed with the server secret and bound to
the portal and to a random cookie of the browser that loaded the page, so another site cannot
post it (CSRF).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import ValidationError
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.checkout import service as checkouts
from tallystick.server.checkout.routes import public_root
from tallystick.server.checkout.schemas import CheckoutCreate
from tallystick.server.dashboard import customer_view
from tallystick.server.dashboard.session import read_form
from tallystick.server.errors import ApiError
from tallystick.server.portal.service import (
    OpenedPortal,
    PortalClosed,
    open_portal,
    portal_url,
    upgrade_offers,
)
from tallystick.server.value.links import sign_access
from tallystick.server.web import PAGE_HEADERS, PageError, templates

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

BROWSER_COOKIE = "tallystick_portal_browser"
_FORM_SALT = "tallystick.portal-upgrade"
# How long the upgrade form can be submitted after the page was rendered, in seconds.
FORM_MAX_AGE_SECONDS = 3600
RECENT_SIGNALS = 10

_CLOSED = {
    "invalid": (404, "Portal link not valid", "This link does not open a customer portal. Ask for a new link from the app."),
    "expired": (410, "This portal link has expired", "Portal links work for a short time. Open the portal again from the app."),
}


def _open(request: Request, session: Session, token: str) -> OpenedPortal:
    try:
        return open_portal(session, request.app.state.secret_key, token, clock.now())
    except PortalClosed as closed:
        status, title, text = _CLOSED[closed.reason]
        raise PageError(status, title, text) from None


def _form_serializer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        request.app.state.secret_key, salt=_FORM_SALT, signer_kwargs={"digest_method": hashlib.sha256}
    )


@router.get("/portal/{token}")
def portal_page(request: Request, token: str) -> Response:
    with request.app.state.store.read_sessions() as session:
        opened = _open(request, session, token)
        return _render(request, session, opened, token, error=None, status_code=200)


def _render(
    request: Request, session: Session, opened: OpenedPortal, token: str, *, error: str | None, status_code: int
) -> Response:
    organization_id = opened.customer.organization_id
    customer = opened.customer
    now = clock.now()
    browser = request.cookies.get(BROWSER_COOKIE) or secrets.token_urlsafe(18)

    receipts = customer_view.value_receipts(session, organization_id, customer.id)
    context: dict[str, Any] = {
        "customer": customer,
        "portal": opened.portal,
        "token": token,
        "orders": [view for view in customer_view.order_views(session, organization_id, customer.id, now) if view.order.status == "active"],
        "balances": customer_view.balance_cards(session, organization_id, customer.id, now),
        "usage_charts": customer_view.usage_charts(session, organization_id, customer.id, now),
        "signals": customer_view.recent_signals(session, organization_id, customer.id, RECENT_SIGNALS),
        "invoices": customer_view.invoices(session, organization_id, customer.id),
        "value": customer_view.delivered_value(session, organization_id, customer.id),
        "receipts": receipts,
        "receipt_access": _receipt_access(request, opened, receipts),
        "form_token": _form_serializer(request).dumps({"portal": opened.portal.id, "browser": browser}),
        "can_upgrade": bool(upgrade_offers(session, opened.customer)),
        "error": error,
        # The shared tables show customers their own empty-state texts, not setup hints.
        "for_customer": True,
    }
    response = templates.TemplateResponse(
        request, "portal/page.html", context, status_code=status_code, headers=PAGE_HEADERS
    )
    if request.cookies.get(BROWSER_COOKIE) != browser:
        response.set_cookie(
            BROWSER_COOKIE, browser, path="/portal", httponly=True, samesite="lax", secure=request.url.scheme == "https"
        )
    return response


def _receipt_access(request: Request, opened: OpenedPortal, receipts: list[Any]) -> dict[str, str]:
    """Return signed links that open the customer's receipts, published or not, until the
    portal link expires."""
    secret = request.app.state.secret_key
    return {receipt.id: sign_access(secret, receipt.id, opened.portal.expires_at) for receipt in receipts}


@router.post("/portal/{token}/upgrade")
async def upgrade(request: Request, token: str) -> Response:
    """Create a checkout for the portal's customer and send the browser to it."""
    form = await read_form(request)
    store = request.app.state.store
    with store.transaction() as session:
        opened = _open(request, session, token)
        if not _form_token_valid(request, form.get("form_token", ""), opened):
            log.warning("portal.csrf_rejected", extra={"portal_id": opened.portal.id})
            raise PageError(
                403, "This page has expired", "Reload the portal page and press the upgrade button again."
            )

        here = portal_url(public_root(request), request.app.state.secret_key, opened.portal)
        offers = upgrade_offers(session, opened.customer)
        try:
            body = CheckoutCreate(
                products=offers,
                customer_id=opened.customer.id,
                success_url=opened.portal.return_url or here,
                cancel_url=here,
            )
            checkout = checkouts.create_checkout(
                session, opened.customer.organization_id, body, public_root=public_root(request), now=clock.now()
            )
        except (ApiError, ValidationError) as error:
            # Nothing to offer, or a catalog the checkout cannot sell (such as no price in the
            # currency of the customer's orders).
            log.warning("portal.upgrade_failed", extra={"portal_id": opened.portal.id, "error": str(error).splitlines()[0]})
            session.rollback()
            message = "Changing your plan here is not available right now. Contact us to change it."
            return _render(request, session, opened, token, error=message, status_code=409)
        log.info("portal.upgrade_started", extra={"portal_id": opened.portal.id, "checkout_id": checkout.id})
        url = checkout.url
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _form_token_valid(request: Request, token: str, opened: OpenedPortal) -> bool:
    browser = request.cookies.get(BROWSER_COOKIE)
    if not token or not browser:
        return False
    try:
        payload = _form_serializer(request).loads(token, max_age=FORM_MAX_AGE_SECONDS)
    except BadSignature:
        return False
    if not isinstance(payload, dict) or payload.get("portal") != opened.portal.id:
        return False
    return secrets.compare_digest(str(payload.get("browser", "")), browser)
