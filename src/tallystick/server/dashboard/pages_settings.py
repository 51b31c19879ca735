"""Settings pages: value types, webhooks with their deliveries, and API keys."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import ValidationError
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.api_keys import create_api_key, revoke_api_key
from tallystick.server.dashboard import forms, queries
from tallystick.server.dashboard.rendering import redirect, render
from tallystick.server.dashboard.session import CheckedForm, CurrentOperator, SignedIn
from tallystick.server.deps import DbSession, ReadSession
from tallystick.server.errors import ApiError
from tallystick.server.models import Organization
from tallystick.server.value.metrics import archive_metric, list_metrics, update_metric
from tallystick.server.value.schemas import ValueMetricMonetaryConversionIn, ValueMetricUpdate
from tallystick.server.web import PageError
from tallystick.server.webhooks import delivery
from tallystick.server.webhooks import service as webhooks
from tallystick.server.webhooks.catalog import WEBHOOK_EVENTS

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

RECENT_DELIVERIES = 30


# Value types


@router.get("/dashboard/value-types")
def value_types_page(request: Request, signed_in: CurrentOperator, session: ReadSession) -> Response:
    return _render_value_types(request, signed_in, session, status_code=200)


def _render_value_types(
    request: Request, signed_in: SignedIn, session: Session, *, status_code: int, errors: dict[str, str] | None = None
) -> Response:
    metrics = list_metrics(session, signed_in.organization_id, include_archived=True)
    context = {"metrics": metrics, "errors": errors or {}}
    return render(request, "dashboard/value_types.html", signed_in, "value", context, status_code=status_code)


@router.post("/dashboard/value-types/{slug}")
def update_value_type_form(
    request: Request, slug: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm
) -> Response:
    """Rename, describe, price, archive or restore one value type; each save is a new model version."""
    known = {metric["slug"] for metric in list_metrics(session, signed_in.organization_id, include_archived=True)}
    if slug not in known:
        raise PageError(404, "Value type not found", f"No value type is called {slug}.")
    action = form.get("action", "save")
    try:
        if action == "archive":
            archive_metric(session, signed_in.organization_id, slug, None)
        elif action == "restore":
            update_metric(session, signed_in.organization_id, slug, ValueMetricUpdate(archived_at=None))
        else:
            update_metric(session, signed_in.organization_id, slug, _value_type_update(form))
    except forms.FieldError as error:
        return _render_value_types(request, signed_in, session, status_code=400, errors={slug: error.message})
    except (ApiError, ValidationError) as error:
        session.rollback()
        message = forms.errors_of(error, {}, "value")["value"]
        return _render_value_types(request, signed_in, session, status_code=400, errors={slug: message})
    log.info(
        "dashboard.value_type_updated",
        extra={"organization_id": signed_in.organization_id, "operator_id": signed_in.operator_id, "slug": slug},
    )
    return redirect("/dashboard/value-types", "value_type_saved")


def _value_type_update(form: dict[str, str]) -> ValueMetricUpdate:
    """Build the update of the edit form.

    An empty worth per unit removes the money conversion. The form has no worth field for a
    conversion given by a formula, which is then left alone.
    """
    fields: dict[str, Any] = {
        "name": forms.required(form, "name", "a name"),
        "description": forms.text(form, "description"),
    }
    if "value_per_unit" in form:
        worth = forms.decimal(form, "value_per_unit", label="the worth per unit")
        if worth is not None and worth < 0:
            raise forms.FieldError("value_per_unit", "Enter a worth per unit of 0 or more.")
        fields["monetary_conversion"] = (
            None if worth is None else ValueMetricMonetaryConversionIn(value_per_unit=str(worth))
        )
    return ValueMetricUpdate(**fields)


# Webhooks


@router.get("/dashboard/webhooks")
def webhooks_page(request: Request, signed_in: CurrentOperator, session: DbSession) -> Response:
    # A write session: listing creates the missing endpoint rows, one per webhook event.
    return _render_webhooks(request, signed_in, session, status_code=200)


def _render_webhooks(
    request: Request, signed_in: SignedIn, session: Session, *, status_code: int,
    errors: dict[str, str] | None = None, new_secret: str | None = None,
) -> Response:
    organization_id = signed_in.organization_id
    endpoints = webhooks.list_endpoints(session, organization_id)
    statement = delivery.list_deliveries_statement(organization_id, name=None, status=None, event_id=None)
    deliveries = list(session.scalars(statement.limit(RECENT_DELIVERIES)))
    context = {
        "endpoints": endpoints,
        "events": WEBHOOK_EVENTS,
        "deliveries": [(row, delivery.list_attempts(session, row)) for row in deliveries],
        "secret_configured": webhooks.signing_secret_configured(session, organization_id),
        "errors": errors or {},
        "new_secret": new_secret,
    }
    return render(request, "dashboard/webhooks.html", signed_in, "webhooks", context, status_code=status_code)


# Declared before /dashboard/webhooks/{name}, which would otherwise match it.
@router.post("/dashboard/webhooks/rotate-secret")
def rotate_secret_form(request: Request, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    """Replace the signing secret and show the new one once; the old one stops working at once."""
    secret = webhooks.rotate_signing_secret(session, signed_in.organization_id)
    log.info("dashboard.webhook_secret_rotated", extra={"operator_id": signed_in.operator_id})
    return _render_webhooks(request, signed_in, session, status_code=200, new_secret=secret)


@router.post("/dashboard/webhooks/{name}")
def update_webhook_form(request: Request, name: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    """Set a webhook's URL and whether it is enabled; an empty URL clears and disables it."""
    if name not in WEBHOOK_EVENTS:
        raise PageError(404, "Webhook not found", f"No webhook event is called {name}.")
    url = forms.text(form, "url")
    try:
        _, secret = webhooks.update_endpoint(
            session,
            signed_in.organization_id,
            name,
            url=url,
            url_provided=True,
            enabled=form.get("enabled") == "on" if url is not None else None,
            allow_private_targets=request.app.state.settings.allow_private_webhook_targets,
        )
    except ApiError as error:
        session.rollback()
        message = forms.errors_of(error, {}, "url")["url"]
        return _render_webhooks(request, signed_in, session, status_code=400, errors={name: message})
    if secret is not None:
        # The first URL creates the signing secret, which is shown this once.
        return _render_webhooks(request, signed_in, session, status_code=200, new_secret=secret)
    return redirect("/dashboard/webhooks", "webhook_saved")


