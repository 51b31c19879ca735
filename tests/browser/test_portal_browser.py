"""A customer opens the portal from a portal link in a real browser. The portal shows the
balance that the dashboard shows, and its upgrade button opens a checkout. An expired link
opens nothing.

With TALLYSTICK_UPDATE_SCREENSHOTS=1, the SQLite run saves screenshots of the portal (desktop and
phone) and of the checkout page the upgrade button opens into docs/screenshots/.
"""

from __future__ import annotations

from datetime import timedelta

from tests.browser.conftest import PHONE_VIEWPORT
from tests.browser.test_dashboard_browser import (
    DESKTOP_VIEWPORT,
    NOW,
    buy_pro,
    fits_width,
    frozen_clock,  # noqa: F401 - a fixture
    screenshot_path,
    send_daily_messages,
    sign_in,
)
from tests.dashboard_helpers import make_operator
from tests.guide import create_guide_catalog
from tests.test_value_api import create_minutes_metric


def set_up_customer(tenant) -> dict:  # type: ignore[no-untyped-def]
    """Ada buys Pro, chats for two weeks and saves time; her value receipt covers the month."""
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    customer = tenant.http.post("/customers/", json={"name": "Ada Lovelace", "externalId": "user-42"}).json()
    buy_pro(tenant, catalog.product_id, catalog.plan_ids["pro"], "user-42")
    create_minutes_metric(client)
    send_daily_messages(tenant)
    receipt = tenant.http.post(
        "/value-receipts/sync",
        json={
            "externalCustomerId": "user-42",
            "startDate": (NOW - timedelta(days=30)).isoformat(),
            "endDate": (NOW + timedelta(days=1)).isoformat(),
        },
    )
    assert receipt.status_code in (200, 201), receipt.text
    return customer


def test_portal_shows_dashboard_balance_and_upgrades(
    browser, server, tenant, store, backend, repo_root, tmp_path, frozen_clock  # noqa: F811
):
    customer = set_up_customer(tenant)
    portal = tenant.paid().customer_portals.create_customer_portal(
        external_customer_id="user-42", return_url="https://app.example.com/account"
    )
    desktop_context = browser.new_context(viewport=DESKTOP_VIEWPORT)
    operator_page = desktop_context.new_page()
    sign_in(operator_page, server, make_operator(store, tenant.organization_id))
    operator_page.goto(f"{server.root}/dashboard/customers/{customer['id']}")
    dashboard_balance = operator_page.inner_text('[data-balance="chat_credits"]')
    customer_page = desktop_context.new_page()
    customer_page.goto(portal.url)
    customer_page.screenshot(path=str(screenshot_path("portal-desktop", backend, repo_root, tmp_path)), full_page=True)
    desktop_context.close()

    phone = browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=2, is_mobile=True)
    page = phone.new_page()
    page.goto(portal.url)
    portal_balance = page.inner_text('[data-balance="chat_credits"]')
    portal_text = page.inner_text("main")
    portal_fits = fits_width(page)
    page.screenshot(path=str(screenshot_path("portal-phone", backend, repo_root, tmp_path)), full_page=True)
    with page.expect_navigation():
        page.click("button:has-text(\"Upgrade plan\")")
    checkout_url = page.url
    page.screenshot(path=str(screenshot_path("checkout-phone", backend, repo_root, tmp_path)), full_page=True)
    phone.close()

    assert dashboard_balance == portal_balance == "1,883"
    assert "ChatBot · Pro" in portal_text
    assert "Minutes saved" in portal_text
    assert "$79.00" in portal_text
    assert portal_fits
    assert checkout_url.startswith(f"{server.root}/checkout/chk_")
    checkout = tenant.http.get(f"/checkouts/{checkout_url.rsplit('/', 1)[1]}").json()
    assert checkout["customerId"] == customer["id"]
    assert checkout["successUrl"] == "https://app.example.com/account"
    assert len(checkout["products"][0]["plans"]) == 2


def test_expired_portal_link_is_rejected(browser, tenant, frozen_clock):  # noqa: F811
    from tallystick.server import clock

    set_up_customer(tenant)
    portal = tenant.paid().customer_portals.create_customer_portal(
        external_customer_id="user-42", expires_at=NOW + timedelta(minutes=10)
    )
    context = browser.new_context(viewport=PHONE_VIEWPORT, is_mobile=True)
    page = context.new_page()

    clock.freeze(NOW + timedelta(minutes=11))
    response = page.goto(portal.url)

    assert response.status == 410
    assert page.inner_text("h1") == "This portal link has expired"
    assert page.locator("[data-balance]").count() == 0
    context.close()
