"""Dashboard sign-in sessions and the anti-forgery (CSRF) checks of its forms.

A session is a cookie signed with the server secret (itsdangerous, HMAC-SHA256 with a
timestamp): it names the operator, its `operator_sessions` row (which sign-out ends), a digest
of the operator's password hash (so a new password ends old sessions) and a random CSRF token.
The cookie is http-only and SameSite=Lax.

Every form of the dashboard posts the session's CSRF token in a hidden `csrf_token` field, and
every POST route compares it with the cookie's token (the synchronizer token pattern). Another
site can make the browser send the cookie, but it cannot read the token to put in the form. The
sign-in form has no session yet, so it is bound the same way to a random pre-session cookie.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request, Response
from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import delete

from tallystick.server import clock
from tallystick.server.dashboard.operators import password_fingerprint
from tallystick.server.ids import new_id
from tallystick.server.models import Operator, OperatorSession
from tallystick.server.web import PageError

log = logging.getLogger(__name__)

SESSION_COOKIE = "tallystick_dashboard_session"
LOGIN_COOKIE = "tallystick_dashboard_login"
COOKIE_PATH = "/dashboard"
# A session ends this many seconds after sign-in, whatever the activity.
SESSION_MAX_AGE_SECONDS = 12 * 3600
# How long the sign-in form can be submitted after it was rendered, in seconds.
LOGIN_FORM_MAX_AGE_SECONDS = 3600

_SESSION_SALT = "tallystick.dashboard-session"
_LOGIN_SALT = "tallystick.dashboard-login"


class _ClockTimestampSigner(TimestampSigner):
    """A timestamp signer that reads the server clock, so tests that pin time pin it too."""

    def get_timestamp(self) -> int:
        return int(clock.now().timestamp())


def _serializer(secret: str, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret, salt=salt, signer=_ClockTimestampSigner, signer_kwargs={"digest_method": hashlib.sha256}
    )


@dataclass(frozen=True)
class SignedIn:
    """The operator of the current request and the CSRF token its forms must post."""

    operator_id: str
    organization_id: str
    email: str
    csrf_token: str
    session_id: str


def _secret(request: Request) -> str:
    return request.app.state.secret_key


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def start_session(request: Request, response: Response, operator: Operator) -> None:
    """Store a session for `operator`, set its cookie on `response` and drop the pre-session
    cookie. The operator's expired sessions are deleted on the way."""
    now = clock.now()
    with request.app.state.store.transaction() as db:
        db.execute(
            delete(OperatorSession).where(
                OperatorSession.operator_id == operator.id, OperatorSession.expires_at <= now
            )
        )
        stored = OperatorSession(
            id=new_id("operator_session"),
            organization_id=operator.organization_id,
            operator_id=operator.id,
            created_at=now,
            expires_at=now + timedelta(seconds=SESSION_MAX_AGE_SECONDS),
        )
        db.add(stored)
    payload = {
        "operator": operator.id,
        "session": stored.id,
        "password": password_fingerprint(operator),
        "csrf": secrets.token_urlsafe(24),
    }
    response.set_cookie(
        SESSION_COOKIE,
        _serializer(_secret(request), _SESSION_SALT).dumps(payload),
        max_age=SESSION_MAX_AGE_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)


def end_session(request: Request, response: Response, signed_in: SignedIn) -> None:
    """End the stored session, so its cookie no longer works anywhere, and delete the cookie."""
    with request.app.state.store.transaction() as db:
        stored = db.get(OperatorSession, signed_in.session_id, with_for_update=True)
        if stored is not None and stored.ended_at is None:
            stored.ended_at = clock.now()
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    log.info(
        "operator.signed_out",
        extra={
            "organization_id": signed_in.organization_id,
            "operator_id": signed_in.operator_id,
            "operator_session_id": signed_in.session_id,
        },
    )


def read_session(request: Request) -> SignedIn | None:
    """Return the signed-in operator of the request, or None when there is no valid session."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        payload = _serializer(_secret(request), _SESSION_SALT).loads(cookie, max_age=SESSION_MAX_AGE_SECONDS)
    except BadSignature:
        return None
    fields = ("operator", "session", "password", "csrf")
    if not isinstance(payload, dict) or not all(isinstance(payload.get(key), str) for key in fields):
        return None

    with request.app.state.store.read_sessions() as session:
        operator = session.get(Operator, payload["operator"])
        if operator is None or operator.disabled_at is not None:
            return None
        if not secrets.compare_digest(password_fingerprint(operator), payload["password"]):
            return None
        stored = session.get(OperatorSession, payload["session"])
        if (
            stored is None
            or stored.operator_id != operator.id
            or stored.ended_at is not None
            or stored.expires_at <= clock.now()
        ):
            return None
        return SignedIn(
            operator_id=operator.id,
            organization_id=operator.organization_id,
            email=operator.email,
            csrf_token=payload["csrf"],
            session_id=stored.id,
        )


def require_operator(request: Request) -> SignedIn:
    """Return the signed-in operator; send a browser without a session to the sign-in page."""
    signed_in = read_session(request)
    if signed_in is None:
        target = request.url.path
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        raise PageError(
            303, "Sign in", "Sign in to open the dashboard.",
            headers={"Location": f"{COOKIE_PATH}/login?next={quote(target, safe='')}"},
        )
    return signed_in


CurrentOperator = Annotated[SignedIn, Depends(require_operator)]


async def read_form(request: Request) -> dict[str, str]:
    """Read the url-encoded form body; repeated keys keep their last value."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def checked_form(request: Request, signed_in: CurrentOperator) -> dict[str, str]:
    """Return the posted form after checking its CSRF token against the session's."""
    form = await read_form(request)
    if not secrets.compare_digest(form.get("csrf_token", ""), signed_in.csrf_token):
        log.warning("dashboard.csrf_rejected", extra={"operator_id": signed_in.operator_id, "path": request.url.path})
        raise csrf_rejected()
    return form


CheckedForm = Annotated[dict[str, str], Depends(checked_form)]


def csrf_rejected() -> PageError:
    return PageError(
        403,
        "This form has expired",
        "The form was not sent from this dashboard session. Go back, reload the page and try again.",
    )


# The sign-in form


def login_form_token(request: Request) -> tuple[str, str | None]:
    """Return the sign-in form's token, bound to the browser's pre-session cookie.

    The second value is a new cookie value for the caller to set when the browser has none yet.
    """
    nonce = request.cookies.get(LOGIN_COOKIE)
    new_nonce = None
    if not nonce:
        nonce = new_nonce = secrets.token_urlsafe(18)
    return _serializer(_secret(request), _LOGIN_SALT).dumps(nonce), new_nonce


def set_login_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE, value, path=COOKIE_PATH, httponly=True, samesite="lax", secure=_secure(request)
    )


def login_form_valid(request: Request, token: str) -> bool:
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or not token:
        return False
    try:
        signed = _serializer(_secret(request), _LOGIN_SALT).loads(token, max_age=LOGIN_FORM_MAX_AGE_SECONDS)
    except BadSignature:
        return False
    return isinstance(signed, str) and secrets.compare_digest(signed, nonce)


def safe_next(target: str | None) -> str:
    """Return `target` when it is a dashboard path, else the overview: never another site."""
    if target and target.startswith(COOKIE_PATH) and not target.startswith("//") and "\\" not in target:
        return target
    return COOKIE_PATH
