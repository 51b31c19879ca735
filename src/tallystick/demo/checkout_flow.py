"""Buy a plan through the hosted checkout page over HTTP, as a browser would."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import httpx

from tallystick import Client

TEST_CARD = {"card_number": "4242 4242 4242 4242", "card_expiry": "12/34", "card_cvc": "123"}

_FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')
_CURRENCY = re.compile(r'name="currency" value="([^"]*)"')


class CheckoutFailed(RuntimeError):
    """The hosted page did not complete the purchase; the message gives what the page showed."""


def buy_plan(api: Client, *, product_id: str, plan_id: str, customer: str, success_url: str) -> dict:
    """Create a checkout for `customer`, pay for `plan_id` with the test card, and verify it.

    Returns the completed checkout as the API reports it.
    """
    checkout = api.post(
        "/checkouts/",
        {
            "products": [{"id": product_id}],
            "externalCustomerId": customer,
            "successUrl": success_url,
            "collectAddress": False,
        },
    )

    # A browser: keeps cookies, and does not follow the final redirect to the app.
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        page = browser.get(checkout["url"])
        if page.status_code != 200:
            raise CheckoutFailed(f"the checkout page returned HTTP {page.status_code}")
        token = _FORM_TOKEN.search(page.text)
        currency = _CURRENCY.search(page.text)
        if token is None:
            raise CheckoutFailed("the checkout page has no payment form")
        form = {
            "form_token": token.group(1),
            "currency": currency.group(1) if currency else "USD",
            "option": plan_id,
            **TEST_CARD,
        }
        submitted = browser.post(checkout["url"], data=form)
        if submitted.status_code not in (302, 303):
            message = re.search(r'class="[^"]*error[^"]*"[^>]*>([^<]+)<', submitted.text)
            raise CheckoutFailed(
                f"payment was not accepted ({submitted.status_code}): "
                f"{message.group(1).strip() if message else 'see the checkout page'}"
            )
        landing = urljoin(checkout["url"], submitted.headers["location"])
    if checkout["id"] not in landing:
        raise CheckoutFailed(f"the success URL {landing} does not carry the checkout id")

    # Step 7 of the guide: verify the checkout before granting access.
    completed = api.get(f"/checkouts/{checkout['id']}")
    if completed["status"] != "completed" or completed.get("externalCustomerId") != customer:
        raise CheckoutFailed(f"checkout {checkout['id']} is {completed['status']}, not completed")
    return completed
