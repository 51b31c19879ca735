"""An operator drives the dashboard in a real browser. They sign in and set up the integration
guide's catalog through the forms. They create a customer and grant credits, then watch signals
sent through the API change the balance and the charts. They create an API key, shown once.

With TALLYSTICK_UPDATE_SCREENSHOTS=1, the SQLite run saves screenshots of the overview and the
customer page, at desktop and phone width, into docs/screenshots/ for the README.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.browser.conftest import PHONE_VIEWPORT
from tests.checkout_helpers import create_checkout, hosted_page
from tests.dashboard_helpers import make_operator
from tests.guide import create_guide_catalog

DESKTOP_VIEWPORT = {"width": 1280, "height": 900}
# A fixed clock makes the dates in the screenshots the same on every run.
NOW = datetime(2026, 3, 14, 15, 0, tzinfo=UTC)
# Chat messages per day over the last two weeks, oldest first, for a chart with some shape.
DAILY_MESSAGES = [3, 5, 4, 8, 6, 9, 7, 12, 10, 6, 11, 14, 9, 13]


@pytest.fixture
def frozen_clock() -> Iterator[None]:
    from tallystick.server import clock

    clock.freeze(NOW)
    yield
    clock.freeze(None)


@pytest.fixture
def desktop(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=DESKTOP_VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def screenshot_path(name: str, backend: str, repo_root: Path, tmp_path: Path) -> Path:
    """Return where to save a screenshot: a temp folder, or docs/screenshots/ for the README.

    The README's copies are refreshed only on request (TALLYSTICK_UPDATE_SCREENSHOTS=1 on the
    SQLite run), so a test run leaves the work tree unchanged.
    """
    refresh = os.environ.get("TALLYSTICK_UPDATE_SCREENSHOTS") == "1" and backend == "sqlite"
    folder = repo_root / "docs" / "screenshots" if refresh else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def fits_width(page) -> bool:  # type: ignore[no-untyped-def]
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def sign_in(page, server, operator) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server.root}/dashboard")
    assert "/dashboard/login" in page.url
    page.fill("#email", operator.email)
    page.fill("#password", operator.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.root}/dashboard")


def submit(page, form_action: str) -> None:  # type: ignore[no-untyped-def]
    """Click the submit button of the form posting to `form_action` and wait for the next page."""
    with page.expect_navigation():
        page.click(f'form[method=post][action="{form_action}"] button[type=submit]')


def set_up_guide_catalog(page, server) -> str:  # type: ignore[no-untyped-def]
    """Create the guide's currency, product, pricing lines and three plans; return the product page URL."""
    page.goto(f"{server.root}/dashboard/catalog")
    page.fill("#currency_name", "Chat Credits")
    page.fill("#currency_key", "chat_credits")
    submit(page, "/dashboard/catalog/currencies")
    assert page.inner_text("[role=status]") == "Credit currency created."

    page.fill("#product_name", "ChatBot")
    page.fill("#product_external_id", "chatbot")
    submit(page, "/dashboard/catalog/products")
    product_url = page.url.split("?")[0]
    product_path = product_url.removeprefix(server.root)

    page.fill("#line_name", "Monthly fee")
    page.select_option("#pricing_type", "RecurringPerUnit")
    page.fill("#price", "29.00")
    submit(page, f"{product_path}/lines")
    page.click("#lines details summary")
    page.fill("#line_name", "Chat message")
    page.select_option("#pricing_type", "UsagePrepaidCredits")
    page.fill("#event_name", "chat_message")
    page.select_option("#credits_currency_id", label="Chat Credits")
    page.fill("#credit_cost", "1")
    submit(page, f"{product_path}/lines")
    assert page.locator("#lines tbody tr").count() == 2

    for name, price, credits in (("Starter", "29", "500"), ("Pro", "79", "2000"), ("Business", "199", "10000")):
        page.goto(f"{product_url}/plans/new")
        page.fill("#name", name)
        page.fill("#external_id", name.lower())
        fee = page.locator('fieldset[data-line="Monthly fee"]')
        fee.locator("input[id^=price_]").fill(price)
        fee.locator("input[id^=credits_amount_]").fill(credits)
        fee.locator("select[id^=credits_currency_]").select_option(label="Chat Credits")
        submit(page, f"{product_path}/plans")
        assert page.inner_text("[role=status]") == "Plan created."
    return product_url


def send_daily_messages(tenant) -> int:  # type: ignore[no-untyped-def]
    """Send the guide's chat_message signals spread over the last two weeks; return their count."""
    signals = []
    for days_ago, count in enumerate(reversed(DAILY_MESSAGES)):
        moment = NOW - timedelta(days=days_ago, hours=2)
        for index in range(count):
            signals.append(
                {
                    "eventName": "chat_message",
                    "customer": {"externalCustomerId": "user-42"},
                    "attribution": {"externalProductId": "chatbot"},
                    "timestamp": (moment + timedelta(minutes=index)).isoformat().replace("+00:00", "Z"),
                }
            )
    response = tenant.http.post("/signals/bulk", json={"signals": signals})
    assert response.status_code == 200, response.text
    return len(signals)


