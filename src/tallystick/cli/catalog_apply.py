"""Plan and apply the changes that bring a server's catalog in line with a catalog file.

Everything goes through the REST API, so a file applies to a remote server as well. The API has
no delete for pricing lines or products, so things on the server that the file does not
mention are kept and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tallystick.cli.catalog_file import (
    BenefitSpec,
    CatalogSpec,
    CurrencySpec,
    LineSpec,
    PlanSpec,
    PricingSpec,
    ProductSpec,
)
from tallystick.client import Client

# Values the server fills in when a credit benefit leaves them out.
_BENEFIT_DEFAULTS = {
    "recipient": "organization",
    "isInfiniteTotal": False,
    "allocationCadence": "monthly",
    "creditGrantTiming": "on_order_activation",
}
_BENEFIT_FIELDS = (
    "amount",
    "recipient",
    "isInfiniteTotal",
    "allocationCadence",
    "creditGrantTiming",
    "overageUnitPrice",
    "rolloverAmount",
    "rolloverDuration",
    "rolloverDurationUnit",
)
# Output-only pricing fields that the server derives from pricingType.
_DERIVED_PRICING_FIELDS = ("chargeType", "pricingModel")


@dataclass
class Change:
    action: str  # create, update or keep
    kind: str  # credit currency, product, pricing line or plan
    name: str
    detail: str = ""
    apply: Any = field(default=None, repr=False)


@dataclass
class CatalogState:
    """The server's catalog, indexed by the stable keys that catalog files use."""

    currencies: dict[str, dict[str, Any]]
    products: dict[str, dict[str, Any]]
    plans: dict[str, dict[str, Any]]
    unnamed_products: list[str]

    @property
    def currency_ids(self) -> dict[str, str]:
        return {key: currency["id"] for key, currency in self.currencies.items()}

    @property
    def currency_keys(self) -> dict[str, str]:
        return {currency["id"]: key for key, currency in self.currencies.items()}


def read_state(client: Client) -> CatalogState:
    currencies = {item["key"]: item for item in client.get("/credits/currencies", status="all")["data"]}
    products: dict[str, dict[str, Any]] = {}
    unnamed: list[str] = []
    for summary in _all_pages(client, "/products/"):
        if not summary.get("externalId"):
            unnamed.append(summary["id"])
            continue
        products[summary["externalId"]] = client.get(f"/products/{summary['id']}")
    plans = {}
    for plan in _all_pages(client, "/plans/"):
        if plan.get("externalId"):
            plans[plan["externalId"]] = plan
    return CatalogState(currencies, products, plans, unnamed)


