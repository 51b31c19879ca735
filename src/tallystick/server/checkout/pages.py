"""The hosted checkout page at /checkout/{id}: plan picker, buyer details and payment form."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.billing.changes import ChangeError, quote_change
from tallystick.server.checkout import forms, service
from tallystick.server.checkout.completion import (
    Completed,
    Declined,
    InvalidChoice,
    NotPayable,
    Redirected,
    begin_payment,
    existing_order,
    pay_checkout,
)
from tallystick.server.checkout.offers import OfferError, load_offers
from tallystick.server.checkout.providers import provider_for
from tallystick.server.checkout.schemas import CHECKOUT_ID_PLACEHOLDER
from tallystick.server.deps import DbSession, ReadSession
from tallystick.server.models import Checkout, CreditCurrency
from tallystick.server.orders.terms import PlanTerms, TermsError, monthly_allowance, price_terms
from tallystick.server.web import PAGE_HEADERS, format_credits, format_money, templates

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# Fields whose typed values are shown again when the form comes back with an error. Card
# fields are never echoed back.
_ECHOED_FIELDS = ("option", "name", "email", "phone", *forms.ADDRESS_FIELDS)


@dataclass(frozen=True)
class OptionView:
    """One plan card on the page, with every amount already formatted."""

    key: str
    title: str
    product_name: str
    price: str
    frequency: str
    one_time: str | None
    # For a customer changing plans: what the change costs now, or when it takes effect.
    change_note: str | None
    credits: list[str]
    features: list[str]


@dataclass
class PageState:
    """Form state of one rendering: the currency shown, the typed values and the errors."""

    currency: str
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    form_error: str | None = None


async def _posted_form(request: Request) -> dict[str, str]:
    """Read the url-encoded form body; repeated keys keep their last value."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


PostedForm = Annotated[dict[str, str], Depends(_posted_form)]


@router.get("/checkout/{checkout_id}", response_class=HTMLResponse)
def show_checkout(
    request: Request, checkout_id: str, session: ReadSession, currency: str | None = None
) -> Response:
    """Render the checkout page, or a page saying why it cannot be paid."""
    now = clock.now()
    checkout = service.find_checkout_for_page(session, checkout_id)
    if checkout is None:
        return _message_page(request, "not_found", None)
    status = service.effective_status(checkout, now)
    if status != "active":
        return _message_page(request, status, checkout)

    state = PageState(currency=_page_currency(checkout, currency))
    return _render_form(request, session, checkout, state, status_code=200)