def send_daily_costs(tenant) -> None:  # type: ignore[no-untyped-def]
    """Record one gpt-4o-mini call per chat message of send_daily_messages, priced by the server."""
    costs = []
    for days_ago, count in enumerate(reversed(DAILY_MESSAGES)):
        moment = NOW - timedelta(days=days_ago, hours=2)
        for index in range(count):
            costs.append(
                {
                    "type": "usage",
                    "customer": {"externalCustomerId": "user-42"},
                    "product": {"externalProductId": "chatbot"},
                    "vendor": "openai",
                    "model": "gpt-4o-mini",
                    "usage": {"inputTokens": 1200, "outputTokens": 400},
                    "timestamp": (moment + timedelta(minutes=index)).isoformat().replace("+00:00", "Z"),
                }
            )
    response = tenant.http.post("/costs/bulk", json={"costs": costs})
    assert response.status_code == 200, response.text


def buy_pro(tenant, product_id: str, plan_id: str, external_id: str) -> None:  # type: ignore[no-untyped-def]
    """Buy the Pro plan through the hosted checkout with the test card, as a buyer would."""
    checkout = create_checkout(tenant, products=[{"id": product_id}], externalCustomerId=external_id)
    assert hosted_page(checkout).pay(plan_id).status_code == 303


def test_operator_runs_guide_setup_and_sees_usage(
    browser, desktop, server, tenant, store, backend, repo_root, tmp_path, frozen_clock
):
    operator = make_operator(store, tenant.organization_id)
    requested: list[str] = []
    desktop.on("request", lambda request: requested.append(request.url))

    sign_in(desktop, server, operator)
    set_up_guide_catalog(desktop, server)

    desktop.goto(f"{server.root}/dashboard/customers")
    desktop.click("details summary")
    desktop.fill("#name", "Ada Lovelace")
    desktop.fill("#external_id", "user-42")
    desktop.fill("#email", "ada@example.com")
    submit(desktop, "/dashboard/customers")
    customer_url = desktop.url.split("?")[0]
    customer_path = customer_url.removeprefix(server.root)
    desktop.select_option("#currency_id", label="Chat Credits")
    desktop.fill("#amount", "2000")
    desktop.fill("#description", "Pro plan, paid by invoice")
    submit(desktop, f"{customer_path}/grants")
    assert desktop.inner_text("[role=status]") == "Credits granted."
    assert desktop.inner_text('[data-balance="chat_credits"]') == "2,000"
    assert desktop.locator(".chart").count() == 0

    sent = send_daily_messages(tenant)
    desktop.reload()

    assert desktop.inner_text('[data-balance="chat_credits"]') == f"{2000 - sent:,}"
    assert desktop.locator(".chart-wide rect[data-value='13']").count() == 1
    [balance] = tenant.paid().customers.get_customer_credit_balances_by_external_id("user-42").data
    assert balance.available == 2000 - sent
    desktop.screenshot(path=str(screenshot_path("customer-desktop", backend, repo_root, tmp_path)), full_page=True)

    send_daily_costs(tenant)
    product = tenant.http.get("/products/external/chatbot").json()
    buy_pro(tenant, product["id"], tenant.http.get("/plans/external/pro").json()["id"], "user-7")
    desktop.goto(f"{server.root}/dashboard")
    assert desktop.inner_text('[data-stat="signals"]') == str(sent)
    assert desktop.inner_text('[data-stat="revenue"]') == "$79.00"
    assert desktop.inner_text('[data-stat="ai-cost"]') != "$0.0000"
    assert desktop.locator(".chart-wide rect").count() == 31
    desktop.screenshot(path=str(screenshot_path("overview-desktop", backend, repo_root, tmp_path)), full_page=True)
    assert all(url.startswith(server.root) for url in requested), requested


def test_pages_fit_phone_width(browser, server, tenant, store, backend, repo_root, tmp_path, frozen_clock):
    context = browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    operator = make_operator(store, tenant.organization_id)

    catalog = create_guide_catalog(tenant.paid())
    customer = tenant.http.post("/customers/", json={"name": "Ada Lovelace", "externalId": "user-42", "email": "ada@example.com"}).json()
    buy_pro(tenant, catalog.product_id, catalog.plan_ids["pro"], "user-42")
    send_daily_messages(tenant)
    send_daily_costs(tenant)

    sign_in(page, server, operator)
    overview_fits = fits_width(page)
    page.screenshot(path=str(screenshot_path("overview-phone", backend, repo_root, tmp_path)), full_page=True)
    page.goto(f"{server.root}/dashboard/customers/{customer['id']}")
    customer_fits = fits_width(page)
    page.screenshot(path=str(screenshot_path("customer-phone", backend, repo_root, tmp_path)), full_page=True)
    too_wide = []
    for path in (
        "/dashboard/customers",
        "/dashboard/catalog",
        f"/dashboard/catalog/products/{catalog.product_id}",
        f"/dashboard/catalog/plans/{catalog.plan_ids['pro']}",
        "/dashboard/signals",
        "/dashboard/traces",
        "/dashboard/orders",
        "/dashboard/webhooks",
        "/dashboard/api-keys",
        "/dashboard/settings/payments",
    ):
        page.goto(f"{server.root}{path}")
        if not fits_width(page):
            too_wide.append(path)
    context.close()

    assert overview_fits
    assert customer_fits
    assert too_wide == []


def test_api_key_is_shown_once(desktop, server, tenant, store):
    operator = make_operator(store, tenant.organization_id)
    sign_in(desktop, server, operator)

    desktop.goto(f"{server.root}/dashboard/api-keys")
    desktop.fill("#name", "Production app")
    submit(desktop, "/dashboard/api-keys")
    key = desktop.inner_text("#new-api-key")
    desktop.reload()

    assert re.fullmatch(r"tsk_[A-Za-z0-9_-]{43}", key)
    assert key not in desktop.content()
    assert desktop.locator("#new-api-key").count() == 0
    assert "Production app" in desktop.inner_text("table")
