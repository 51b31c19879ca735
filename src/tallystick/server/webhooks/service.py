"""Webhook settings: one endpoint per event name and organization, and the signing secret."""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.errors import bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.models import WebhookEndpoint, WebhookSigningSecret
from tallystick.server.webhooks.catalog import WEBHOOK_EVENTS
from tallystick.server.webhooks.targets import validate_webhook_url

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"


def list_endpoints(session: Session, organization_id: str) -> list[WebhookEndpoint]:
    """Return one endpoint per webhook event, in catalog order, creating missing rows."""
    rows = _load_endpoints(session, organization_id)
    missing = [name for name in WEBHOOK_EVENTS if name not in rows]
    if missing:
        _insert_missing_endpoints(session, organization_id, missing)
        rows = _load_endpoints(session, organization_id)
    return [rows[name] for name in WEBHOOK_EVENTS]


def get_endpoint(session: Session, organization_id: str, name: str) -> WebhookEndpoint:
    """Return the endpoint of webhook `name`; raise a 404 for a name that is not an event."""
    if name not in WEBHOOK_EVENTS:
        raise not_found("Webhook", "name", name)
    rows = _load_endpoints(session, organization_id, name)
    if name not in rows:
        _insert_missing_endpoints(session, organization_id, [name])
        rows = _load_endpoints(session, organization_id, name)
    return rows[name]


def update_endpoint(
    session: Session,
    organization_id: str,
    name: str,
    *,
    url: str | None,
    url_provided: bool,
    enabled: bool | None,
    allow_private_targets: bool,
) -> tuple[WebhookEndpoint, str | None]:
    """Apply a PATCH; return the endpoint and the signing secret if this call created it.

    Setting `url` leaves `enabled` as it was; clearing it (null) also disables the webhook.
    """
    endpoint = get_endpoint(session, organization_id, name)

    if url_provided:
        if url is None:
            endpoint.url = None
            endpoint.enabled = False
        else:
            endpoint.url = validate_webhook_url(url, allow_private=allow_private_targets)

    if enabled is not None:
        if enabled and not endpoint.url:
            raise bad_request(
                "enabled", f"webhook {name} has no url; send a url to enable it", enabled
            )
        endpoint.enabled = enabled

    endpoint.updated_at = clock.now()
    created_secret = None
    if endpoint.url and session.get(WebhookSigningSecret, organization_id) is None:
        created_secret = _store_new_secret(session, organization_id)
    session.flush()
    log.info(
        "webhooks.endpoint_updated",
        extra={"organization_id": organization_id, "webhook": name, "enabled": endpoint.enabled},
    )
    return endpoint, created_secret


def signing_secret_configured(session: Session, organization_id: str) -> bool:
    return session.get(WebhookSigningSecret, organization_id) is not None


def get_signing_secret(session: Session, organization_id: str) -> str | None:
    row = session.get(WebhookSigningSecret, organization_id)
    return row.secret if row is not None else None


def rotate_signing_secret(session: Session, organization_id: str) -> str:
    """Replace the signing secret (or create the first one); the old one stops working at once."""
    secret = _store_new_secret(session, organization_id)
    session.flush()
    log.info("webhooks.secret_rotated", extra={"organization_id": organization_id})
    return secret


def _store_new_secret(session: Session, organization_id: str) -> str:
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    values = {"organization_id": organization_id, "secret": secret, "created_at": clock.now()}
    # An upsert, so two concurrent first PATCH calls cannot collide on the primary key.
    insert = _dialect_insert(session)
    statement = insert(WebhookSigningSecret).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[WebhookSigningSecret.organization_id],
        set_={"secret": secret, "created_at": values["created_at"]},
    )
    session.flush()
    session.execute(statement)
    # The session may contain the previous row. Expiring it makes later reads load the new
    # secret, and the flush above keeps pending changes from being discarded.
    session.expire_all()
    return secret


def _load_endpoints(
    session: Session, organization_id: str, name: str | None = None
) -> dict[str, WebhookEndpoint]:
    statement = select(WebhookEndpoint).where(WebhookEndpoint.organization_id == organization_id)
    if name is not None:
        statement = statement.where(WebhookEndpoint.name == name)
    return {row.name: row for row in session.scalars(statement)}


def _insert_missing_endpoints(session: Session, organization_id: str, names: list[str]) -> None:
    """Insert endpoint rows, skipping any that a concurrent request inserted first."""
    now = clock.now()
    rows = [
        {
            "id": new_id("webhook_endpoint"),
            "organization_id": organization_id,
            "name": name,
            "url": None,
            "enabled": False,
            "created_at": now,
            "updated_at": now,
        }
        for name in names
    ]
    insert = _dialect_insert(session)
    session.execute(
        insert(WebhookEndpoint)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["organization_id", "name"])
    )


def _dialect_insert(session: Session):  # type: ignore[no-untyped-def]
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert
