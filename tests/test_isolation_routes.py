"""Tenant isolation: organization B, with its own key, reaches none of organization A's objects.

Both organizations get one object of every kind (a "world"). The walk enumerates the app's
routes, so routes added later are walked without a change here: every route with an id in
its path is called with B's key and A's ids, and must get 404 and leave A's objects unchanged.
Each path parameter gets its value from the world; a route with a parameter that no builder
fills fails the walk with a message saying where to add one. Request bodies come from B's
world, so a body is valid for B and only the ids in the path belong to A.

A's objects carry a marker string in their names; no response that B receives may contain it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from tests.conftest import Tenant

API_PREFIX = "/api/v2"
PATH_PARAMETER = re.compile(r"{([^}:]+)(?::[^}]*)?}")

# Parameters that name something every organization has under the same name, so B's call with
# the value reaches B's own object, never A's. Each has an explicit test below.
SHARED_NAMES = {
    "webhook_name": "webhook event names are global; each organization has its own settings row",
    "version": "value model versions are numbered 1, 2, ... in each organization",
}


@dataclass
class World:
    """One object of every kind in one organization, with the ids that routes take."""

    tenant: Tenant
    tag: str
    marker: str
    # (first path segment after /api/v2, parameter name) -> value; the segment "*" matches any.
    ids: dict[tuple[str, str], str] = field(default_factory=dict)
    # (method, path template) -> a request body that is valid for this organization.
    bodies: dict[tuple[str, str], Any] = field(default_factory=dict)
    # Every id this organization's objects have, for the leak check.
    all_ids: set[str] = field(default_factory=set)
    built: list[str] = field(default_factory=list)

    def add(self, parameter: str, value: str, resource: str = "*") -> None:
        self.ids[(resource, parameter)] = value
        if parameter not in SHARED_NAMES:
            self.all_ids.add(value)

    def value_for(self, path: str, parameter: str) -> str | None:
        resource = _resource_of(path)
        return self.ids.get((resource, parameter), self.ids.get(("*", parameter)))

    def path_parameters(self, path: str) -> dict[str, str]:
        """Return the values this world has for the parameters of `path` (an OpenAPI path)."""
        values = {}
        for parameter in PATH_PARAMETER.findall(path):
            value = self.value_for(path, parameter)
            if value is not None:
                values[parameter] = value
        return values

    def body_for(self, method: str, path: str) -> Any:
        return self.bodies.get((method, _template(path)))


def _resource_of(path: str) -> str:
    rest = path[len(API_PREFIX) :] if path.startswith(API_PREFIX) else path
    return rest.strip("/").split("/")[0]


def _template(path: str) -> str:
    """Strip the API prefix and the trailing slash, the keys of `World.bodies`."""
    rest = path[len(API_PREFIX) :] if path.startswith(API_PREFIX) else path
    return rest.rstrip("/") or "/"


def ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201), f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


# World builders, in the order they run. Each names the route it needs and is skipped when the
# app has no such route, so the walk keeps working while domains are added.


def _catalog(world: World, store: Any) -> None:
    http, tag, marker = world.tenant.http, world.tag, world.marker
    currency = ok(http.post("/credits/currencies", json={"name": f"Credits {marker}", "key": f"credits_{tag}"}))
    world.add("currency_id", currency["id"])
    world.add("credits_currency_id", currency["id"])
    world.currency_key = currency["key"]  # type: ignore[attr-defined]
    world.add("credit_currency_key", currency["key"])
    world.bodies[("PUT", "/credits/currencies/{currency_id}")] = {"description": "updated"}

    product = ok(
        http.post("/products/", json={"name": f"Chatbot {marker}", "externalId": f"chatbot-{tag}", "active": True})
    )
    detail = ok(
        http.put(
            f"/products/{product['id']}",
            json={
                "productAttributes": [
                    {
                        "name": "Monthly fee",
                        "pricing": {
                            "pricingType": "RecurringPerUnit",
                            "billingFrequency": "Monthly",
                            "pricePoints": [{"currency": "USD", "unitPrice": 2900}],
                        },
                    },
                    {
                        "name": "Chat message",
                        "pricing": {
                            "pricingType": "UsagePrepaidCredits",
                            "eventName": "chat_message",
                            "creditsCurrencyId": currency["id"],
                            "creditCost": 1,
                        },
                    },
                ]
            },
        )
    )
    fee_line = detail["productAttributes"][0]["productAttributeId"]
    world.add("product_id", product["id"])
    world.add("external_id", f"chatbot-{tag}", resource="products")
    world.product_id = product["id"]  # type: ignore[attr-defined]
    world.all_ids.update(line["productAttributeId"] for line in detail["productAttributes"])
    world.bodies[("PUT", "/products/{product_id}")] = {"description": "updated"}
    world.bodies[("PUT", "/products/external/{external_id}")] = {"description": "updated"}

    plan = ok(
        http.post(
            "/plans/",
            json={
                "productId": product["id"],
                "name": f"Pro {marker}",
                "externalId": f"pro-{tag}",
                "attributes": [
                    {
                        "productAttributeId": fee_line,
                        "pricing": {
                            "pricingType": "RecurringPerUnit",
                            "billingFrequency": "Monthly",
                            "pricePoints": [{"currency": "USD", "unitPrice": 7900}],
                        },
                        "creditBenefits": [
                            {"creditsCurrencyId": currency["id"], "amount": 2000, "allocationCadence": "monthly"}
                        ],
                    }
                ],
            },
        )
    )
    world.add("plan_id", plan["id"])
    world.bodies[("POST", "/plans")] = {"productId": product["id"], "name": "Second plan", "attributes": []}
    world.add("external_id", f"pro-{tag}", resource="plans")
    world.bodies[("PUT", "/plans/{plan_id}")] = {"name": "Pro renamed"}
    world.bodies[("PUT", "/plans/external/{external_id}")] = {"name": "Pro renamed"}


def _customers(world: World, store: Any) -> None:
    http, tag, marker = world.tenant.http, world.tag, world.marker
    customer = ok(
        http.post(
            "/customers/",
            json={"name": f"Customer {marker}", "externalId": f"acme-{tag}", "email": f"{tag}@example.com"},
        )
    )
    world.add("customer_id", customer["id"])
    world.add("external_id", f"acme-{tag}", resource="customers")
    world.customer_id = customer["id"]  # type: ignore[attr-defined]
    world.bodies[("PUT", "/customers/{customer_id}")] = {"legalName": "Renamed Ltd"}
    world.bodies[("PUT", "/customers/external/{external_id}")] = {"legalName": "Renamed Ltd"}

    key = world.currency_key  # type: ignore[attr-defined]
    grant = {"creditCurrencyKey": key, "amount": "100", "description": f"Grant {marker}"}
    ok(http.post(f"/customers/{customer['id']}/credits/grants", json=grant))
    world.bodies[("POST", "/customers/{customer_id}/credits/grants")] = grant
    world.bodies[("POST", "/customers/external/{external_id}/credits/grants")] = grant

    hold_body = {"creditCurrencyKey": key, "amount": "1", "ttlSeconds": 3600}
    hold = ok(http.post(f"/customers/{customer['id']}/credits/holds", json=hold_body))
    world.add("hold_id", hold["holdId"])
    world.bodies[("POST", "/customers/{customer_id}/credits/holds")] = hold_body
    world.bodies[("POST", "/customers/external/{external_id}/credits/holds")] = hold_body


def _signals(world: World, store: Any) -> None:
    http, tag = world.tenant.http, world.tag
    signal = {
        "eventName": "chat_message",
        "customer": {"externalCustomerId": f"acme-{tag}"},
        "attribution": {"externalProductId": f"chatbot-{tag}"},
        "idempotencyKey": "shared-key-1",
        "data": {"note": world.marker},
    }
    assert ok(http.post("/signals/bulk", json={"signals": [signal]}))["ingested"] == 1
    world.bodies[("POST", "/signals/bulk")] = {"signals": [{**signal, "idempotencyKey": "shared-key-2"}]}
    [stored] = ok(http.get("/signals/"))["data"]
    world.add("signal_id", stored["id"])


def _webhooks(world: World, store: Any) -> None:
    from tallystick.server.events import CREDITS_DEPLETED, record_event
    from tallystick.server.ids import new_id
    from tallystick.server.models import WebhookDelivery

    http = world.tenant.http
    # Port 9 (discard) on loopback: nothing listens, so a send fails fast and stays local.
    update = {"url": f"http://127.0.0.1:9/{world.tag}", "enabled": True}
    ok(http.patch(f"/webhooks/{CREDITS_DEPLETED}", json=update))
    world.bodies[("PATCH", "/webhooks/{webhook_name}")] = update
    world.add("webhook_name", CREDITS_DEPLETED)

    threshold = {"threshold": "5"}
    currency_id = world.value_for("/webhooks", "credits_currency_id")
    ok(http.put(f"/webhooks/low-balance-thresholds/{currency_id}", json=threshold))
    world.bodies[("PUT", "/webhooks/low-balance-thresholds/{credits_currency_id}")] = threshold

    # A finished delivery, written directly: the delivery task only creates them asynchronously.
    now = datetime.now(UTC)
    with store.transaction() as session:
        event = record_event(session, world.tenant.organization_id, CREDITS_DEPLETED, {"note": world.marker})
        event.delivered_at = now
        delivery = WebhookDelivery(
            id=new_id("webhook_delivery"),
            organization_id=world.tenant.organization_id,
            event_id=event.id,
            name=CREDITS_DEPLETED,
            status="failed",
            give_up_at=now - timedelta(seconds=1),
        )
        session.add(delivery)
    world.add("delivery_id", delivery.id)
    world.all_ids.add(event.id)


def _costs(world: World, store: Any) -> None:
    override = {"model": f"model-{world.tag}", "inputPerMillionTokens": "1", "outputPerMillionTokens": "2"}
    created = ok(world.tenant.http.put("/costs/price-overrides", json=override))
    world.add("override_id", created["id"])
    world.bodies[("PUT", "/costs/price-overrides")] = override


def _checkouts(world: World, store: Any) -> None:
    from tests.checkout_helpers import create_checkout, hosted_page

    body = {
        "products": [{"id": world.product_id}],  # type: ignore[attr-defined]
        "externalCustomerId": f"buyer-{world.tag}",
        "successUrl": "https://app.example.com/welcome",
    }
    world.bodies[("POST", "/checkouts")] = body
    paid = create_checkout(world.tenant, **body)
    world.all_ids.add(paid["id"])
    page = hosted_page(paid)
    plan_id = world.value_for("/plans", "plan_id")
    response = page.pay(plan_id)
    assert response.status_code in (200, 303), response.text[:500]
    page.client.close()

    order = ok(world.tenant.http.get("/orders/"))["data"][0]
    world.add("order_id", order["id"])
    invoices = ok(world.tenant.http.get("/invoices/"))["data"]
    world.add("invoice_id", invoices[0]["id"])

    # A second, open checkout (for another buyer) for the routes that read or archive one.
    open_checkout = create_checkout(world.tenant, **{**body, "externalCustomerId": f"buyer2-{world.tag}"})
    world.add("checkout_id", open_checkout["id"])


def _value(world: World, store: Any) -> None:
    http, tag, marker = world.tenant.http, world.tag, world.marker
    metric = ok(
        http.post(
            "/value-metrics/",
            json={
                "name": f"Minutes {marker}",
                "slug": f"minutes_{tag}",
                "unit": {"type": "duration", "durationUnit": "minutes"},
                "formula": {
                    "expression": "messages * minutes_per_message",
                    "variables": [
                        {"id": "messages", "label": "Messages"},
                        {"id": "minutes_per_message", "label": "Minutes per message", "type": "number"},
                    ],
                },
                "signal": {"eventName": "chat_message", "defaults": {"messages": 1, "minutes_per_message": 4}},
            },
        )
    )
    world.add("slug", metric["slug"])
    world.bodies[("PATCH", "/value-metrics/{slug}")] = {"description": "updated"}

    models = ok(http.get("/value-models/versions"))["data"]
    world.add("version", str(max(model["version"] for model in models)))

    start = datetime(2026, 3, 1, tzinfo=UTC)
    receipt_body = {
        "externalCustomerId": f"acme-{tag}",
        "startDate": start.isoformat(),
        "endDate": (start + timedelta(days=31)).isoformat(),
    }
    receipt = ok(http.post("/value-receipts/", json=receipt_body))
    world.add("receipt_id", receipt["id"])
    world.bodies[("POST", "/value-receipts")] = receipt_body
    world.bodies[("POST", "/value-receipts/sync")] = receipt_body
    world.bodies[("POST", "/value-receipts/{receipt_id}/links")] = {"expiresInSeconds": 600}
    world.bodies[("POST", "/value-receipts/{receipt_id}/publish")] = {}


def _test_clocks(world: World, store: Any) -> None:
    frozen = datetime(2026, 1, 1, tzinfo=UTC)
    created = ok(world.tenant.http.post("/test-clocks/", json={"frozenTime": frozen.isoformat(), "name": world.marker}))
    world.add("clock_id", created["id"])
    world.bodies[("POST", "/test-clocks")] = {"frozenTime": frozen.isoformat()}
    world.bodies[("POST", "/test-clocks/{clock_id}/advance")] = {"frozenTime": (frozen + timedelta(days=1)).isoformat()}


def _portals(world: World, store: Any) -> None:
    body = {"customerId": world.customer_id}  # type: ignore[attr-defined]
    portal = ok(world.tenant.http.post("/customer-portals/", json=body))
    world.bodies[("POST", "/customer-portals")] = body
    world.portal_url = portal["url"]  # type: ignore[attr-defined]
    world.all_ids.add(portal["id"])


# (builder, a route it needs: method and path under /api/v2)
BUILDERS: list[tuple[Callable[[World, Any], None], tuple[str, str]]] = [
    (_catalog, ("POST", "/credits/currencies")),
    (_customers, ("POST", "/customers/")),
    (_signals, ("POST", "/signals/bulk")),
    (_webhooks, ("PATCH", "/webhooks/{webhook_name}")),
    (_costs, ("PUT", "/costs/price-overrides")),
    (_checkouts, ("POST", "/checkouts/")),
    (_value, ("POST", "/value-metrics/")),
    (_test_clocks, ("POST", "/test-clocks/")),
    (_portals, ("POST", "/customer-portals/")),
]


def app_routes(app: Any) -> list[tuple[str, str, APIRoute]]:
    """Return (method, path, route) for every API operation of `app`, the slash twins included."""
    routes = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or context.path is None:
            continue
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                routes.append((method, context.path, route))
    return routes


def build_world(tenant: Tenant, store: Any = None, routes: set[tuple[str, str]] | None = None) -> World:
    """Create one object of every kind that the app's routes serve, in `tenant`'s organization."""
    if store is None:
        from tallystick.server.db import Store

        store = Store.open(tenant.server.database_url)
    if routes is None:
        document = httpx.get(tenant.server.root + "/openapi.json", timeout=60).json()
        routes = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    tag = secrets.token_hex(4)
    world = World(tenant=tenant, tag=tag, marker=f"private-{tag}")
    for builder, (method, path) in BUILDERS:
        if (method, API_PREFIX + path) in routes:
            builder(world, store)
            world.built.append(builder.__name__.lstrip("_"))
    return world


# The walk


@dataclass
class Walk:
    """The calls of one walk and the problems they showed."""

    owner: World
    intruder: World
    walked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def leaks(self, response: httpx.Response, sent: set[str]) -> list[str]:
        """Return A's marker and ids found in a response to B, apart from the ids B sent."""
        text = response.text
        found = [self.owner.marker] if self.owner.marker in text else []
        found += sorted(value for value in self.owner.all_ids - sent if value in text)
        return found


def fill_path(path: str, values: dict[str, str]) -> str:
    """Return `path` under /api/v2 with its parameters replaced by `values`."""
    filled = PATH_PARAMETER.sub(lambda match: values[match.group(1)], path)
    return filled[len(API_PREFIX) :]


def snapshot(world: World, routes: list[tuple[str, str, APIRoute]]) -> dict[str, str]:
    """GET every readable route of the world's objects with its own key; return path -> body."""
    bodies_by_url = {}
    for method, path, _route in routes:
        parameters = PATH_PARAMETER.findall(path)
        if method != "GET" or not path.startswith(API_PREFIX) or path.endswith("/"):
            continue
        values = world.path_parameters(path)
        if set(parameters) - set(values):
            continue
        url = fill_path(path, values)
        response = world.tenant.http.get(url)
        bodies_by_url[url] = f"{response.status_code} {_without_clock_readings(response.text)}"
    return bodies_by_url


def _without_clock_readings(text: str) -> str:
    """Drop fields that report the time of the request, such as the customer state's timestamp."""
    return re.sub(r'"timestamp":"[^"]*"', '"timestamp":null', text)


def first_difference(url: str, old: str, new: str) -> str:
    position = next((index for index, pair in enumerate(zip(old, new)) if pair[0] != pair[1]), min(len(old), len(new)))
    start = max(0, position - 150)
    return f"{url} changed at {position}: {old[start : position + 150]!r} -> {new[start : position + 150]!r}"


