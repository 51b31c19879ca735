"""Customer portal links: creation and the signed token in each link.

A link is `{public root}/portal/{token}`. The token names the portal row and its expiry, signed
with the server secret (itsdangerous, HMAC-SHA256), so a forged or edited token is rejected
before any database read, and an expired one is rejected whatever the row contains. Changing the
server secret invalidates every link.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server.errors import bad_request
from tallystick.server.ids import new_id
from tallystick.server.models import Customer, CustomerPortal, Order, Plan, Product

log = logging.getLogger(__name__)

# How long a link opens the portal when the request sets no `expiresAt`.
DEFAULT_LIFETIME = timedelta(hours=1)
# Links are meant to be opened right away, from the app's account page; a week is the limit.
MAX_LIFETIME = timedelta(days=7)
_SALT = "tallystick.customer-portal"


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def create_portal(
    session: Session,
    customer: Customer,
    *,
    return_url: str | None,
    expires_at: datetime | None,
    now: datetime,
) -> CustomerPortal:
    """Create a portal link for `customer`, open until `expires_at` (default: one hour)."""
    if expires_at is None:
        expires_at = now + DEFAULT_LIFETIME
    elif expires_at.tzinfo is None:
        raise bad_request("expiresAt", "must carry a timezone offset, such as Z", expires_at)
    if expires_at <= now:
        raise bad_request("expiresAt", "must be in the future", expires_at)
    if expires_at > now + MAX_LIFETIME:
        raise bad_request("expiresAt", f"must be at most {MAX_LIFETIME.days} days from now", expires_at)

    portal = CustomerPortal(
        id=new_id("customer_portal"),
        organization_id=customer.organization_id,
        customer_id=customer.id,
        return_url=return_url,
        # Whole seconds, the precision of the signed token.
        expires_at=expires_at.astimezone(UTC).replace(microsecond=0),
        created_at=now,
    )
    session.add(portal)
    session.flush()
    log.info(
        "customer_portal.created",
        extra={"organization_id": customer.organization_id, "customer_id": customer.id, "portal_id": portal.id},
    )
    return portal


def portal_url(public_root: str, secret: str, portal: CustomerPortal) -> str:
    token = _serializer(secret).dumps({"portal": portal.id, "expires": int(portal.expires_at.timestamp())})
    return f"{public_root.rstrip('/')}/portal/{token}"


def portal_status(portal: CustomerPortal, now: datetime) -> str:
    return "active" if portal.expires_at > now else "expired"


@dataclass(frozen=True)
class OpenedPortal:
    portal: CustomerPortal
    customer: Customer


class PortalClosed(Exception):
    """The link cannot open the portal; `reason` is invalid or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_portal(session: Session, secret: str, token: str, now: datetime) -> OpenedPortal:
    """Return the portal and customer a link opens, or raise PortalClosed."""
    try:
        payload = _serializer(secret).loads(token)
    except BadSignature:
        raise PortalClosed("invalid") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("portal"), str) or not isinstance(payload.get("expires"), int):
        raise PortalClosed("invalid")
    if datetime.fromtimestamp(payload["expires"], UTC) <= now:
        raise PortalClosed("expired")

    portal = session.scalar(select(CustomerPortal).where(CustomerPortal.id == payload["portal"]))
    if portal is None:
        raise PortalClosed("invalid")
    if portal.expires_at <= now:
        raise PortalClosed("expired")
    customer = session.scalar(
        select(Customer).where(
            Customer.organization_id == portal.organization_id,
            Customer.id == portal.customer_id,
            Customer.deleted_at.is_(None),
        )
    )
    if customer is None:
        raise PortalClosed("invalid")
    return OpenedPortal(portal=portal, customer=customer)


def upgrade_offers(session: Session, customer: Customer) -> list[dict[str, Any]]:
    """Return the wire `products` of an upgrade checkout, or [] when there is nothing to offer.

    A customer with an active order is offered the other active plans of that order's product,
    which checkout turns into a plan change of the order. A customer without one is offered
    every active product that has an active plan.
    """
    orders = list(
        session.scalars(
            select(Order).where(
                Order.organization_id == customer.organization_id,
                Order.customer_id == customer.id,
                Order.status == "active",
                Order.product_id.is_not(None),
            )
        )
    )
    if not orders:
        product_ids = session.scalars(
            select(Product.id)
            .where(
                Product.organization_id == customer.organization_id,
                Product.active.is_(True),
                Product.archived_at.is_(None),
                Product.id.in_(select(Plan.product_id).where(Plan.status == "active")),
            )
            .order_by(Product.created_at)
        )
        return [{"id": product_id} for product_id in product_ids]

    offers = []
    for order in orders:
        plan_ids = session.scalars(
            select(Plan.id)
            .where(
                Plan.organization_id == customer.organization_id,
                Plan.product_id == order.product_id,
                Plan.status == "active",
                Plan.id != order.plan_id,
            )
            .order_by(Plan.created_at)
        )
        plans = [{"id": plan_id} for plan_id in plan_ids]
        if plans:
            offers.append({"id": order.product_id, "plans": plans})
    return offers
