"""The public value receipt page at /receipts/{token}.

The page shows a receipt when it is published and not past its expiry, or when the request
carries a valid signed link (``?access=...``). It shows the customer, the period, each value
type's total with its unit, and how each was calculated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any

from babel.numbers import format_decimal
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tallystick.server import clock
from tallystick.server.models import Customer
from tallystick.server.models.value import ValueReceipt, ValueReceiptLine
from tallystick.server.value import links, receipts
from tallystick.server.web import LOCALE, PAGE_HEADERS, format_money, templates

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# Decimal places shown for quantities on the page; the API returns them exact.
SHOWN_PLACES = 2

REASON_TEXT = {
    "missing_field": "a signal data field was missing",
    "malformed_field": "a signal data field was malformed",
    "unbound_variable": "a calculation input had no value",
    "invalid_parameter": "a calculation input was invalid",
    "formula_error": "the calculation failed",
    "result_not_a_number": "the calculation gave no number",
    "value_out_of_range": "the value was out of range",
}


@dataclass
class LineView:
    name: str
    description: str | None
    figure: str
    money: str | None
    signal_count: int
    unknown_count: int
    unknown_reasons: list[str]
    inputs: list[dict[str, Any]]


@router.get("/receipts/{token}")
def value_receipt_page(
    token: str, request: Request, access: Annotated[str | None, Query(max_length=1000)] = None
) -> Response:
    store = request.app.state.store
    now = clock.now()
    with store.read_sessions() as session:
        receipt = receipts.find_by_public_token(session, token)
        if receipt is None:
            return _message(request, 404, "Value receipt not found", "This link is not valid. Ask the sender for a new one.")
        if not receipts.is_publicly_visible(receipt, now) and not _has_access(request, receipt, access, now):
            return _message(
                request,
                403,
                "This value receipt is private",
                "The receipt is not shared, or this link has expired. Ask the sender for a new link.",
            )
        customer = session.get(Customer, receipt.customer_id)
        lines = [_line_view(line, receipt.currency) for line in receipts.receipt_lines(session, receipt.id)]
        context = {
            "receipt": receipt,
            "customer_name": customer.name if customer else receipt.customer_id,
            "period": _period_text(receipt.start_date, receipt.end_date),
            "lines": lines,
            "total": format_money(receipt.total_delivered_value, receipt.currency),
            "has_money": any(line.money is not None for line in lines),
            "sealed": receipt.status == receipts.STATUS_SEALED,
        }
    return templates.TemplateResponse(request, "value/receipt.html", context, headers=PAGE_HEADERS)


def _has_access(request: Request, receipt: ValueReceipt, token: str | None, now: datetime) -> bool:
    if not token:
        return False
    secret = getattr(request.app.state, "secret_key", None)
    if not secret:
        return False
    granted = links.read_access(secret, token, now)
    return granted is not None and granted.receipt_id == receipt.id


def _message(request: Request, status_code: int, title: str, text: str) -> Response:
    context = {"title": title, "text": text}
    return templates.TemplateResponse(
        request, "value/message.html", context, status_code=status_code, headers=PAGE_HEADERS
    )


def _period_text(start: datetime, end: datetime) -> str:
    """Describe a period whose end is exclusive: whole days by their first and last day."""
    if start.timetz().replace(tzinfo=None) == time(0) and end.timetz().replace(tzinfo=None) == time(0):
        last_day = (end - timedelta(days=1)).date()
        if last_day == start.date():
            return start.date().strftime("%b %-d, %Y")
        return f"{start.date().strftime('%b %-d, %Y')} to {last_day.strftime('%b %-d, %Y')}"
    return f"{start.strftime('%b %-d, %Y %H:%M')} to {end.strftime('%b %-d, %Y %H:%M')} UTC"


def _number(value: Decimal) -> str:
    rounded = value.quantize(Decimal(1).scaleb(-SHOWN_PLACES), rounding=ROUND_HALF_EVEN)
    return format_decimal(rounded.normalize(), locale=LOCALE, decimal_quantization=False)


def _figure(line: ValueReceiptLine, currency: str) -> str:
    unit = line.unit
    kind = unit.get("type")
    if kind == "monetary":
        return format_money(line.money or 0, currency)
    if kind == "percentage":
        return f"{_number(line.quantity * 100)} %"
    if kind == "duration":
        return f"{_number(line.quantity)} {unit.get('durationUnit', '')}".strip()
    label = unit.get("unit_display") or unit.get("unit") or ""
    return f"{_number(line.quantity)} {label}".strip()


def _line_view(line: ValueReceiptLine, currency: str) -> LineView:
    money = None
    if line.money is not None and line.unit.get("type") != "monetary":
        money = format_money(line.money, currency)
    reasons = [
        f"{count} because {REASON_TEXT.get(code, code.replace('_', ' '))}"
        for code, count in sorted(line.unknown_reasons.items())
    ]
    return LineView(
        name=line.name,
        description=line.description,
        figure=_figure(line, currency),
        money=money,
        signal_count=line.signal_count,
        unknown_count=line.unknown_count,
        unknown_reasons=reasons,
        inputs=[_input_view(entry, currency) for entry in line.inputs or []],
    )


def _input_view(entry: dict[str, Any], currency: str) -> dict[str, Any]:
    variables = [
        {"label": variable.get("label", variable.get("id")), "text": _source_text(variable, currency)}
        for variable in entry.get("variables", [])
    ]
    conversion = entry.get("monetaryConversion")
    if conversion:
        variables.extend(
            {"label": variable["label"], "text": f"{_amount_text(variable['value'], 'money', None, currency)} per unit"}
            for variable in conversion.get("variables", [])
        )
    return {"label": entry.get("label") or entry.get("eventName"), "variables": variables}


def _source_text(variable: dict[str, Any], currency: str) -> str:
    source = variable.get("source")
    if source == "data":
        text = f"taken from each signal's {variable['field']} field"
        if variable.get("unitField"):
            text += f", in the unit its {variable['unitField']} field names"
        return text
    if source == "segment_table":
        return f"looked up in table {variable.get('table')}"
    if source in ("fixed", "override"):
        amount = _amount_text(variable.get("value"), variable.get("type"), variable.get("unit"), currency)
        return amount + (" (agreed for this customer)" if source == "override" else "")
    return "not set"


def _amount_text(raw: Any, kind: str | None, unit: str | None, currency: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        return str(raw)
    try:
        number = Decimal(str(raw))
    except ArithmeticError:
        return str(raw)
    if kind == "money":
        return format_money(number, currency)  # type: ignore[arg-type]
    if kind == "duration":
        return f"{_number(number)} {unit or ''}".strip()
    return _number(number)