def walk_routes(routes: list[tuple[str, str, APIRoute]], owner: World, intruder: World) -> Walk:
    walk = Walk(owner, intruder)
    # Deletes last, so that a broken check cannot hide the other routes' responses.
    ordered = sorted(routes, key=lambda item: (item[0] == "DELETE", item[1], item[0]))
    for method, path, route in ordered:
        parameters = PATH_PARAMETER.findall(path)
        if not path.startswith(API_PREFIX) or not parameters:
            continue
        label = f"{method} {path}"
        values = owner.path_parameters(path)
        missing = [name for name in parameters if name not in values]
        if missing:
            walk.problems.append(
                f"{label}: no object for {missing}; add a builder to BUILDERS in {__name__} that creates one"
            )
            continue

        body = intruder.body_for(method, path)
        if body is None and route.body_field is not None:
            # Routes whose body fields are all optional need no entry in World.bodies.
            body = {}
        response = intruder.tenant.http.request(method, fill_path(path, values), json=body)
        walk.walked.append(label)
        shared = [name for name in parameters if name in SHARED_NAMES]
        if shared:
            # The name reaches B's own object, so any success must carry B's data only.
            if response.status_code >= 500:
                walk.problems.append(f"{label}: {response.status_code} {response.text[:300]}")
        elif response.status_code != 404:
            walk.problems.append(f"{label} with the other organization's ids: {response.status_code} {response.text[:300]}")
        leaked = walk.leaks(response, set(values.values()))
        if leaked:
            walk.problems.append(f"{label} leaked {leaked}: {response.text[:300]}")
    return walk