@router.post("/checkout/{checkout_id}", response_class=HTMLResponse)
def submit_checkout(request: Request, checkout_id: str, session: DbSession, form: PostedForm) -> Response:
    """Take payment for the chosen plan; on success, send the buyer to the success URL."""
    now = clock.now()
    checkout = service.find_checkout_for_page(session, checkout_id)
    if checkout is None:
        return _message_page(request, "not_found", None)

    state = PageState(
        currency=_page_currency(checkout, form.get("currency")),
        values={key: form.get(key, "") for key in _ECHOED_FIELDS},
    )
    attempt = forms.read_form_token(
        request.app.state.secret_key,
        form.get("form_token", ""),
        checkout.id,
        request.cookies.get(forms.BROWSER_COOKIE),
    )
    if attempt is None:
        status = service.effective_status(checkout, now)
        if status != "active":
            return _message_page(request, status, checkout)
        state.form_error = (
            "This form has expired or was opened in another browser. "
            "Check your details and submit it again."
        )
        return _render_form(request, session, checkout, state, status_code=400)

    started = begin_payment(session, checkout.id, attempt, now)
    if started is None:
        return _message_page(request, "not_found", None)
    if isinstance(started, Completed):
        return _redirect_to_success(started.checkout)
    if isinstance(started, NotPayable):
        return _message_page(request, started.status, started.checkout)
    checkout = started

    provider = provider_for(session, checkout.organization_id, checkout.payment_provider)
    buyer_form = forms.read_buyer(
        form,
        ask_name_email=_asks_name_and_email(checkout),
        ask_phone=checkout.collect_phone,
        ask_address=checkout.collect_address,
    )
    details, card_errors = provider.read_form(form)
    state.errors = {**buyer_form.errors, **card_errors}
    if not form.get("option"):
        state.errors["option"] = "Choose a plan."
    if state.errors:
        state.form_error = "Check the highlighted fields and try again."
        return _render_form(request, session, checkout, state, status_code=400)

    result = pay_checkout(
        session,
        checkout=checkout,
        attempt=attempt,
        offer_key=form["option"],
        currency=state.currency,
        buyer=buyer_form.buyer,
        provider=provider,
        payment_details=details,
        now=now,
    )
    if isinstance(result, Completed):
        return _redirect_to_success(result.checkout)
    if isinstance(result, Redirected):
        return RedirectResponse(result.url, status_code=303, headers={"Cache-Control": "no-store"})
    if isinstance(result, NotPayable):
        return _message_page(request, result.status, result.checkout)
    if isinstance(result, Declined):
        state.form_error = result.message
        state.errors["card_number"] = result.message
        return _render_form(request, session, checkout, state, status_code=402)
    assert isinstance(result, InvalidChoice)
    state.form_error = result.message
    state.errors["option"] = result.message
    return _render_form(request, session, checkout, state, status_code=400)


def _asks_name_and_email(checkout: Checkout) -> bool:
    """Anonymous checkouts ask the buyer who they are; the others know the customer already."""
    return checkout.customer_id is None and checkout.external_customer_id is None


def _page_currency(checkout: Checkout, requested: str | None) -> str:
    allowed = list(checkout.allowed_currencies or [])
    if requested and requested.upper() in allowed:
        return requested.upper()
    if checkout.currency:
        return checkout.currency
    return "USD" if "USD" in allowed else allowed[0]


def _redirect_to_success(checkout: Checkout) -> RedirectResponse:
    target = checkout.success_url.replace(CHECKOUT_ID_PLACEHOLDER, checkout.id)
    # 303 turns the form POST into a GET of the success page, so a reload does not resubmit.
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


