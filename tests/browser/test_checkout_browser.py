"""A buyer in a real browser picks Pro on the hosted checkout, pays with the test card and
lands on the app, which verifies the checkout before granting access."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.checkout_helpers import create_checkout
from tests.guide import create_guide_catalog

SIGNED_IN_USER = "user-42"


@dataclass
class App:
    """The seller's app on loopback. Its success page grants access only when the checkout is
    completed and belongs to the signed-in user."""

    root: str
    verified: list[tuple[str, bool]]


@pytest.fixture
def app(tenant) -> Iterator[App]:  # type: ignore[no-untyped-def]
    client = tenant.paid()
    verified: list[tuple[str, bool]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's method name
            checkout_id = parse_qs(urlsplit(self.path).query).get("checkout", [""])[0]
            checkout = client.checkouts.get_checkout(checkout_id)
            granted = checkout.status == "completed" and checkout.external_customer_id == SIGNED_IN_USER
            verified.append((checkout_id, granted))
            body = f"<h1>{'Access granted' if granted else 'Access denied'}</h1>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield App(root=f"http://127.0.0.1:{server.server_address[1]}", verified=verified)
    server.shutdown()
    thread.join(timeout=10)


def fill_payment(page, card: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#address_line1", "1 Main Street")
    page.fill("#address_city", "Springfield")
    page.fill("#address_postal_code", "12345")
    page.fill("#address_country", "United States")
    page.fill("#card_number", card)
    page.fill("#card_expiry", "12 / 34")
    page.fill("#card_cvc", "123")


def test_buyer_picks_pro_pays_and_gets_credits(tenant, server, app, phone_page, tmp_path: Path):
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    checkout = create_checkout(
        tenant,
        products=[{"id": catalog.product_id}],
        externalCustomerId=SIGNED_IN_USER,
        successUrl=f"{app.root}/welcome?checkout={{CHECKOUT_ID}}",
    )
    requested: list[str] = []
    phone_page.on("request", lambda request: requested.append(request.url))

    phone_page.goto(checkout["url"])
    phone_page.click(f'label[data-option="{catalog.plan_ids["pro"]}"]')
    fill_payment(phone_page, "4242 4242 4242 4242")
    fits_width = phone_page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone_page.screenshot(path=str(tmp_path / "checkout-phone.png"), full_page=True)
    phone_page.click("button[type=submit]")
    phone_page.wait_for_url(f"{app.root}/welcome?checkout={checkout['id']}")

    assert fits_width
    assert phone_page.inner_text("h1") == "Access granted"
    assert app.verified == [(checkout["id"], True)]
    assert all(url.startswith((server.root, app.root)) for url in requested), requested
    completed = client.checkouts.get_checkout(checkout["id"])
    assert completed.status == "completed"
    assert completed.order_id is not None
    assert completed.selected_product.plan.id == catalog.plan_ids["pro"]
    [balance] = client.customers.get_customer_credit_balances_by_external_id(SIGNED_IN_USER).data
    assert balance.currency_key == "chat_credits"
    assert balance.available == 2000


def test_declined_card_shows_message_and_stays_payable(tenant, app, phone_page):
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    checkout = create_checkout(
        tenant,
        products=[{"id": catalog.product_id}],
        externalCustomerId=SIGNED_IN_USER,
        successUrl=f"{app.root}/welcome?checkout={{CHECKOUT_ID}}",
    )

    phone_page.goto(checkout["url"])
    phone_page.click(f'label[data-option="{catalog.plan_ids["pro"]}"]')
    fill_payment(phone_page, "4000 0000 0000 0002")
    phone_page.click("button[type=submit]")

    assert "Your card was declined." in phone_page.inner_text("[role=alert]")
    assert phone_page.is_checked(f'input[value="{catalog.plan_ids["pro"]}"]')
    assert phone_page.input_value("#card_number") == ""
    assert client.checkouts.get_checkout(checkout["id"]).status == "active"
    assert app.verified == []
