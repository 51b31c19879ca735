"""Server-rendered pages: the Jinja2 environment, shared filters and the static files folder.

Every page extends templates/base.html and uses static/tallystick.css; nothing is loaded from
another host, since many installs have no internet access.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from babel.numbers import format_currency, format_decimal, get_currency_precision
from fastapi.templating import Jinja2Templates

from tallystick import __version__

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
# Pages are rendered in one locale until they are translated.
LOCALE = "en_US"

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


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters["money"] = format_money
templates.env.filters["credits"] = format_credits
templates.env.globals["static_version"] = __version__
