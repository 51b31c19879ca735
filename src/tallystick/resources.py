"""The API's resources (customers, credits, signals, ...) as method namespaces of a client.

Each method builds one request and hands it to the client's sender. The same classes serve
Client and AsyncClient: with Client a method returns the decoded body, with AsyncClient it
returns an awaitable of it.

Arguments are keyword-only and snake_case; they become the body's top-level camelCase keys
(`external_id` -> `externalId`). An argument left at None is not sent. Nested values (pricing
objects, signal data, metadata) are sent exactly as given, so write them with wire names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from tallystick._http import Call, RetryPolicy, decimal_argument, format_timestamp, new_idempotency_key
from tallystick.types import (
    BulkSignalsResult,
    Checkout,
    CostIngestResult,
    CreditBalance,
    CreditCurrency,
    CreditHold,
    Customer,
    DataList,
    GrantResult,
    HoldPlaced,
    JsonObject,
    Page,
    Plan,
    Product,
    SignalItem,
)

Send = Callable[[Call], Any]

_CAMEL_BOUNDARY = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    return _CAMEL_BOUNDARY.sub(lambda match: match.group(1).upper(), name)


def body_of(**fields: Any) -> JsonObject:
    """Build a request body from snake_case keyword arguments, leaving out None values."""
    return {camel(name): value for name, value in fields.items() if value is not None}


def segment(value: str) -> str:
    """Escape one path segment (ids and external ids), so '?' or '#' cannot end the path.

    Raises ValueError for "", "." and "..": URL normalization removes such a segment or the
    one before it, so the request would go to another route.
    """
    if value in ("", ".", ".."):
        raise ValueError(f"invalid id {value!r}: an id cannot be empty, '.' or '..'")
    return quote(value, safe="")


def customer_path(customer_id: str | None, external_customer_id: str | None) -> str:
    if (customer_id is None) == (external_customer_id is None):
        raise ValueError("pass exactly one of customer_id and external_customer_id")
    if customer_id is not None:
        return f"/customers/{segment(customer_id)}"
    return f"/customers/external/{segment(external_customer_id or '')}"


class Resource:
    def __init__(self, send: Send) -> None:
        self._send = send


class Customers(Resource):
    def create(
        self, *, name: str, external_id: str | None = None, email: str | None = None, **fields: Any
    ) -> Customer:
        return self._send(
            Call(
                "POST", "/customers/", body=body_of(name=name, external_id=external_id, email=email, **fields)
            )
        )

    def list(self, *, limit: int | None = None, offset: int | None = None, **filters: Any) -> Page[Customer]:
        params = body_of(limit=limit, offset=offset, **filters)
        return self._send(Call("GET", "/customers/", params=params))

    def get(self, customer_id: str) -> Customer:
        return self._send(Call("GET", f"/customers/{segment(customer_id)}"))

    def get_by_external_id(self, external_id: str) -> Customer:
        return self._send(Call("GET", f"/customers/external/{segment(external_id)}"))

    def update(self, customer_id: str, **fields: Any) -> Customer:
        return self._send(Call("PUT", f"/customers/{segment(customer_id)}", body=body_of(**fields)))

    def update_by_external_id(self, external_id: str, **fields: Any) -> Customer:
        return self._send(Call("PUT", f"/customers/external/{segment(external_id)}", body=body_of(**fields)))

    def delete(self, customer_id: str) -> JsonObject:
        return self._send(Call("DELETE", f"/customers/{segment(customer_id)}"))

    def delete_by_external_id(self, external_id: str) -> JsonObject:
        return self._send(Call("DELETE", f"/customers/external/{segment(external_id)}"))

    def state(self, *, customer_id: str | None = None, external_customer_id: str | None = None) -> JsonObject:
        return self._send(Call("GET", customer_path(customer_id, external_customer_id) + "/state"))

    def credit_balances(
        self, *, customer_id: str | None = None, external_customer_id: str | None = None
    ) -> DataList[CreditBalance]:
        return self._send(Call("GET", customer_path(customer_id, external_customer_id) + "/credits/balances"))

    def grant_credits(
        self,
        *,
        credit_currency_key: str,
        amount: Decimal | int | float | str,
        customer_id: str | None = None,
        external_customer_id: str | None = None,
        starts_at: datetime | None = None,
        expires_at: datetime | None = None,
        idempotency_key: str | None = None,
        unit_value: Decimal | int | str | None = None,
        **fields: Any,
    ) -> GrantResult:
        """Grant `amount` credits. A float amount is sent as its shortest repr (0.1 as 0.1).

        With `idempotency_key`, a failed request is retried, and a retry of a grant the server
        already stored returns that grant with `created` False. Without it, nothing is retried
        after the request may have reached the server, since a retry could grant twice.

        `unit_value` is the USD value of one credit, such as Decimal("0.05") or "0.05", which
        margins count as the revenue of each credit drawn from this grant (0 when not given).
        A value below 0, above 1,000,000 or with more than 12 decimal places gets a 400 ApiError.
        """
        body = body_of(
            credit_currency_key=credit_currency_key,
            amount=decimal_argument("amount", amount),
            starts_at=starts_at,
            expires_at=expires_at,
            idempotency_key=idempotency_key,
            unit_value=unit_value,
            **fields,
        )
        path = customer_path(customer_id, external_customer_id) + "/credits/grants"
        return self._send(Call("POST", path, body=body, idempotent=idempotency_key is not None))

    def pending_consumption(
        self,
        *,
        customer_id: str | None = None,
        external_customer_id: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[JsonObject]:
        path = customer_path(customer_id, external_customer_id) + "/credits/pending-consumption"
        return self._send(Call("GET", path, params=body_of(limit=limit, offset=offset)))


class Products(Resource):
    def create(self, *, name: str, external_id: str | None = None, **fields: Any) -> Product:
        return self._send(
            Call("POST", "/products/", body=body_of(name=name, external_id=external_id, **fields))
        )

    def list(self, *, limit: int | None = None, offset: int | None = None, **filters: Any) -> Page[Product]:
        return self._send(Call("GET", "/products/", params=body_of(limit=limit, offset=offset, **filters)))

    def get(self, product_id: str) -> Product:
        return self._send(Call("GET", f"/products/{segment(product_id)}"))

    def get_by_external_id(self, external_id: str) -> Product:
        return self._send(Call("GET", f"/products/external/{segment(external_id)}"))

    def update(self, product_id: str, **fields: Any) -> Product:
        return self._send(Call("PUT", f"/products/{segment(product_id)}", body=body_of(**fields)))

    def update_by_external_id(self, external_id: str, **fields: Any) -> Product:
        return self._send(Call("PUT", f"/products/external/{segment(external_id)}", body=body_of(**fields)))


class Plans(Resource):
    def create(self, *, product_id: str, name: str, **fields: Any) -> Plan:
        return self._send(Call("POST", "/plans/", body=body_of(product_id=product_id, name=name, **fields)))

    def list(self, *, limit: int | None = None, offset: int | None = None, **filters: Any) -> Page[Plan]:
        return self._send(Call("GET", "/plans/", params=body_of(limit=limit, offset=offset, **filters)))

    def get(self, plan_id: str) -> Plan:
        return self._send(Call("GET", f"/plans/{segment(plan_id)}"))

    def get_by_external_id(self, external_id: str) -> Plan:
        return self._send(Call("GET", f"/plans/external/{segment(external_id)}"))

    def update(self, plan_id: str, **fields: Any) -> Plan:
        return self._send(Call("PUT", f"/plans/{segment(plan_id)}", body=body_of(**fields)))

    def update_by_external_id(self, external_id: str, **fields: Any) -> Plan:
        return self._send(Call("PUT", f"/plans/external/{segment(external_id)}", body=body_of(**fields)))

    def update_upgrade_path(self, **fields: Any) -> JsonObject:
        return self._send(Call("PUT", "/plans/upgrade-path", body=body_of(**fields)))


class Credits(Resource):
    def create_currency(self, *, name: str, key: str, **fields: Any) -> CreditCurrency:
        return self._send(Call("POST", "/credits/currencies", body=body_of(name=name, key=key, **fields)))

    def list_currencies(self) -> DataList[CreditCurrency]:
        return self._send(Call("GET", "/credits/currencies"))

    def update_currency(self, currency_id: str, **fields: Any) -> CreditCurrency:
        return self._send(Call("PUT", f"/credits/currencies/{segment(currency_id)}", body=body_of(**fields)))

    def list_transactions(
        self, *, limit: int | None = None, offset: int | None = None, **filters: Any
    ) -> Page[JsonObject]:
        return self._send(
            Call("GET", "/credits/transactions", params=body_of(limit=limit, offset=offset, **filters))
        )

    def hold(
        self,
        *,
        credit_currency_key: str,
        amount: Decimal | int | float | str,
        customer_id: str | None = None,
        external_customer_id: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> HoldPlaced:
        """Reserve `amount` credits if that many are available; `allowed` tells whether it was.

        With `idempotency_key`, a failed request is retried, and a retry of a hold the server
        already placed returns that hold without reserving again. Without it, nothing is retried
        after the request may have reached the server, since a retry could reserve twice. A hold
        that is never settled or released expires after `ttl_seconds`. `retry` replaces the
        client's retry policy for this request.
        """
        body = body_of(
            credit_currency_key=credit_currency_key,
            amount=decimal_argument("amount", amount),
            ttl_seconds=ttl_seconds,
            idempotency_key=idempotency_key,
        )
        path = customer_path(customer_id, external_customer_id) + "/credits/holds"
        return self._send(Call("POST", path, body=body, idempotent=idempotency_key is not None, retry=retry))

    def get_hold(self, hold_id: str) -> CreditHold:
        return self._send(Call("GET", f"/credits/holds/{segment(hold_id)}"))

    def release_hold(self, hold_id: str) -> CreditHold:
        """End a hold without consuming anything; its credits become available again."""
        return self._send(Call("DELETE", f"/credits/holds/{segment(hold_id)}"))


def signal_body(
    event_name: str,
    *,
    customer_id: str | None = None,
    external_customer_id: str | None = None,
    product_id: str | None = None,
    external_product_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    timestamp: datetime | str | None = None,
    hold_id: str | None = None,
) -> JsonObject:
    """Build one element of POST /signals/bulk, with a fresh idempotency key if none is given."""
    if not event_name:
        raise ValueError("event_name must be a non-empty string")
    if (customer_id is None) == (external_customer_id is None):
        raise ValueError("pass exactly one of customer_id and external_customer_id")
    if product_id is not None and external_product_id is not None:
        raise ValueError("pass at most one of product_id and external_product_id")

    signal: JsonObject = {
        "eventName": event_name,
        "customer": body_of(customer_id=customer_id, external_customer_id=external_customer_id),
        "idempotencyKey": idempotency_key or new_idempotency_key(),
    }
    if product_id is not None or external_product_id is not None:
        signal["attribution"] = body_of(product_id=product_id, external_product_id=external_product_id)
    if data is not None:
        signal["data"] = dict(mapping_argument("data", data))
    if timestamp is not None:
        signal["timestamp"] = format_timestamp(timestamp) if isinstance(timestamp, datetime) else timestamp
    if hold_id is not None:
        signal["holdId"] = hold_id
    return signal


def mapping_argument(name: str, value: Any) -> Mapping[str, Any]:
    """Return `value` if it is a mapping; raise TypeError naming `name` if not."""
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a dict (a mapping of field names to values), got {type(value).__name__}"
        )
    return value


class Signals(Resource):
    def create(
        self, signals: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> BulkSignalsResult:
        """Send signals in one POST /signals/bulk (wire-shaped dicts, see `signal_body`).

        A signal without an idempotencyKey gets a fresh one before the first attempt, so the
        request is safe to retry: the server counts a repeated key as a duplicate.
        """
        prepared = []
        for signal in signals:
            item = dict(signal)
            item.setdefault("idempotencyKey", new_idempotency_key())
            prepared.append(item)
        return self._send(
            Call("POST", "/signals/bulk", body={"signals": prepared}, idempotent=True, timeout=timeout)
        )

    def send(self, event_name: str, **fields: Any) -> BulkSignalsResult:
        """Send one signal; keyword arguments are those of `signal_body`."""
        return self.create([signal_body(event_name, **fields)])

    def list(
        self, *, limit: int | None = None, offset: int | None = None, **filters: Any
    ) -> Page[SignalItem]:
        return self._send(Call("GET", "/signals/", params=body_of(limit=limit, offset=offset, **filters)))

    def get(self, signal_id: str) -> SignalItem:
        return self._send(Call("GET", f"/signals/{segment(signal_id)}"))


class Costs(Resource):
    def create(self, costs: Iterable[Mapping[str, Any]]) -> CostIngestResult:
        """Send cost records (wire-shaped dicts with `type` "cost" or "usage") in one request."""
        return self._send(Call("POST", "/costs/bulk", body={"costs": [dict(cost) for cost in costs]}))


class Checkouts(Resource):
    def create(self, *, products: list[JsonObject], success_url: str, **fields: Any) -> Checkout:
        body = body_of(products=products, success_url=success_url, **fields)
        return self._send(Call("POST", "/checkouts/", body=body))

    def list(self, *, limit: int | None = None, offset: int | None = None, **filters: Any) -> Page[Checkout]:
        return self._send(Call("GET", "/checkouts/", params=body_of(limit=limit, offset=offset, **filters)))

    def get(self, checkout_id: str) -> Checkout:
        return self._send(Call("GET", f"/checkouts/{segment(checkout_id)}"))

    def archive(self, checkout_id: str) -> JsonObject:
        return self._send(Call("DELETE", f"/checkouts/{segment(checkout_id)}"))


class Orders(Resource):
    def create(self, *, customer_id: str, **fields: Any) -> JsonObject:
        return self._send(Call("POST", "/orders/", body=body_of(customer_id=customer_id, **fields)))

    def list(
        self, *, limit: int | None = None, offset: int | None = None, **filters: Any
    ) -> Page[JsonObject]:
        return self._send(Call("GET", "/orders/", params=body_of(limit=limit, offset=offset, **filters)))

    def get(self, order_id: str) -> JsonObject:
        return self._send(Call("GET", f"/orders/{segment(order_id)}"))

    def update(self, order_id: str, **fields: Any) -> JsonObject:
        return self._send(Call("PUT", f"/orders/{segment(order_id)}", body=body_of(**fields)))

    def delete(self, order_id: str) -> JsonObject:
        return self._send(Call("DELETE", f"/orders/{segment(order_id)}"))

    def activate(self, order_id: str) -> JsonObject:
        return self._send(Call("POST", f"/orders/{segment(order_id)}/activate"))

    def lines(
        self, order_id: str, *, limit: int | None = None, offset: int | None = None
    ) -> Page[JsonObject]:
        return self._send(
            Call("GET", f"/orders/{segment(order_id)}/lines", params=body_of(limit=limit, offset=offset))
        )


class CustomerPortals(Resource):
    def create(self, **fields: Any) -> JsonObject:
        return self._send(Call("POST", "/customer-portals/", body=body_of(**fields)))


class ValueMetrics(Resource):
    def create(self, **fields: Any) -> JsonObject:
        return self._send(Call("POST", "/value-metrics/", body=body_of(**fields)))

    def list(
        self, *, limit: int | None = None, offset: int | None = None, **filters: Any
    ) -> Page[JsonObject]:
        return self._send(
            Call("GET", "/value-metrics/", params=body_of(limit=limit, offset=offset, **filters))
        )

    def get(self, slug: str) -> JsonObject:
        return self._send(Call("GET", f"/value-metrics/{segment(slug)}"))

    def update(self, slug: str, **fields: Any) -> JsonObject:
        return self._send(Call("PATCH", f"/value-metrics/{segment(slug)}", body=body_of(**fields)))

    def archive(self, slug: str) -> JsonObject:
        return self._send(Call("DELETE", f"/value-metrics/{segment(slug)}"))


class ValueModels(Resource):
    def get_current(self) -> JsonObject:
        return self._send(Call("GET", "/value-models/"))

    def update(self, **fields: Any) -> JsonObject:
        return self._send(Call("PUT", "/value-models/", body=body_of(**fields)))

    def list_versions(self, *, limit: int | None = None, offset: int | None = None) -> Page[JsonObject]:
        return self._send(Call("GET", "/value-models/versions", params=body_of(limit=limit, offset=offset)))

    def get_version(self, version: int | str) -> JsonObject:
        return self._send(Call("GET", f"/value-models/versions/{segment(str(version))}"))

    def backfill(self) -> JsonObject:
        return self._send(Call("POST", "/value-models/backfill", body={}))


class ValueReceipts(Resource):
    def create(self, **fields: Any) -> JsonObject:
        return self._send(Call("POST", "/value-receipts/", body=body_of(**fields)))

    def list(self, *, limit: int | None = None, offset: int | None = None, **filters: Any) -> JsonObject:
        return self._send(
            Call("GET", "/value-receipts/", params=body_of(limit=limit, offset=offset, **filters))
        )

    def get(self, receipt_id: str) -> JsonObject:
        return self._send(Call("GET", f"/value-receipts/{segment(receipt_id)}"))

    def sync(self, **fields: Any) -> JsonObject:
        return self._send(Call("POST", "/value-receipts/sync", body=body_of(**fields)))

    def _action(self, receipt_id: str, action: str) -> JsonObject:
        return self._send(Call("POST", f"/value-receipts/{segment(receipt_id)}/{action}", body={}))

    def refresh(self, receipt_id: str) -> JsonObject:
        return self._action(receipt_id, "refresh")

    def seal(self, receipt_id: str) -> JsonObject:
        return self._action(receipt_id, "seal")

    def publish(self, receipt_id: str) -> JsonObject:
        return self._action(receipt_id, "publish")

    def unpublish(self, receipt_id: str) -> JsonObject:
        return self._action(receipt_id, "unpublish")

    def archive(self, receipt_id: str) -> JsonObject:
        return self._action(receipt_id, "archive")

    def unarchive(self, receipt_id: str) -> JsonObject:
        return self._action(receipt_id, "unarchive")


class Webhooks(Resource):
    def list(self) -> JsonObject:
        return self._send(Call("GET", "/webhooks/"))

    def update(self, webhook_name: str, **fields: Any) -> JsonObject:
        return self._send(Call("PATCH", f"/webhooks/{segment(webhook_name)}", body=body_of(**fields)))

    def test(self, webhook_name: str) -> JsonObject:
        return self._send(Call("POST", f"/webhooks/{segment(webhook_name)}/test", body={}))

    def rotate_secret(self) -> JsonObject:
        return self._send(Call("POST", "/webhooks/rotate-secret", body={}))


class Invoices(Resource):
    def list(
        self, *, limit: int | None = None, offset: int | None = None, **filters: Any
    ) -> Page[JsonObject]:
        return self._send(Call("GET", "/invoices/", params=body_of(limit=limit, offset=offset, **filters)))

    def get(self, invoice_id: str) -> JsonObject:
        return self._send(Call("GET", f"/invoices/{segment(invoice_id)}"))

    def lines(
        self, invoice_id: str, *, limit: int | None = None, offset: int | None = None
    ) -> Page[JsonObject]:
        params = body_of(limit=limit, offset=offset)
        return self._send(Call("GET", f"/invoices/{segment(invoice_id)}/lines", params=params))

    def update(self, invoice_id: str, **fields: Any) -> JsonObject:
        return self._send(Call("PUT", f"/invoices/{segment(invoice_id)}", body=body_of(**fields)))


class Namespaces:
    """Attach every resource to a client, all sharing its sender."""

    def _attach_resources(self, send: Send) -> None:
        self.customers = Customers(send)
        self.products = Products(send)
        self.plans = Plans(send)
        self.credits = Credits(send)
        self.signals = Signals(send)
        self.costs = Costs(send)
        self.checkouts = Checkouts(send)
        self.orders = Orders(send)
        self.customer_portals = CustomerPortals(send)
        self.value_metrics = ValueMetrics(send)
        self.value_models = ValueModels(send)
        self.value_receipts = ValueReceipts(send)
        self.webhooks = Webhooks(send)
        self.invoices = Invoices(send)
