"""Dashboard sign-in, sessions and CSRF protection, over HTTP against the real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tallystick.server.dashboard import operators
from tests.dashboard_helpers import (
    DashboardClient,
    Operator,
    field_errors,
    hidden_value,
    make_operator,
)


@pytest.fixture
def operator(tenant, store) -> Operator:  # type: ignore[no-untyped-def]
    return make_operator(store, tenant.organization_id)


@pytest.fixture
def browser(server) -> Iterator[DashboardClient]:  # type: ignore[no-untyped-def]
    client = DashboardClient(server.root)
    yield client
    client.close()


@pytest.fixture
def customer(tenant) -> dict:  # type: ignore[no-untyped-def]
    tenant.http.post("/credits/currencies", json={"name": "Chat Credits", "key": "chat_credits"})
    response = tenant.http.post("/customers/", json={"name": "Ada", "externalId": "user-42"})
    assert response.status_code == 201, response.text
    return response.json()


def balance_of(tenant, external_id: str = "user-42") -> list:  # type: ignore[no-untyped-def]
    return tenant.http.get(f"/customers/external/{external_id}/credits/balances").json()["data"]


def test_dashboard_redirects_to_sign_in(browser):
    response = browser.get("/dashboard/customers?q=ada")

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fcustomers%3Fq%3Dada"


def test_sign_in_sets_http_only_session(browser, operator):
    response = browser.sign_in(operator)

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("tallystick_dashboard_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/dashboard" in cookie
    assert browser.get("/dashboard").status_code == 200


def test_sign_in_checks_password_off_event_loop(browser, operator, monkeypatch):
    from tallystick.server.dashboard import operators

    loop_running: list[bool] = []
    check_sign_in = operators.check_sign_in

    def recording_check(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            asyncio.get_running_loop()
            loop_running.append(True)
        except RuntimeError:
            loop_running.append(False)
        return check_sign_in(*args, **kwargs)

    monkeypatch.setattr(operators, "check_sign_in", recording_check)
    response = browser.sign_in(operator)

    assert response.status_code == 303
    assert loop_running == [False]


def test_sign_in_ignores_email_case(browser, operator):
    response = browser.sign_in(Operator(email=operator.email.upper(), password=operator.password))

    assert response.status_code == 303


def test_wrong_password_is_rejected(browser, operator):
    response = browser.sign_in(Operator(email=operator.email, password="wrong password 123"))

    assert response.status_code == 401
    assert "The email or password is wrong." in response.text
    assert "tallystick_dashboard_session" not in response.headers.get("set-cookie", "")
    assert browser.get("/dashboard").status_code == 303


def test_unknown_email_is_rejected(browser):
    response = browser.sign_in(Operator(email="nobody@example.com", password="whatever password"))

    assert response.status_code == 401


def test_sign_in_without_form_token_is_rejected(browser, operator):
    browser.get("/dashboard/login")
    response = browser.http.post(
        "/dashboard/login", data={"email": operator.email, "password": operator.password, "next": "/dashboard"}
    )

    assert response.status_code == 403
    assert browser.get("/dashboard").status_code == 303


def test_sign_in_never_redirects_off_site(browser, operator):
    page = browser.get("/dashboard/login")
    response = browser.http.post(
        "/dashboard/login",
        data={
            "form_token": hidden_value(page.text, "form_token"),
            "next": "//evil.example.com/dashboard",
            "email": operator.email,
            "password": operator.password,
        },
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"


def test_forged_session_cookie_is_ignored(browser, operator):
    browser.sign_in(operator)
    cookie = browser.http.cookies.get("tallystick_dashboard_session")
    browser.http.cookies.clear()
    browser.http.cookies.set("tallystick_dashboard_session", cookie[:-2] + "xx", path="/dashboard")

    assert browser.get("/dashboard").status_code == 303


def test_new_password_ends_sessions(browser, operator, store):
    from tallystick.server.dashboard.operators import (
        find_operator_by_email,
        set_password,
    )

    browser.sign_in(operator)
    with store.transaction() as session:
        set_password(session, find_operator_by_email(session, operator.email), "another long password")

    assert browser.get("/dashboard").status_code == 303


def test_sign_out_ends_session(browser, operator):
    browser.sign_in(operator)
    response = browser.submit("/dashboard", "/dashboard/logout", {})

    assert response.status_code == 303
    assert browser.get("/dashboard").status_code == 303


def test_grant_without_csrf_token_changes_nothing(browser, operator, customer, tenant):
    browser.sign_in(operator)
    currency_id = tenant.http.get("/credits/currencies").json()["data"][0]["id"]

    response = browser.http.post(
        f"/dashboard/customers/{customer['id']}/grants", data={"currency_id": currency_id, "amount": "100"}
    )

    assert response.status_code == 403
    assert "This form has expired" in response.text
    assert balance_of(tenant) == []


def test_grant_with_another_sessions_token_changes_nothing(server, browser, operator, customer, tenant):
    other = DashboardClient(server.root)
    other.sign_in(operator)
    foreign_token = other.csrf_token()
    other.close()
    browser.sign_in(operator)
    currency_id = tenant.http.get("/credits/currencies").json()["data"][0]["id"]

    response = browser.http.post(
        f"/dashboard/customers/{customer['id']}/grants",
        data={"csrf_token": foreign_token, "currency_id": currency_id, "amount": "100"},
    )

    assert response.status_code == 403
    assert balance_of(tenant) == []


def test_post_without_session_redirects_to_sign_in(browser, customer):
    response = browser.http.post(f"/dashboard/customers/{customer['id']}/grants", data={"amount": "100"})

    assert response.status_code == 303
    assert response.headers["location"].startswith("/dashboard/login")


def test_api_key_form_without_csrf_creates_no_key(browser, operator, tenant, store):
    from tallystick.server.dashboard.queries import organization_api_keys

    browser.sign_in(operator)
    response = browser.http.post("/dashboard/api-keys", data={"name": "forged"})

    assert response.status_code == 403
    with store.read_sessions() as session:
        names = [key.name for key in organization_api_keys(session, tenant.organization_id)]
    assert "forged" not in names


def test_operator_sees_only_own_organization(browser, operator, other_tenant):
    response = other_tenant.http.post("/customers/", json={"name": "Other", "externalId": "other-1"})
    other_customer = response.json()
    browser.sign_in(operator)

    assert browser.get(f"/dashboard/customers/{other_customer['id']}").status_code == 404
    assert "Other" not in browser.get("/dashboard/customers").text
    assert field_errors(browser.get("/dashboard/customers").text) == []


def test_repeated_failed_sign_ins_are_throttled(browser, operator):
    wrong = Operator(email=operator.email, password="wrong password 123")
    statuses = [browser.sign_in(wrong).status_code for _ in range(10)]

    blocked = browser.sign_in(operator)

    assert statuses == [401] * 10
    assert blocked.status_code == 429
    assert "Too many failed sign-ins. Wait 15 minutes" in blocked.text
    assert 890 <= int(blocked.headers["Retry-After"]) <= 900
    assert browser.get("/dashboard").status_code == 303


def test_new_password_lifts_sign_in_throttle(browser, operator, store):
    wrong = Operator(email=operator.email, password="wrong password 123")
    for _ in range(10):
        browser.sign_in(wrong)
    assert browser.sign_in(operator).status_code == 429

    # What `tallystick users set-password` does.
    with store.transaction() as session:
        found = operators.find_operator_by_email(session, operator.email)
        assert found is not None
        operators.set_password(session, found, "a new password 456")

    signed_in = browser.sign_in(Operator(email=operator.email, password="a new password 456"))
    assert signed_in.status_code == 303
    assert browser.get("/dashboard").status_code == 200