def test_other_organization_gets_404_on_every_route(server, store, tenant, other_tenant):
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    routes = app_routes(create_app(Settings(database_url=server.database_url), store=store))
    served = {(method, path) for method, path, _route in routes}
    owner = build_world(tenant, store, served)
    intruder = build_world(other_tenant, store, served)
    before = snapshot(owner, routes)

    walk = walk_routes(routes, owner, intruder)
    after = snapshot(owner, routes)

    print(f"walked {len(walk.walked)} routes with ids; worlds: {owner.built}")
    assert not walk.problems, "\n".join(walk.problems)
    changed = sorted(url for url in before if before[url] != after.get(url))
    assert changed == [], [first_difference(url, before[url], after.get(url, "")) for url in changed]
    assert len(walk.walked) >= 40


def query_id_value(world: World, name: str) -> str | None:
    """Return the world's value for an id query parameter such as customerId or externalCustomerId."""
    external = re.fullmatch(r"external([A-Z]\w*)Id", name)
    if external:
        return world.ids.get((external.group(1).lower() + "s", "external_id"))
    snake = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
    return world.ids.get(("*", snake))


def test_lists_show_nothing_of_other_organization(server, store, tenant, other_tenant):
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    routes = app_routes(create_app(Settings(database_url=server.database_url), store=store))
    served = {(method, path) for method, path, _route in routes}
    owner = build_world(tenant, store, served)
    intruder = build_world(other_tenant, store, served)
    walk = Walk(owner, intruder)
    filtered = 0

    for method, path, route in routes:
        if method != "GET" or not path.startswith(API_PREFIX) or PATH_PARAMETER.search(path):
            continue
        response = intruder.tenant.http.get(fill_path(path, {}))
        walk.walked.append(f"GET {path}")
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:300]}"
        leaked = walk.leaks(response, set())
        assert not leaked, f"GET {path} leaked {leaked}"

        # Every id filter, given the other organization's id, finds nothing of it.
        for parameter in route.dependant.query_params:
            name = parameter.alias or parameter.name
            value = query_id_value(owner, name)
            if value is None:
                continue
            filtered += 1
            response = intruder.tenant.http.get(fill_path(path, {}), params={name: value})
            assert response.status_code in (200, 400, 404), f"GET {path}?{name}: {response.status_code}"
            leaked = walk.leaks(response, {value})
            assert not leaked, f"GET {path}?{name}={value} leaked {leaked}: {response.text[:300]}"

    print(f"listed {len(walk.walked)} collection routes, {filtered} id filters")
    assert len(walk.walked) >= 20
    assert filtered >= 5