def _render_form(
    request: Request, session: Session, checkout: Checkout, state: PageState, *, status_code: int
) -> Response:
    options = _option_views(session, checkout, state.currency)
    provider = provider_for(session, checkout.organization_id, checkout.payment_provider)
    browser_id = request.cookies.get(forms.BROWSER_COOKIE) or forms.new_browser_id()
    selected = state.values.get("option") or (options[0].key if options else "")

    context: dict[str, Any] = {
        "checkout": checkout,
        "heading": _heading(options),
        "options": options,
        "selected": selected,
        "currency": state.currency,
        "currencies": list(checkout.allowed_currencies or []),
        "custom_cards": checkout.custom_cards or [],
        "ask_name_email": _asks_name_and_email(checkout),
        "ask_phone": checkout.collect_phone,
        "ask_address": checkout.collect_address,
        "provider_template": provider.form_template,
        "test_mode": provider.name == "test",
        "form_token": forms.issue_form_token(request.app.state.secret_key, checkout.id, browser_id),
        "values": state.values,
        "errors": state.errors,
        "form_error": state.form_error,
        "cancel_url": checkout.cancel_url,
        "expires_at": checkout.expires_at,
    }
    response = templates.TemplateResponse(
        request, "checkout/page.html", context, status_code=status_code, headers=PAGE_HEADERS
    )
    if request.cookies.get(forms.BROWSER_COOKIE) != browser_id:
        response.set_cookie(
            forms.BROWSER_COOKIE,
            browser_id,
            path="/checkout",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
    return response


def _heading(options: list[OptionView]) -> str:
    names = list(dict.fromkeys(option.product_name for option in options))
    return " and ".join(names) if names else "Checkout"


# (HTTP status, title, text) of the page shown instead of the form, by checkout status.
_MESSAGES = {
    "not_found": (
        404,
        "Checkout not found",
        "This checkout link is not valid. Ask the seller for a new link.",
    ),
    "expired": (
        410,
        "This checkout has expired",
        "This link can no longer be paid, and nothing was charged. Ask the seller for a new link.",
    ),
    "archived": (
        410,
        "This checkout is no longer available",
        "The seller has closed this link, and nothing was charged.",
    ),
    "completed": (
        200,
        "This checkout is complete",
        "The payment for this checkout has been received.",
    ),
}


def _message_page(request: Request, status: str, checkout: Checkout | None) -> Response:
    status_code, title, text = _MESSAGES[status]
    link = None
    if checkout is not None and status == "completed":
        link = ("Continue", checkout.success_url.replace(CHECKOUT_ID_PLACEHOLDER, checkout.id))
    elif checkout is not None and checkout.cancel_url:
        link = ("Return to the seller", checkout.cancel_url)
    context = {"title": title, "text": text, "link": link, "status": status}
    return templates.TemplateResponse(
        request, "checkout/message.html", context, status_code=status_code, headers=PAGE_HEADERS
    )


def _option_views(session: Session, checkout: Checkout, currency: str) -> list[OptionView]:
    """Return the plan cards priced in `currency`; offers without a price there are left out."""
    try:
        offers = load_offers(session, checkout.organization_id, checkout.products, require_active=False)
    except OfferError as error:
        log.warning(
            "checkout.offer_unavailable",
            extra={"checkout_id": checkout.id, "field": error.field, "reason": error.message},
        )
        return []

    currency_names = {
        row.id: row.name
        for row in session.scalars(
            select(CreditCurrency).where(CreditCurrency.organization_id == checkout.organization_id)
        )
    }
    now = clock.now()
    views = []
    for offer in offers:
        try:
            terms = price_terms(offer.product, offer.plan, currency)
        except TermsError:
            continue
        one_time = terms.first_invoice_amount - terms.period_amount
        change_note = None
        current = existing_order(session, checkout, offer.product.id)
        if current is not None:
            one_time = 0
            try:
                quote = quote_change(current, terms, now)
            except ChangeError as error:
                change_note = str(error)
            else:
                change_note = (
                    f"{format_money(quote.amount_due, currency)} due today for the rest of this period"
                    if quote.kind == "upgrade"
                    else f"Starts {quote.effective_at:%B} {quote.effective_at.day}, {quote.effective_at.year}; nothing due today"
                )
        views.append(
            OptionView(
                key=offer.key,
                title=offer.title,
                product_name=offer.product.name,
                price=format_money(terms.period_amount, currency),
                frequency=_per_period(terms.period_months),
                one_time=format_money(one_time, currency) if one_time else None,
                change_note=change_note,
                credits=_credit_lines(terms, currency_names),
                features=list(offer.features),
            )
        )
    return views


def _per_period(months: int) -> str:
    return {1: "per month", 3: "per quarter", 12: "per year"}.get(months, f"every {months} months")


def _period_noun(months: int) -> str:
    return {1: "month", 3: "quarter", 12: "year"}.get(months, f"{months} months")


def _credit_lines(terms: PlanTerms, currency_names: dict[str, str]) -> list[str]:
    lines = []
    for benefit in terms.benefits:
        name = currency_names.get(benefit.credits_currency_id, "credits")
        if benefit.allocation_cadence == "upfront":
            amount: Decimal = benefit.amount
            when = "every month" if terms.period_months == 1 else f"up front each {_period_noun(terms.period_months)}"
        else:
            amount = monthly_allowance(benefit, terms.period_months)
            when = "every month"
        lines.append(f"{format_credits(amount)} {name} {when}")
    return lines

