"""Helpers for checkout tests: create a checkout over the API and drive its hosted page over HTTP."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import httpx

PAYING_CARD = {"card_number": "4242 4242 4242 4242", "card_expiry": "12 / 34", "card_cvc": "123"}
DECLINED_CARD = {"card_number": "4000 0000 0000 0002", "card_expiry": "12 / 34", "card_cvc": "123"}
ADDRESS = {
    "address_line1": "1 Main Street",
    "address_city": "Springfield",
    "address_postal_code": "12345",
    "address_country": "United States",
}
SUCCESS_URL = "https://app.example.com/welcome?checkout={CHECKOUT_ID}"


def create_checkout(tenant, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Create a checkout through the REST API and return its JSON."""
    body.setdefault("successUrl", SUCCESS_URL)
    response = tenant.http.post("/checkouts/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


@dataclass
class HostedPage:
    """A browser-like client of one checkout page: keeps the page's cookie between requests."""

    url: str
    client: httpx.Client

    def open(self) -> tuple[httpx.Response, str]:
        """GET the page; return the response and its form token ("" when there is no form)."""
        response = self.client.get(self.url)
        return response, form_token(response.text)

    def submit(self, token: str, fields: dict[str, str]) -> httpx.Response:
        return self.client.post(self.url, data={"form_token": token, "currency": "USD", **fields})

    def pay(self, option: str, **fields: str) -> httpx.Response:
        """Open the page and submit it once with `option` and the paying test card."""
        _, token = self.open()
        return self.submit(token, {"option": option, **ADDRESS, **PAYING_CARD, **fields})


def hosted_page(checkout: dict[str, Any]) -> HostedPage:
    return HostedPage(url=checkout["url"], client=httpx.Client(timeout=30, follow_redirects=False))


def form_token(page_html: str) -> str:
    match = re.search(r'name="form_token" value="([^"]+)"', page_html)
    return html.unescape(match.group(1)) if match else ""


def page_text(page_html: str) -> str:
    """Return the visible text of a page, tags stripped and whitespace collapsed."""
    text = re.sub(r"<[^>]+>", " ", page_html)
    return " ".join(html.unescape(text).split())
