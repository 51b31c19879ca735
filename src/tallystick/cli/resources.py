"""Resource commands that mirror the REST API: list, show and create catalog and billing objects."""


import json
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.markup import escape

from tallystick.cli.output import (
    ApiKeyOption,
    ApiUrlOption,
    JsonOption,
    RequestTimeoutOption,
    api_client,
    console,
    money_text,
    print_error,
    print_json,
    print_record,
    print_table,
    require_id,
)
from tallystick.cli.value_models import value_models
from tallystick.client import Client
from tallystick.errors import ApiError
from tallystick.resources import segment

LimitOption = Annotated[int, typer.Option(help="Maximum number of items to show.", min=1, max=1000)]
OffsetOption = Annotated[int, typer.Option(help="Number of items to skip.", min=0)]


def _parse_json(option: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"invalid JSON: {error.msg} at position {error.pos}", param_hint=option) from None


def _is_customer_id(customer: str) -> bool:
    """Tell a customer id (cus_...) from an external id, as every customer argument does."""
    return customer.startswith("cus_")


def _customer_path(customer: str) -> str:
    """Address a customer by id (cus_...) or, otherwise, by external id."""
    if _is_customer_id(customer):
        return f"/customers/{segment(customer)}"
    return f"/customers/external/{segment(customer)}"


CustomerArgument = Annotated[str, typer.Argument(help="Customer id (cus_...) or external id.", callback=require_id)]


currencies = typer.Typer(help="Credit currencies.", no_args_is_help=True)
products = typer.Typer(help="Products and their pricing lines.", no_args_is_help=True)
plans = typer.Typer(help="Plans of products.", no_args_is_help=True)
customers = typer.Typer(help="Customers.", no_args_is_help=True)
grants = typer.Typer(help="Credit grants.", no_args_is_help=True)
signals = typer.Typer(help="Signals (billable events).", no_args_is_help=True)
checkouts = typer.Typer(help="Hosted checkouts.", no_args_is_help=True)
orders = typer.Typer(help="Orders.", no_args_is_help=True)
invoices = typer.Typer(help="Invoices.", no_args_is_help=True)
value_receipts = typer.Typer(help="Value receipts.", no_args_is_help=True)


# Credit currencies