def test_idempotency_key_is_per_organization(tenant, other_tenant, store):
    signal = {"eventName": "chat_message", "customer": {"externalCustomerId": "same-user"}, "idempotencyKey": "same-key"}

    first = tenant.http.post("/signals/bulk", json={"signals": [signal]})
    other = other_tenant.http.post("/signals/bulk", json={"signals": [signal]})
    repeated = tenant.http.post("/signals/bulk", json={"signals": [signal]})

    assert first.json()["ingested"] == 1
    # The same key in another organization is a new signal, not a duplicate of the first.
    assert other.json()["ingested"] == 1
    assert other.json()["duplicates"] == 0
    assert repeated.json()["duplicates"] == 1
    [mine] = tenant.http.get("/signals/").json()["data"]
    [theirs] = other_tenant.http.get("/signals/").json()["data"]
    assert mine["id"] != theirs["id"]


def test_webhook_settings_are_per_organization(tenant, other_tenant):
    name = "billing-credits-depleted"
    tenant.http.patch(f"/webhooks/{name}", json={"url": "http://127.0.0.1:9/owner", "enabled": True})

    changed = other_tenant.http.patch(f"/webhooks/{name}", json={"url": "http://127.0.0.1:9/intruder", "enabled": True})

    assert changed.status_code == 200
    assert changed.json()["url"] == "http://127.0.0.1:9/intruder"
    owner_settings = {item["name"]: item for item in tenant.http.get("/webhooks/").json()["data"]}
    assert owner_settings[name]["url"] == "http://127.0.0.1:9/owner"
    # Each organization signs with its own secret.
    owner_secret = tenant.http.post("/webhooks/rotate-secret").json()["signingSecret"]
    intruder_secret = other_tenant.http.post("/webhooks/rotate-secret").json()["signingSecret"]
    assert owner_secret != intruder_secret