@router.post("/dashboard/webhooks/deliveries/{delivery_id}/redeliver")
def redeliver_form(request: Request, delivery_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    try:
        delivery.redeliver(session, signed_in.organization_id, delivery_id, clock.now(), request.app.state.settings)
    except ApiError as error:
        session.rollback()
        return _render_webhooks(request, signed_in, session, status_code=400, errors={"deliveries": error.message})
    return redirect("/dashboard/webhooks", "redelivery_queued")


# API keys


# The new key travels from the create form to the next page in a cookie that this page deletes,
# so the key is shown once and reloading the page neither shows it again nor creates a key.
NEW_KEY_COOKIE = "tallystick_dashboard_new_key"
NEW_KEY_PATH = "/dashboard/api-keys"
NEW_KEY_MAX_AGE_SECONDS = 120
_NEW_KEY_SALT = "tallystick.dashboard-new-key"


def _new_key_serializer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        request.app.state.secret_key, salt=_NEW_KEY_SALT, signer_kwargs={"digest_method": hashlib.sha256}
    )


@router.get("/dashboard/api-keys")
def api_keys_page(request: Request, signed_in: CurrentOperator, session: ReadSession) -> Response:
    new_key = None
    flashed = request.cookies.get(NEW_KEY_COOKIE)
    if flashed:
        try:
            payload = _new_key_serializer(request).loads(flashed, max_age=NEW_KEY_MAX_AGE_SECONDS)
        except BadSignature:
            payload = None
        # The key is shown only to the operator who created it.
        if isinstance(payload, dict) and payload.get("operator") == signed_in.operator_id:
            new_key = payload.get("key")
    response = _render_keys(request, signed_in, session, status_code=200, new_key=new_key)
    if flashed:
        response.delete_cookie(NEW_KEY_COOKIE, path=NEW_KEY_PATH)
    return response


def _render_keys(
    request: Request, signed_in: SignedIn, session: Session, *, status_code: int,
    new_key: str | None = None, values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
) -> Response:
    context = {
        "keys": queries.organization_api_keys(session, signed_in.organization_id),
        "new_key": new_key,
        "values": values or {},
        "errors": errors or {},
    }
    return render(request, "dashboard/api_keys.html", signed_in, "api_keys", context, status_code=status_code)


@router.post("/dashboard/api-keys")
def create_key_form(request: Request, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    """Create an API key, then show its secret once on the next page; only its hash is stored."""
    name = forms.text(form, "name") or ""
    if len(name) > 200:
        return _render_keys(
            request, signed_in, session, status_code=400, values={"name": name[:200]}, errors={"name": "Use at most 200 characters."}
        )
    organization = session.get(Organization, signed_in.organization_id)
    assert organization is not None  # operators belong to an existing organization
    created = create_api_key(session, organization.name, name)
    log.info("dashboard.api_key_created", extra={"operator_id": signed_in.operator_id, "api_key_id": created.api_key_id})
    response = redirect(NEW_KEY_PATH)
    response.set_cookie(
        NEW_KEY_COOKIE,
        _new_key_serializer(request).dumps({"operator": signed_in.operator_id, "key": created.secret}),
        max_age=NEW_KEY_MAX_AGE_SECONDS,
        path=NEW_KEY_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/dashboard/api-keys/{key_id}/revoke")
def revoke_key_form(request: Request, key_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    if queries.find_api_key(session, signed_in.organization_id, key_id) is None:
        raise PageError(404, "API key not found", f"No API key with the id {key_id} exists in this organization.")
    revoke_api_key(session, key_id)
    log.info("dashboard.api_key_revoked", extra={"operator_id": signed_in.operator_id, "api_key_id": key_id})
    return redirect("/dashboard/api-keys", "key_revoked")