@currencies.command("list")
def currencies_list(
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """List credit currencies."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        body = client.get("/credits/currencies", status="all")
    if as_json:
        print_json(body)
        return
    print_table(body["data"], [("id", "id"), ("key", "key"), ("name", "name"), ("status", "status")])


@currencies.command("create")
def currencies_create(
    key: Annotated[str, typer.Option(help="Stable key: lowercase letters, digits, _ and -.")],
    name: Annotated[str, typer.Option(help="Display name, such as 'Chat Credits'.")],
    description: Annotated[str | None, typer.Option(help="Optional description.")] = None,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a credit currency."""
    body: dict[str, Any] = {"key": key, "name": name}
    if description is not None:
        body["description"] = description
    with api_client(api_url, api_key, timeout=timeout) as client:
        created = client.post("/credits/currencies", body)
    if as_json:
        print_json(created)
        return
    console.print(f"Created credit currency {escape(created['key'])} ({escape(created['id'])}).")


# Products and plans


@products.command("list")
def products_list(
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """List products, newest first."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        body = client.get("/products/", limit=limit, offset=offset)
    if as_json:
        print_json(body)
        return
    print_table(body["data"], [("id", "id"), ("externalId", "externalId"), ("name", "name"), ("active", "active")])


@products.command("get")
def products_get(
    product: Annotated[str, typer.Argument(help="Product id (prod_...) or external id.", callback=require_id)],
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a product with its pricing lines."""
    if product.startswith("prod_"):
        path = f"/products/{segment(product)}"
    else:
        path = f"/products/external/{segment(product)}"
    with api_client(api_url, api_key, timeout=timeout) as client:
        body = client.get(path)
    if as_json:
        print_json(body)
        return
    print_record(body, ["id", "externalId", "name", "active", "description"])
    print_table(
        body["productAttributes"],
        [
            ("line", "name"),
            ("pricing", lambda line: (line.get("pricing") or {}).get("pricingType")),
            ("event", lambda line: (line.get("pricing") or {}).get("eventName")),
            ("credit cost", lambda line: (line.get("pricing") or {}).get("creditCost")),
        ],
    )


@plans.command("list")
def plans_list(
    product: Annotated[str | None, typer.Option(help="Only plans of this product external id.")] = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """List plans, newest first."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        body = client.get("/plans/", limit=limit, offset=offset, externalProductId=product)
    if as_json:
        print_json(body)
        return
    print_table(
        body["data"],
        [("id", "id"), ("externalId", "externalId"), ("name", "name"), ("status", "status"), ("product", "productId")],
    )


@plans.command("get")
def plans_get(
    plan: Annotated[str, typer.Argument(help="Plan id (plan_...) or external id.", callback=require_id)],
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a plan with its pricing and credit benefits."""
    path = f"/plans/{segment(plan)}" if plan.startswith("plan_") else f"/plans/external/{segment(plan)}"
    with api_client(api_url, api_key, timeout=timeout) as client:
        body = client.get(path)
    if as_json:
        print_json(body)
        return
    print_record(body, ["id", "externalId", "name", "status", "productId"])
    rows = []
    for attribute in body["attributes"]:
        points = (attribute.get("pricing") or {}).get("pricePoints") or []
        benefits = ", ".join(f"{b['amount']} ({b['allocationCadence']})" for b in attribute["creditBenefits"])
        price = ", ".join(f"{p.get('unitPrice')} {p.get('currency')}" for p in points)
        rows.append({"line": attribute["name"], "price (cents)": price, "credits": benefits})
    print_table(rows, [("line", "line"), ("price (cents)", "price (cents)"), ("credits", "credits")])


# Customers, balances and grants


@customers.command("list")
def customers_list(
    name: Annotated[str | None, typer.Option(help="Only customers whose name contains this.")] = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """List customers, newest first."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        body = client.get("/customers/", limit=limit, offset=offset, name=name)
    if as_json:
        print_json(body)
        return
    print_table(body["data"], [("id", "id"), ("externalId", "externalId"), ("name", "name"), ("email", "email")])


@customers.command("get")
def customers_get(
    customer: CustomerArgument,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a customer."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        body = client.get(_customer_path(customer))
    if as_json:
        print_json(body)
        return
    print_record(body, ["id", "externalId", "name", "email", "status", "createdAt"])


@customers.command("create")
def customers_create(
    name: Annotated[str, typer.Option(help="Customer name.")],
    external_id: Annotated[str | None, typer.Option(help="Your application's id for the customer.")] = None,
    email: Annotated[str | None, typer.Option(help="Billing email address.")] = None,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a customer."""
    body = {key: value for key, value in {"name": name, "externalId": external_id, "email": email}.items() if value}
    with api_client(api_url, api_key, timeout=timeout) as client:
        created = client.post("/customers/", body)
    if as_json:
        print_json(created)
        return
    console.print(f"Created customer {escape(created['name'])} ({escape(created['id'])}).", soft_wrap=True)


@customers.command("delete")
def customers_delete(
    customer: CustomerArgument,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
) -> None:
    """Delete a customer. Its ledger history is kept."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        client.delete(_customer_path(customer))
    console.print(f"Deleted customer {escape(customer)}.", soft_wrap=True)


def balances(
    customer: CustomerArgument,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a customer's credit balances, one row per credit currency."""
    with api_client(api_url, api_key, timeout=timeout) as client, _customer_must_exist(customer):
        body = _get_balances(client, customer)
    if as_json:
        print_json(body)
        return
    print_table(
        body["data"],
        [
            ("currency", "currencyKey"),
            ("available", lambda row: _exact(row, "available")),
            ("used", lambda row: _exact(row, "used")),
            ("total", lambda row: _exact(row, "total")),
            ("grants", lambda row: len(row["grants"])),
        ],
    )


def _get_balances(client: Client, customer: str) -> Any:
    return client.get(_customer_path(customer) + "/credits/balances")


def _exact(row: dict[str, Any], name: str) -> Any:
    """Return the exact `...Decimal` string of a credit amount, or the JSON number without one."""
    return row.get(f"{name}Decimal", row[name])


@contextmanager
def _customer_must_exist(customer: str) -> Iterator[None]:
    """Turn the API's 404 for an unknown customer into a one-line error with the fix.

    Other errors, such as the 404 of a wrong --api-url path, are raised for `api_client` to
    print as the server sent them.
    """
    try:
        yield
    except ApiError as error:
        # The server's 404 for a customer reads "Customer with externalId 'x' not found".
        if error.status != 404 or not error.message.startswith("Customer with "):
            raise
        if _is_customer_id(customer):
            problem = f"customer with id {customer!r} not found"
            hint = "check the id with `tallystick customers list`"
        else:
            problem = f"customer with external id {customer!r} not found"
            command = f"tallystick customers create --name NAME --external-id {shlex.quote(customer)}"
            hint = f"create the customer first with `{command}`"
        print_error(f"{problem}: {hint}")
        raise typer.Exit(code=1) from None


# Largest power of ten, up or down, that a decimal option may have.
MAX_DECIMAL_EXPONENT = 30


def _decimal_option(text: str, option: str) -> Decimal:
    """Return the option's value as an exact Decimal, or exit with an error naming the option."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise typer.BadParameter(f"'{text}' is not a number", param_hint=option)
    # The client writes a Decimal in positional notation, so 1e100000000 would be sent as a
    # hundred million digits. Every amount the server accepts is far inside this range.
    if not -MAX_DECIMAL_EXPONENT <= number.adjusted() <= MAX_DECIMAL_EXPONENT:
        raise typer.BadParameter(f"'{text}' is out of range", param_hint=option)
    return number


@grants.command("create")
def grants_create(
    customer: CustomerArgument,
    currency: Annotated[str, typer.Option(help="Credit currency key, such as chat_credits.")],
    amount: Annotated[str, typer.Option(help="Credits to grant (a decimal number).")],
    expires_at: Annotated[str | None, typer.Option(help="RFC 3339 expiry time; default: never.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Key that makes the grant happen once: running the command again with it grants nothing."),
    ] = None,
    unit_value: Annotated[
        str | None,
        typer.Option(help="USD value of one credit, such as 0.05, counted as revenue in margins; default: 0."),
    ] = None,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Grant credits to a customer by hand."""
    # A Decimal, which the client writes as the exact number typed: a float could change it.
    number = _decimal_option(amount, "--amount")
    body: dict[str, Any] = {"creditCurrencyKey": currency, "amount": number}
    if expires_at is not None:
        body["expiresAt"] = expires_at
    if idempotency_key is not None:
        body["idempotencyKey"] = idempotency_key
    if unit_value is not None:
        # Checked here to name the option; sent as typed, since the server reads a decimal
        # string exactly and checks its range and places.
        _decimal_option(unit_value, "--unit-value")
        body["unitValue"] = unit_value
    with api_client(api_url, api_key, timeout=timeout) as client, _customer_must_exist(customer):
        created = client.post(_customer_path(customer) + "/credits/grants", body)
    if as_json:
        print_json(created)
        return
    grant = created["grant"]
    if not created.get("created", True):
        console.print(f"Grant {escape(grant['id'])} already exists for this idempotency key; nothing granted.")
        return
    console.print(f"Granted {escape(grant['amountDecimal'])} {escape(currency)} to {escape(customer)}.", soft_wrap=True)


@grants.command(
    "list",
    # Each help paragraph is one string, because typer prints a docstring's line breaks as they are.
    help="List a customer's active credit grants (started, not expired), in draw order per currency.\n\n"
    "The grants come from the balances endpoint. With --json the command prints them as {\"data\": [...]}, "
    "each grant with its currency's currencyKey and creditsCurrencyId added.",
)
def grants_list(
    customer: CustomerArgument,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    with api_client(api_url, api_key, timeout=timeout) as client, _customer_must_exist(customer):
        body = _get_balances(client, customer)
    rows = [
        {**grant, "currencyKey": balance["currencyKey"], "creditsCurrencyId": balance["creditsCurrencyId"]}
        for balance in body["data"]
        for grant in balance["grants"]
    ]
    if as_json:
        print_json({"data": rows})
        return
    if not rows:
        console.print(f"No active credit grants for customer {escape(customer)}.", soft_wrap=True)
        return
    print_table(
        rows,
        [
            ("id", "id"),
            ("currency", "currencyKey"),
            ("total", lambda row: _exact(row, "total")),
            ("used", lambda row: _exact(row, "used")),
            ("available", lambda row: _exact(row, "available")),
            ("period start", "periodStart"),
            ("expires", lambda row: row.get("expiresAt") or "never"),
        ],
    )


# Signals


@signals.command("send")
def signals_send(
    event_name: Annotated[str, typer.Argument(help="Event name, such as chat_message.")],
    customer: Annotated[
        str, typer.Option(help="Customer id (cus_...) or external id; a new external id creates the customer.")
    ],
    product: Annotated[str | None, typer.Option(help="Product external id.")] = None,
    data: Annotated[str | None, typer.Option(help="Signal data as a JSON object.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Key that makes a retry count once.")] = None,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send one signal."""
    reference = "customerId" if _is_customer_id(customer) else "externalCustomerId"
    signal: dict[str, Any] = {"eventName": event_name, "customer": {reference: customer}}
    if product is not None:
        signal["attribution"] = {"externalProductId": product}
    parsed = _parse_json("--data", data)
    if parsed is not None:
        if not isinstance(parsed, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--data")
        signal["data"] = parsed
    if idempotency_key is not None:
        signal["idempotencyKey"] = idempotency_key
    with api_client(api_url, api_key, timeout=timeout) as client:
        result = client.post("/signals/bulk", {"signals": [signal]})
    if as_json:
        print_json(result)
        return
    if result.get("failed"):
        reason = (result.get("errors") or [{}])[0].get("message", "rejected")
        print_error(reason, label="Signal failed:")
        raise typer.Exit(code=1)
    outcome = "duplicate (already counted)" if result.get("duplicates") else "ingested"
    console.print(f"Signal {escape(event_name)} for {escape(customer)}: {outcome}.", soft_wrap=True)


@signals.command("list")
def signals_list(
    customer: Annotated[str | None, typer.Option(help="Only this customer: an id (cus_...) or external id.")] = None,
    event_name: Annotated[str | None, typer.Option(help="Only this event name.")] = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """List signals, newest first."""
    customer_filter: dict[str, str] = {}
    if customer is not None:
        customer_filter["customerId" if _is_customer_id(customer) else "externalCustomerId"] = customer
    with api_client(api_url, api_key, timeout=timeout) as client:
        body = client.get("/signals/", limit=limit, offset=offset, signalName=event_name, **customer_filter)
    if as_json:
        print_json(body)
        return
    print_table(
        body["data"],
        [
            ("id", "id"),
            ("event", "name"),
            ("customer", "externalCustomerId"),
            ("credits", "creditsConsumed"),
            ("pending", "creditsPending"),
            ("at", "createdAt"),
        ],
    )


# Checkouts, orders, invoices, value receipts


@checkouts.command("create")
def checkouts_create(
    product: Annotated[str, typer.Option(help="Product id (prod_...) offered in the checkout.")],
    success_url: Annotated[str, typer.Option(help="Where the buyer goes after paying; {CHECKOUT_ID} is filled in.")],
    plan: Annotated[list[str] | None, typer.Option(help="Plan id offered (repeat for several).")] = None,
    customer: Annotated[str | None, typer.Option(help="Customer external id; omit for anonymous buyers.")] = None,
    cancel_url: Annotated[str | None, typer.Option(help="Where the buyer goes on cancel.")] = None,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a hosted checkout and print its URL."""
    offered: dict[str, Any] = {"id": product}
    if plan:
        offered["plans"] = [{"id": plan_id} for plan_id in plan]
    body: dict[str, Any] = {"products": [offered], "successUrl": success_url}
    if customer is not None:
        body["externalCustomerId"] = customer
    if cancel_url is not None:
        body["cancelUrl"] = cancel_url
    with api_client(api_url, api_key, timeout=timeout) as client:
        created = client.post("/checkouts/", body)
    if as_json:
        print_json(created)
        return
    console.print(f"Checkout {escape(created['id'])}: {escape(created['url'])}", soft_wrap=True)


def _list_command(group: typer.Typer, path: str, columns: list[tuple[str, Any]], what: str) -> None:
    @group.command("list")
    def list_items(
        limit: LimitOption = 50,
        offset: OffsetOption = 0,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
        timeout: RequestTimeoutOption = None,
        as_json: JsonOption = False,
    ) -> None:
        with api_client(api_url, api_key, timeout=timeout) as client:
            body = client.get(path, limit=limit, offset=offset)
        if as_json:
            print_json(body)
            return
        print_table(body["data"], columns)

    list_items.__doc__ = f"List {what}, newest first."


def _get_command(group: typer.Typer, path: str, fields: list[Any], what: str) -> None:
    @group.command("get")
    def get_item(
        item_id: Annotated[str, typer.Argument(help=f"Id of the {what}.", callback=require_id)],
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
        timeout: RequestTimeoutOption = None,
        as_json: JsonOption = False,
    ) -> None:
        with api_client(api_url, api_key, timeout=timeout) as client:
            body = client.get(f"{path}{segment(item_id)}")
        if as_json:
            print_json(body)
            return
        print_record(body, fields)

    get_item.__doc__ = f"Show one {what}."


_list_command(checkouts, "/checkouts/", [("id", "id"), ("status", "status"), ("url", "url")], "checkouts")
_get_command(checkouts, "/checkouts/", ["id", "status", "url", "orderId", "externalCustomerId"], "checkout")
_list_command(
    orders, "/orders/", [("id", "id"), ("name", "name"), ("status", "status"), ("customer", "customerId")], "orders"
)
_get_command(orders, "/orders/", ["id", "name", "status", "customerId", "startDate", "currency"], "order")


def _invoice_total(invoice: dict[str, Any]) -> str | None:
    return money_text(invoice.get("invoiceTotal"), invoice.get("currency"))


def _invoice_amount_remaining(invoice: dict[str, Any]) -> str | None:
    return money_text(invoice.get("amountRemaining"), invoice.get("currency"))


_list_command(
    invoices,
    "/invoices/",
    [
        ("id", "id"),
        ("number", "number"),
        ("status", "status"),
        ("payment", "paymentStatus"),
        ("total", _invoice_total),
        ("customer", "customerId"),
    ],
    "invoices",
)
_get_command(
    invoices,
    "/invoices/",
    ["id", "number", "status", "paymentStatus", ("total", _invoice_total), ("remaining", _invoice_amount_remaining)],
    "invoice",
)


@value_receipts.command("list")
def value_receipts_list(
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """List value receipts."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        body = client.get("/value-receipts/", limit=limit, offset=offset)
    if as_json:
        print_json(body)
        return
    print_table(body["data"], [("id", "id"), ("status", "status"), ("customer", "customerId")])


def register(app: typer.Typer) -> None:
    """Add every resource command group to the top-level CLI."""
    app.add_typer(currencies, name="currencies")
    app.add_typer(products, name="products")
    app.add_typer(plans, name="plans")
    app.add_typer(customers, name="customers")
    app.command("balances")(balances)
    app.add_typer(grants, name="grants")
    app.add_typer(signals, name="signals")
    app.add_typer(checkouts, name="checkouts")
    app.add_typer(orders, name="orders")
    app.add_typer(invoices, name="invoices")
    app.add_typer(value_receipts, name="value-receipts")
    app.add_typer(value_models, name="value-models")