def swap_ids(value: Any, replacements: dict[str, str]) -> Any:
    """Return `value` (a JSON body) with every string found in `replacements` replaced."""
    if isinstance(value, dict):
        return {key: swap_ids(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [swap_ids(item, replacements) for item in value]
    if isinstance(value, str):
        return replacements.get(value, value)
    return value


def test_bodies_naming_other_organization_change_nothing(server, store, tenant, other_tenant):
    """B sends its own valid bodies with every id and key of B replaced by A's.

    Some routes reject the request (404 or 400); some create B's own object, as signals do
    for an unknown external customer id. Neither may show A's data or change A's objects.
    """
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    routes = app_routes(create_app(Settings(database_url=server.database_url), store=store))
    served = {(method, path) for method, path, _route in routes}
    owner = build_world(tenant, store, served)
    intruder = build_world(other_tenant, store, served)
    replacements = {
        value: owner.ids[key]
        for key, value in intruder.ids.items()
        if key in owner.ids and key[1] not in SHARED_NAMES and value != owner.ids[key]
    }
    before = snapshot(owner, routes)
    walk = Walk(owner, intruder)
    statuses: dict[int, int] = {}

    for (method, template), body in sorted(intruder.bodies.items(), key=lambda item: item[0][0] == "DELETE"):
        swapped = swap_ids(body, replacements)
        if swapped == body:
            continue
        path = API_PREFIX + template
        response = intruder.tenant.http.request(method, fill_path(path, intruder.path_parameters(path)), json=swapped)
        walk.walked.append(f"{method} {template}")
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            walk.problems.append(f"{method} {template}: {response.status_code} {response.text[:300]}")
        leaked = walk.leaks(response, set(replacements.values()))
        if leaked:
            walk.problems.append(f"{method} {template} leaked {leaked}: {response.text[:300]}")
    after = snapshot(owner, routes)

    print(f"sent {len(walk.walked)} bodies naming the other organization's objects; statuses {statuses}")
    assert not walk.problems, "\n".join(walk.problems)
    changed = sorted(url for url in before if before[url] != after.get(url))
    assert changed == [], [first_difference(url, before[url], after.get(url, "")) for url in changed]
    assert len(walk.walked) >= 8


def test_portal_link_opens_only_its_customer(server, store, tenant, other_tenant):
    owner = build_world(tenant, store)
    intruder = build_world(other_tenant, store)
    if not hasattr(owner, "portal_url"):
        pytest.skip("this app has no customer portal")

    opened = httpx.get(owner.portal_url)  # type: ignore[attr-defined]
    other = httpx.get(intruder.portal_url)  # type: ignore[attr-defined]
    forged = httpx.get(owner.portal_url[:-4] + "AAAA")  # type: ignore[attr-defined]

    assert opened.status_code == 200
    assert owner.marker in opened.text
    assert intruder.marker not in opened.text
    assert owner.marker not in other.text
    assert forged.status_code in (403, 404)
    assert owner.marker not in forged.text
