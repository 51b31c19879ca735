"""Wire models of checkouts, as the Paid v2 API spells them, and their serializer."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from tallystick.server.models import Checkout
from tallystick.server.schemas import (
    PaginationOut,
    RequestModel,
    ResponseModel,
    StorableDatetime,
    check_path_segment,
)

CHECKOUT_STATUSES = ("active", "completed", "expired", "archived")
# The text in `successUrl` replaced by the checkout's id when the buyer is sent back.
CHECKOUT_ID_PLACEHOLDER = "{CHECKOUT_ID}"
# Most products and custom cards one checkout may carry.
MAX_PRODUCTS = 20
MAX_CUSTOM_CARDS = 10


def check_web_url(value: str | None) -> str | None:
    """Reject anything but an absolute http or https URL."""
    if value is None:
        return None
    parts = urlsplit(value.replace(CHECKOUT_ID_PLACEHOLDER, "id"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http or https URL")
    return value


class CheckoutPlanIn(RequestModel):
    id: str = Field(min_length=1, max_length=40)
    features: list[str] | None = Field(
        default=None, max_length=20, description="Bullet points shown under the plan on the page."
    )

    @field_validator("features")
    @classmethod
    def _short_features(cls, value: list[str] | None) -> list[str] | None:
        for feature in value or []:
            if not feature.strip() or len(feature) > 200:
                raise ValueError("each feature must be 1 to 200 characters")
        return value


class CheckoutProductIn(RequestModel):
    id: str = Field(min_length=1, max_length=40, description="Product id, such as prod_...")
    plans: list[CheckoutPlanIn] | None = Field(
        default=None, description="Plans to offer; omitted offers every active plan of the product."
    )


class CustomCardIn(RequestModel):
    label: str = Field(min_length=1, max_length=200)
    price_text: str | None = Field(default=None, max_length=100)
    button_text: str | None = Field(default=None, max_length=100)
    button_url: str | None = Field(default=None, max_length=2048)

    @field_validator("button_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        return check_web_url(value)


class CheckoutCreate(RequestModel):
    products: list[CheckoutProductIn] = Field(min_length=1, max_length=MAX_PRODUCTS)
    customer_id: str | None = Field(default=None, min_length=1, max_length=40)
    external_customer_id: str | None = Field(default=None, min_length=1, max_length=255)
    success_url: str = Field(
        max_length=2048,
        description="Where the buyer goes after paying; {CHECKOUT_ID} is replaced by the id.",
    )
    cancel_url: str | None = Field(default=None, max_length=2048)
    expires_at: StorableDatetime | None = Field(default=None, description="Default: 24 hours from now.")
    metadata: dict[str, Any] | None = None
    collect_address: bool | None = Field(default=None, description="Default: true.")
    collect_phone: bool | None = Field(default=None, description="Default: false.")
    single_use: bool | None = Field(
        default=None, description="Default: true. A reusable checkout stays active after a purchase."
    )
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code.")
    custom_cards: list[CustomCardIn] | None = Field(default=None, max_length=MAX_CUSTOM_CARDS)

    @field_validator("success_url", "cancel_url")
    @classmethod
    def _web_urls(cls, value: str | None) -> str | None:
        return check_web_url(value)

    _external_customer_id_check = field_validator("external_customer_id")(check_path_segment)


class CheckoutPlanOut(ResponseModel):
    id: str
    features: list[str] | None = None


class CheckoutProductOut(ResponseModel):
    id: str
    plans: list[CheckoutPlanOut] | None = None


class CustomCardOut(ResponseModel):
    label: str
    price_text: str | None = None
    button_text: str | None = None
    button_url: str | None = None


class PlanRefOut(ResponseModel):
    id: str
    name: str | None = None
    external_id: str | None = None


class SelectedProductOut(ResponseModel):
    id: str
    plan: PlanRefOut | None = None


class CheckoutOut(ResponseModel):
    id: str
    url: str
    status: str = Field(description="active, completed, expired or archived.")
    products: list[CheckoutProductOut]
    customer_id: str | None = None
    external_customer_id: str | None = None
    success_url: str
    cancel_url: str | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    collect_address: bool
    collect_phone: bool
    single_use: bool
    currency: str | None = None
    allowed_currencies: list[str]
    custom_cards: list[CustomCardOut] | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class CheckoutDetailsOut(CheckoutOut):
    order_id: str | None = None
    selected_product: SelectedProductOut | None = None


class CheckoutListOut(ResponseModel):
    data: list[CheckoutOut]
    pagination: PaginationOut


def checkout_out(
    checkout: Checkout, status: str, selected: SelectedProductOut | None = None
) -> CheckoutDetailsOut:
    """Serialize a checkout whose current status is `status` (see service.effective_status)."""
    return CheckoutDetailsOut(
        id=checkout.id,
        url=checkout.url,
        status=status,
        products=[CheckoutProductOut.model_validate(item) for item in checkout.products],
        customer_id=checkout.customer_id,
        external_customer_id=checkout.external_customer_id,
        success_url=checkout.success_url,
        cancel_url=checkout.cancel_url,
        expires_at=checkout.expires_at,
        metadata=checkout.metadata_,
        collect_address=checkout.collect_address,
        collect_phone=checkout.collect_phone,
        single_use=checkout.single_use,
        currency=checkout.currency,
        allowed_currencies=list(checkout.allowed_currencies or []),
        custom_cards=[CustomCardOut.model_validate(card) for card in checkout.custom_cards or []] or None,
        created_at=checkout.created_at,
        updated_at=checkout.updated_at,
        completed_at=checkout.completed_at,
        order_id=checkout.order_id,
        selected_product=selected,
    )
