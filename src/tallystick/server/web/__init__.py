"""Server-rendered pages: the Jinja2 environment, shared filters and the static files folder.

Every page extends templates/base.html and uses static/tallystick.css; nothing is loaded from
another host, since many installs have no internet access.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel.numbers import format_currency, format_decimal, get_currency_precision
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from tallystick import __version__
from tallystick.server.encryption import EncryptionKeyError
from tallystick.server.errors import DATABASE_UNAVAILABLE_ERRORS

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
# Pages are rendered in one locale until they are translated.
LOCALE = "en_US"
# Paths of the server-rendered pages, whose errors are pages too.
PAGE_PATH_PREFIXES = ("/dashboard", "/checkout/", "/portal/", "/receipts/")

# Headers of every page: no framing by other sites (clickjacking), only this server's assets.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def format_money(minor_units: int, currency: str) -> str:
    """Format an amount in minor units (cents for USD), such as 7900 USD -> "$79.00"."""
    amount = Decimal(minor_units).scaleb(-get_currency_precision(currency))
    return format_currency(amount, currency, locale=LOCALE)


def format_credits(amount: Decimal) -> str:
    """Format a credit quantity with grouping and no trailing zeros, such as 2000 -> "2,000"."""
    return format_decimal(amount.normalize(), locale=LOCALE, decimal_quantization=False)


# Costs show four decimal places, and up to ten when they are below $0.0001.
_USD_COST_FORMAT = "¤#,##0.0000"
_SMALL_USD_COST = Decimal("0.0001")


def format_usd_cost(amount: Decimal | str) -> str:
    """Format an AI cost in USD with four decimal places, such as 0.0123 -> "$0.0123".

    Costs are often fractions of a cent, which whole-cent formatting would show as $0.00. A
    smaller amount that is not zero keeps two significant digits (0.0000451 -> "$0.000045"),
    so that a cheap LLM call does not read as free. A string is read as an exact decimal.
    """
    amount = Decimal(amount)
    pattern = _USD_COST_FORMAT
    if amount and abs(amount) < _SMALL_USD_COST:
        # Decimal.adjusted() returns the exponent of the first significant digit, such as -5
        # for 0.0000451.
        places = min(-abs(amount).adjusted() + 1, 10)
        pattern = _USD_COST_FORMAT + "#" * (places - 4)
    return format_currency(amount, "USD", format=pattern, locale=LOCALE, currency_digits=False)


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters["money"] = format_money
templates.env.filters["credits"] = format_credits
templates.env.filters["usd_cost"] = format_usd_cost
templates.env.globals["static_version"] = __version__


class PageError(Exception):
    """A page that stops a request: rendered as templates/message.html with `status`.

    A 3xx with a Location header sends the browser there instead.
    """

    def __init__(self, status: int, title: str, text: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.text = text
        self.headers = headers or {}


def install_page_errors(app: FastAPI) -> None:
    """Render PageError, an unavailable database and an unreadable stored secret as HTML pages
    with the pages' headers.

    Call it after `errors.install_error_handlers`, whose handlers of the last two it wraps.
    """

    @app.exception_handler(PageError)
    async def _page_error(request: Request, error: PageError) -> Response:
        context = {"title": error.title, "text": error.text}
        return templates.TemplateResponse(
            request, "message.html", context, status_code=error.status, headers={**PAGE_HEADERS, **error.headers}
        )

    for error_type in (*DATABASE_UNAVAILABLE_ERRORS, EncryptionKeyError):
        app.add_exception_handler(error_type, _as_page_when_on_page(app.exception_handlers[error_type]))


def _as_page_when_on_page(api_handler: Callable[[Request, Any], Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Wrap an API handler of a 503 so that a page request gets an HTML page instead of JSON."""

    async def handle(request: Request, error: Exception) -> Response:
        # The API's handler logs the error and sets Retry-After when a retry can help.
        response = await api_handler(request, error)
        if not request.url.path.startswith(PAGE_PATH_PREFIXES):
            return response
        context = {"title": "Temporarily unavailable", "text": "This page cannot be loaded right now. Try again in a moment."}
        if isinstance(error, EncryptionKeyError) and request.url.path.startswith("/dashboard"):
            # Operators can fix this, and waiting does not: name the cause. Buyers and customers
            # on other pages do not see how the server is configured.
            context = {"title": "Server misconfigured", "text": f"This server cannot read a stored secret: {error}."}
        headers = dict(PAGE_HEADERS)
        if "Retry-After" in response.headers:
            headers["Retry-After"] = response.headers["Retry-After"]
        return templates.TemplateResponse(request, "message.html", context, status_code=503, headers=headers)

    return handle