def _all_pages(client: Client, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = client.get(path, limit=200, offset=offset, **params)
        items.extend(page["data"])
        if not page["pagination"]["hasMore"]:
            return items
        offset += len(page["data"])


def plan_changes(client: Client, spec: CatalogSpec, state: CatalogState) -> list[Change]:
    """Return the ordered changes that make the server match `spec`; nothing is sent yet.

    Applying a change may create ids that later changes need (a new currency used by a pricing
    line), so each change's `apply` reads ids from `state`, which earlier changes update.
    """
    changes: list[Change] = []
    for currency in spec.currencies:
        changes.extend(_currency_changes(client, currency, state))
    for product in spec.products:
        changes.extend(_product_changes(client, product, state))
    return changes


def _currency_changes(client: Client, spec: CurrencySpec, state: CatalogState) -> list[Change]:
    current = state.currencies.get(spec.key)
    if current is None:

        def create() -> None:
            body = {"name": spec.name, "key": spec.key}
            if spec.description is not None:
                body["description"] = spec.description
            state.currencies[spec.key] = client.post("/credits/currencies", body)

        return [Change("create", "credit currency", spec.key, apply=create)]

    changes = []
    if spec.description is not None and spec.description != current.get("description"):

        def update() -> None:
            state.currencies[spec.key] = client.put(
                f"/credits/currencies/{current['id']}", {"description": spec.description}
            )

        changes.append(Change("update", "credit currency", spec.key, "description", apply=update))
    if spec.name != current["name"]:
        changes.append(
            Change("keep", "credit currency", spec.key, f"name stays '{current['name']}': the API cannot rename a currency")
        )
    return changes


def _product_changes(client: Client, spec: ProductSpec, state: CatalogState) -> list[Change]:
    changes: list[Change] = []
    current = state.products.get(spec.externalId)
    fields = {
        "name": spec.name,
        "description": spec.description,
        "active": spec.active,
        "productCode": spec.productCode,
        "metadata": spec.metadata,
    }
    wanted = {key: value for key, value in fields.items() if value is not None}

    if current is None:

        def create() -> None:
            created = client.post("/products/", {"externalId": spec.externalId, **wanted})
            state.products[spec.externalId] = client.get(f"/products/{created['id']}")

        changes.append(Change("create", "product", spec.externalId, apply=create))
        current_lines: dict[str, dict[str, Any]] = {}
    else:
        differing = sorted(key for key, value in wanted.items() if current.get(key) != value)
        if differing:

            def update() -> None:
                product = state.products[spec.externalId]
                state.products[spec.externalId] = client.put(
                    f"/products/{product['id']}", {key: wanted[key] for key in differing}
                )

            changes.append(Change("update", "product", spec.externalId, ", ".join(differing), apply=update))
        current_lines = {line["name"]: line for line in current["productAttributes"]}
        for name in current_lines:
            if name not in {line.name for line in spec.lines}:
                changes.append(Change("keep", "pricing line", f"{spec.externalId}/{name}", "not in the file"))

    for line in spec.lines:
        changes.extend(_line_changes(client, spec.externalId, line, current_lines.get(line.name), state))
    for plan in spec.plans:
        changes.extend(_plan_changes(client, spec.externalId, plan, state))
    return changes


def _line_changes(
    client: Client, product_key: str, spec: LineSpec, current: dict[str, Any] | None, state: CatalogState
) -> list[Change]:
    label = f"{product_key}/{spec.name}"
    if current is not None:
        same_pricing = _normalized_pricing(current.get("pricing")) == _normalized_pricing(
            _pricing_body(spec.pricing, state.currency_ids)
        )
        same_benefits = spec.creditBenefits is None or _normalized_benefits(
            current["creditBenefits"], state.currency_keys
        ) == _normalized_spec_benefits(spec.creditBenefits)
        same_active = spec.active is None or spec.active == current["active"]
        if same_pricing and same_benefits and same_active:
            return []

    def upsert() -> None:
        product = state.products[product_key]
        body: dict[str, Any] = {
            "name": spec.name,
            "pricing": _pricing_body(spec.pricing, state.currency_ids),
        }
        existing = next((line for line in product["productAttributes"] if line["name"] == spec.name), None)
        if existing is not None:
            body["productAttributeId"] = existing["productAttributeId"]
        if spec.active is not None:
            body["active"] = spec.active
        if spec.creditBenefits is not None:
            body["creditBenefits"] = [_benefit_body(item, state.currency_ids) for item in spec.creditBenefits]
        state.products[product_key] = client.put(f"/products/{product['id']}", {"productAttributes": [body]})

    return [Change("create" if current is None else "update", "pricing line", label, apply=upsert)]


def _plan_changes(client: Client, product_key: str, spec: PlanSpec, state: CatalogState) -> list[Change]:
    current = state.plans.get(spec.externalId)

    def attributes_body() -> list[dict[str, Any]]:
        product = state.products[product_key]
        line_ids = {line["name"]: line["productAttributeId"] for line in product["productAttributes"]}
        return [
            {
                "productAttributeId": line_ids[item.line],
                "pricing": _pricing_body(item.pricing, state.currency_ids),
                "creditBenefits": [_benefit_body(b, state.currency_ids) for b in item.creditBenefits or []],
            }
            for item in spec.lines
        ]

    scalar_fields = {
        "name": spec.name,
        "isDefault": spec.isDefault,
        "supportedCurrencies": spec.supportedCurrencies,
        "status": spec.status,
    }
    wanted = {key: value for key, value in scalar_fields.items() if value is not None}

    if current is None:

        def create() -> None:
            product = state.products[product_key]
            body = {"productId": product["id"], "externalId": spec.externalId, "attributes": attributes_body(), **wanted}
            created = client.post("/plans/", body)
            state.plans[spec.externalId] = created

        return [Change("create", "plan", spec.externalId, apply=create)]

    differing = sorted(key for key, value in wanted.items() if current.get(key) != value)
    current_lines = _normalized_plan_lines(current, state)
    wanted_lines = [
        (item.line, _normalized_pricing(_pricing_body(item.pricing, state.currency_ids)), _normalized_spec_benefits(item.creditBenefits or []))
        for item in spec.lines
    ]
    if current_lines != wanted_lines:
        differing.append("lines")
    if not differing:
        return []

    def update() -> None:
        body: dict[str, Any] = {key: wanted[key] for key in differing if key in wanted}
        if "lines" in differing:
            body["attributes"] = attributes_body()
        state.plans[spec.externalId] = client.put(f"/plans/{current['id']}", body)

    return [Change("update", "plan", spec.externalId, ", ".join(differing), apply=update)]


def _normalized_plan_lines(plan: dict[str, Any], state: CatalogState) -> list[tuple[Any, ...]]:
    return [
        (
            attribute["name"],
            _normalized_pricing(attribute.get("pricing")),
            _normalized_benefits(attribute["creditBenefits"], state.currency_keys),
        )
        for attribute in plan["attributes"]
    ]


def _pricing_body(pricing: PricingSpec, currency_ids: dict[str, str]) -> dict[str, Any]:
    body = pricing.model_dump(mode="json")
    key = body.pop("creditCurrency", None)
    if key is not None:
        # A currency created earlier in the same apply has an id by now. In a dry run it has
        # none, so a placeholder stands in, which differs from every real id.
        body["creditsCurrencyId"] = currency_ids.get(key, f"<new currency {key}>")
    return body


def _benefit_body(benefit: BenefitSpec, currency_ids: dict[str, str]) -> dict[str, Any]:
    body = benefit.model_dump(mode="json", exclude_none=True)
    key = body.pop("creditCurrency")
    body["creditsCurrencyId"] = currency_ids.get(key, f"<new currency {key}>")
    return body


def _normalized_pricing(pricing: dict[str, Any] | None) -> Any:
    if pricing is None:
        return None
    normalized = {
        key: _normalized_value(value)
        for key, value in pricing.items()
        if key not in _DERIVED_PRICING_FIELDS and value is not None
    }
    if not normalized.get("pricePoints"):
        normalized.pop("pricePoints", None)
    return normalized


def _normalized_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return Decimal(str(value)).normalize()
    if isinstance(value, dict):
        return {key: _normalized_value(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_normalized_value(item) for item in value]
    return value


def _normalized_benefits(benefits: list[dict[str, Any]], currency_keys: dict[str, str]) -> list[dict[str, Any]]:
    normalized = []
    for benefit in benefits:
        item = {name: _normalized_value(benefit.get(name)) for name in _BENEFIT_FIELDS if benefit.get(name) is not None}
        item["creditCurrency"] = currency_keys.get(benefit.get("creditsCurrencyId", ""), benefit.get("creditsCurrencyId"))
        normalized.append(item)
    return normalized


def _normalized_spec_benefits(benefits: list[BenefitSpec]) -> list[dict[str, Any]]:
    normalized = []
    for benefit in benefits:
        raw = benefit.model_dump(exclude_none=True)
        item = {name: _normalized_value(raw[name]) for name in _BENEFIT_FIELDS if name in raw}
        for name, default in _BENEFIT_DEFAULTS.items():
            item.setdefault(name, default)
        item["creditCurrency"] = raw["creditCurrency"]
        normalized.append(item)
    return normalized


def export_catalog(state: CatalogState) -> CatalogSpec:
    """Describe the server's catalog in the catalog-file format."""
    keys = state.currency_keys
    currencies = [
        CurrencySpec(key=key, name=item["name"], description=item.get("description"))
        for key, item in state.currencies.items()
    ]
    products = []
    plans_by_product: dict[str, list[dict[str, Any]]] = {}
    for plan in state.plans.values():
        plans_by_product.setdefault(plan["productId"], []).append(plan)

    for external_id, product in state.products.items():
        lines = [
            LineSpec(
                name=line["name"],
                active=None if line["active"] else False,
                pricing=_pricing_spec(line.get("pricing"), keys),
                creditBenefits=_benefit_specs(line["creditBenefits"], keys) or None,
            )
            for line in product["productAttributes"]
            if line.get("pricing")
        ]
        line_names = {line["productAttributeId"]: line["name"] for line in product["productAttributes"]}
        plans = [
            PlanSpec(
                externalId=plan["externalId"],
                name=plan.get("name"),
                isDefault=plan["isDefault"] or None,
                status=None if plan["status"] == "active" else plan["status"],
                lines=[
                    {
                        "line": line_names.get(attribute["productAttributeId"], attribute["name"]),
                        "pricing": _pricing_spec(attribute.get("pricing"), keys),
                        "creditBenefits": _benefit_specs(attribute["creditBenefits"], keys) or None,
                    }
                    for attribute in plan["attributes"]
                ],
            )
            for plan in sorted(plans_by_product.get(product["id"], []), key=lambda item: item["createdAt"])
        ]
        products.append(
            ProductSpec(
                externalId=external_id,
                name=product["name"],
                description=product.get("description"),
                active=product["active"],
                productCode=product.get("productCode"),
                metadata=product.get("metadata"),
                lines=lines,
                plans=plans,
            )
        )
    return CatalogSpec(currencies=currencies, products=products)


def _pricing_spec(pricing: dict[str, Any] | None, currency_keys: dict[str, str]) -> PricingSpec:
    body = {key: value for key, value in (pricing or {}).items() if key not in _DERIVED_PRICING_FIELDS}
    if not body.get("pricePoints"):
        body.pop("pricePoints", None)
    currency_id = body.pop("creditsCurrencyId", None)
    if currency_id is not None:
        body["creditCurrency"] = currency_keys.get(currency_id, currency_id)
    return PricingSpec.model_validate(body)


def _benefit_specs(benefits: list[dict[str, Any]], currency_keys: dict[str, str]) -> list[BenefitSpec]:
    specs = []
    for benefit in benefits:
        body = {
            name: benefit[name]
            for name in _BENEFIT_FIELDS
            if benefit.get(name) is not None and benefit.get(name) != _BENEFIT_DEFAULTS.get(name)
        }
        body["creditCurrency"] = currency_keys.get(benefit.get("creditsCurrencyId", ""), benefit.get("creditsCurrencyId"))
        specs.append(BenefitSpec.model_validate(body))
    return specs
