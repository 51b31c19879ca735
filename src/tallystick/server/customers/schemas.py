"""Wire models of customers, as the Paid v2 API spells them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from tallystick.server.schemas import (
    PaginationOut,
    RequestModel,
    ResponseModel,
    StorableDatetime,
    check_path_segment,
)

CREATION_STATES = ("draft", "active")
CUSTOMER_STATUSES = ("active", "churned")


class BillingAddress(RequestModel):
    line1: str | None = Field(default=None, max_length=500)
    line2: str | None = Field(default=None, max_length=500)
    city: str | None = Field(default=None, max_length=200)
    state: str | None = Field(default=None, max_length=200)
    zip_code: str | None = Field(default=None, max_length=32)
    country: str | None = Field(default=None, max_length=64)


class CustomerFields(RequestModel):
    legal_name: str | None = Field(default=None, max_length=500)
    email: str | None = Field(
        default=None,
        max_length=320,
        description="Billing email address, checked by its syntax only. Null, absent or \"\" means none.",
    )
    phone: str | None = Field(default=None, max_length=64)
    website: str | None = Field(default=None, max_length=2048)
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    billing_address: BillingAddress | None = None
    creation_state: str | None = None
    vat_number: str | None = Field(default=None, max_length=64)
    metadata: dict[str, Any] | None = None
    # Not in the Paid API: the test clock whose time the customer's billing follows; null
    # takes the customer off its clock.
    test_clock_id: str | None = Field(default=None, max_length=40)

    _external_id_check = field_validator("external_id")(check_path_segment)

    @field_validator("creation_state")
    @classmethod
    def _known_state(cls, value: str | None) -> str | None:
        if value is not None and value not in CREATION_STATES:
            raise ValueError(f"must be one of {', '.join(CREATION_STATES)}")
        return value


class CustomerCreate(CustomerFields):
    name: str = Field(min_length=1, max_length=500)
    default_currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str | None) -> str | None:
        problem = email_problem(value)
        if problem is not None:
            raise PydanticCustomError("value_error", "{problem}", {"problem": problem})
        return value


class CustomerUpdate(CustomerFields):
    """A partial update. The email is checked by `update_customer`, which lets a client send back
    the address the customer already has, even one that the check now rejects."""

    name: str | None = Field(default=None, min_length=1, max_length=500)
    churn_date: StorableDatetime | None = None


def email_problem(value: str | None) -> str | None:
    """Return why `value` is not an email address, or None when it is one or is empty.

    Responses spell a missing email "", and a client that sends a customer back may send it.
    The check is of syntax alone, with no DNS look-up. With email-validator 2.4's defaults the
    domain needs a dot and must not be reserved (.local, .localhost, .invalid, .onion, .arpa).
    test_environment=True lets .test through, which RFC 6761 reserves for tests. The address is
    stored as sent, not in the normalized form that the validator returns.
    """
    if not value:
        return None
    try:
        validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        return f"value is not a valid email address: {error}"
    return None


class BillingAddressOut(ResponseModel):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    zip_code: str | None = None
    country: str | None = None


class CustomerOut(ResponseModel):
    id: str
    name: str
    legal_name: str | None = None
    email: str
    phone: str
    website: str
    external_id: str | None = None
    billing_address: BillingAddressOut | None = None
    creation_state: str
    status: str
    churn_date: datetime | None = None
    vat_number: str | None = None
    metadata: dict[str, Any] | None = None
    default_currency: str
    connections: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    test_clock_id: str | None = Field(
        default=None, description="Not in the Paid API. The test clock the customer lives on, if any."
    )


class CustomerListOut(ResponseModel):
    data: list[CustomerOut]
    pagination: PaginationOut


class CustomerStateCustomer(ResponseModel):
    id: str
    name: str
    external_id: str | None = None
    billing_address: BillingAddressOut | None = None


class CustomerStateSeats(ResponseModel):
    total: int = 0
    assigned: int = 0
    unassigned: int = 0
    data: list[dict[str, Any]] = []


class CustomerStateCreditBalance(ResponseModel):
    credits_currency_id: str
    currency_name: str
    currency_key: str
    balance: float


class CustomerStateCredits(ResponseModel):
    balances: list[CustomerStateCreditBalance]


class CustomerStateOut(ResponseModel):
    customer: CustomerStateCustomer
    default_currency: str
    orders: list[dict[str, Any]]
    seats: CustomerStateSeats
    checkout_links: list[dict[str, Any]]
    credits: CustomerStateCredits
    timestamp: datetime
