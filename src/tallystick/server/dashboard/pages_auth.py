"""Sign-in and sign-out of the dashboard."""

from __future__ import annotations

import logging
import math

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tallystick.server.dashboard import operators, session
from tallystick.server.dashboard.rendering import redirect
from tallystick.server.dashboard.session import CheckedForm
from tallystick.server.dashboard.throttle import sign_in_throttle
from tallystick.server.web import PAGE_HEADERS, templates

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


@router.get("/dashboard/login")
def login_page(request: Request, next: str | None = None) -> Response:
    if session.read_session(request) is not None:
        return redirect(session.safe_next(next))
    return _render_login(request, next=session.safe_next(next), email="", error=None, status_code=200)


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    """Check the email and password and start a session; the form must carry its token."""
    form = await session.read_form(request)
    # The rest blocks: the throttle's storage, the database and an Argon2 check of tens of
    # milliseconds. On the event loop it would stall every other request of this process.
    return await run_in_threadpool(_sign_in, request, form)


def _sign_in(request: Request, form: dict[str, str]) -> Response:
    target = session.safe_next(form.get("next"))
    email = form.get("email", "").strip()

    if not session.login_form_valid(request, form.get("form_token", "")):
        error = "The sign-in form expired or was opened in another browser. Try again."
        return _render_login(request, next=target, email=email, error=error, status_code=403)

    throttle = sign_in_throttle(request)
    with request.app.state.store.read_sessions() as db:
        known = operators.find_operator_by_email(db, email)
        fingerprint = operators.password_fingerprint(known) if known is not None else ""
    if not throttle.allowed(email, fingerprint):
        log.warning("operator.sign_in_throttled")
        wait = throttle.seconds_until_allowed(email, fingerprint)
        minutes = math.ceil(wait / 60)
        error = f"Too many failed sign-ins. Wait {minutes} minute{'' if minutes == 1 else 's'}, then try again."
        response = _render_login(request, next=target, email=email, error=error, status_code=429)
        response.headers["Retry-After"] = str(wait)
        return response

    with request.app.state.store.transaction() as db:
        operator = operators.check_sign_in(db, email, form.get("password", ""))
    if operator is None:
        throttle.record_failure(email, fingerprint)
        error = "The email or password is wrong."
        return _render_login(request, next=target, email=email, error=error, status_code=401)

    response = redirect(target)
    session.start_session(request, response, operator)
    return response


@router.post("/dashboard/logout")
def logout(request: Request, form: CheckedForm, signed_in: session.CurrentOperator) -> Response:
    response = redirect("/dashboard/login")
    session.end_session(request, response, signed_in)
    return response


def _render_login(request: Request, *, next: str, email: str, error: str | None, status_code: int) -> Response:
    token, new_cookie = session.login_form_token(request)
    with request.app.state.store.read_sessions() as db:
        no_operators = operators.operator_count(db) == 0
    context = {
        "form_token": token,
        "next": next,
        "values": {"email": email},
        "error": error,
        "no_operators": no_operators,
    }
    response = templates.TemplateResponse(
        request, "dashboard/login.html", context, status_code=status_code, headers=PAGE_HEADERS
    )
    if new_cookie is not None:
        session.set_login_cookie(request, response, new_cookie)
    return response
