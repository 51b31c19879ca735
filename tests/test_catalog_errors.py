"""Catalog input validation, 404s and tenant isolation, checked over raw HTTP."""

from __future__ import annotations

import pytest

from tests.guide import create_guide_catalog


def usage_line(currency_id: str, **overrides):  # type: ignore[no-untyped-def]
    pricing = {
        "pricingType": "UsagePrepaidCredits",
        "eventName": "chat_message",
        "creditsCurrencyId": currency_id,
        "creditCost": 1,
    }
    pricing.update(overrides)
    return {"name": "Chat message", "pricing": pricing}


def make_currency(tenant, key="chat_credits"):  # type: ignore[no-untyped-def]
    response = tenant.http.post("/credits/currencies", json={"name": "Chat Credits", "key": key})
    assert response.status_code == 201, response.text
    return response.json()


def make_product(tenant, external_id="chatbot"):  # type: ignore[no-untyped-def]
    response = tenant.http.post("/products/", json={"name": "ChatBot", "externalId": external_id})
    assert response.status_code == 201, response.text
    return response.json()


def test_currency_duplicate_key_is_400(tenant):
    make_currency(tenant)
    response = tenant.http.post("/credits/currencies", json={"name": "Again", "key": "chat_credits"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "duplicate"
    assert "key" in body["error"]
    assert "'chat_credits'" in body["error"]


@pytest.mark.parametrize("key", ["Chat", "chat credits", "", "ü", "a" * 65])
def test_currency_bad_key_is_400(tenant, key):
    response = tenant.http.post("/credits/currencies", json={"name": "X", "key": key})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["error"].startswith("Invalid key")


def test_currency_wrong_type_is_400(tenant):
    response = tenant.http.post("/credits/currencies", json={"name": 5, "key": "k"})
    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == "name"


def test_currency_missing_field_is_400(tenant):
    response = tenant.http.post("/credits/currencies", json={"name": "X"})
    assert response.status_code == 400
    body = response.json()
    assert body["fields"][0]["field"] == "key"
    assert "required" in body["error"].lower()


def test_invalid_json_body_is_400(tenant):
    response = tenant.http.post(
        "/credits/currencies", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


def test_unknown_currency_in_pricing_is_400(tenant):
    product = make_product(tenant)
    response = tenant.http.put(
        f"/products/{product['id']}", json={"productAttributes": [usage_line("ccur_missing")]}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "unknown_currency"
    assert "productAttributes[0].pricing.creditsCurrencyId" in body["error"]
    assert "ccur_missing" in body["error"]
    unchanged = tenant.http.get(f"/products/{product['id']}").json()
    assert unchanged["productAttributes"] == []


def test_pricing_missing_required_field_is_400(tenant):
    currency = make_currency(tenant)
    product = make_product(tenant)
    line = usage_line(currency["id"])
    del line["pricing"]["creditCost"]
    response = tenant.http.put(f"/products/{product['id']}", json={"productAttributes": [line]})
    assert response.status_code == 400
    body = response.json()
    assert "productAttributes[0].pricing" in body["error"]
    assert "creditCost" in body["error"]


def test_nested_missing_field_hint(tenant):
    # creditUnitsPerUnit is close enough to creditUnits to be matched, but is a field of its own.
    currency = make_currency(tenant)
    product = make_product(tenant)

    def bracketed_line(bracket):  # type: ignore[no-untyped-def]
        return usage_line(
            currency["id"],
            pricingType="UsageBracketedPrepaidCredits",
            pricingInput={"kind": "signalQuantity", "path": "$.quantity"},
            creditUnitBrackets=[bracket],
        )

    valid_only = bracketed_line({"upTo": None, "creditUnitsPerUnit": 1})
    misspelled = bracketed_line({"upTo": None, "creditUnitsPerUnit": 1, "creditUnts": 2})

    not_hinted = tenant.http.put(f"/products/{product['id']}", json={"productAttributes": [valid_only]})
    hinted = tenant.http.put(f"/products/{product['id']}", json={"productAttributes": [misspelled]})

    field = "productAttributes[0].pricing.creditUnitBrackets[0].creditUnits"
    assert not_hinted.status_code == 400
    assert not_hinted.json()["error"] == f"Invalid {field}: Field required"
    assert hinted.status_code == 400
    hint = "(the body has 'creditUnts'; did you mean 'creditUnits'?)"
    assert hinted.json()["error"] == f"Invalid {field}: Field required {hint}"
    assert tenant.http.get(f"/products/{product['id']}").json()["productAttributes"] == []


def test_pricing_unknown_type_is_400(tenant):
    product = make_product(tenant)
    response = tenant.http.put(
        f"/products/{product['id']}",
        json={"productAttributes": [{"name": "x", "pricing": {"pricingType": "Bogus"}}]},
    )
    assert response.status_code == 400
    assert "pricingType" in response.json()["error"]


def test_pricing_fraction_of_cent_is_400(tenant):
    product = make_product(tenant)
    fee = {
        "name": "Monthly fee",
        "pricing": {
            "pricingType": "RecurringPerUnit",
            "billingFrequency": "Monthly",
            "pricePoints": [{"currency": "USD", "unitPrice": 29.5}],
        },
    }
    response = tenant.http.put(f"/products/{product['id']}", json={"productAttributes": [fee]})
    assert response.status_code == 400
    assert "unitPrice" in response.json()["error"]


def test_product_duplicate_external_id_is_400(tenant):
    make_product(tenant)
    response = tenant.http.post("/products/", json={"name": "Other", "externalId": "chatbot"})
    assert response.status_code == 400
    assert response.json()["code"] == "duplicate"
    assert "externalId" in response.json()["error"]


def test_product_external_id_with_slash_is_400(tenant):
    response = tenant.http.post("/products/", json={"name": "Other", "externalId": "a/b"})
    assert response.status_code == 400
    assert "externalId" in response.json()["error"]


def test_plan_duplicate_external_id_is_400(tenant):
    catalog = create_guide_catalog(tenant.paid())
    response = tenant.http.post(
        "/plans/",
        json={"productId": catalog.product_id, "externalId": "starter", "attributes": []},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "duplicate"


def test_plan_foreign_pricing_line_is_400(tenant):
    catalog = create_guide_catalog(tenant.paid())
    other = make_product(tenant, external_id="other")
    response = tenant.http.post(
        "/plans/",
        json={
            "productId": other["id"],
            "attributes": [
                {
                    "productAttributeId": catalog.fee_line_id,
                    "pricing": {"pricingType": "OneTimePerUnit", "pricePoints": []},
                }
            ],
        },
    )
    assert response.status_code == 400
    assert "attributes[0].productAttributeId" in response.json()["error"]


def test_plan_unknown_product_is_400(tenant):
    response = tenant.http.post("/plans/", json={"productId": "prod_missing", "attributes": []})
    assert response.status_code == 400
    assert "productId" in response.json()["error"]


def test_product_upsert_keeps_unmentioned_lines(tenant):
    currency = make_currency(tenant)
    product = make_product(tenant)
    first = tenant.http.put(
        f"/products/{product['id']}", json={"productAttributes": [usage_line(currency["id"])]}
    ).json()
    [line] = first["productAttributes"]

    fee = {
        "name": "Monthly fee",
        "pricing": {
            "pricingType": "RecurringPerUnit",
            "billingFrequency": "Monthly",
            "pricePoints": [{"currency": "USD", "unitPrice": 2900}],
        },
    }
    second = tenant.http.put(f"/products/{product['id']}", json={"productAttributes": [fee]}).json()
    assert [item["name"] for item in second["productAttributes"]] == ["Chat message", "Monthly fee"]

    changed = usage_line(currency["id"], creditCost=0.5)
    changed["productAttributeId"] = line["productAttributeId"]
    third = tenant.http.put(f"/products/{product['id']}", json={"productAttributes": [changed]}).json()
    assert third["productAttributes"][0]["productAttributeId"] == line["productAttributeId"]
    assert third["productAttributes"][0]["pricing"]["creditCost"] == 0.5
    assert len(third["productAttributes"]) == 2


def test_unknown_pricing_fields_round_trip(tenant):
    currency = make_currency(tenant)
    product = make_product(tenant)
    line = usage_line(currency["id"], customerFacingLabel="per message")
    detail = tenant.http.put(f"/products/{product['id']}", json={"productAttributes": [line]}).json()
    assert detail["productAttributes"][0]["pricing"]["customerFacingLabel"] == "per message"


@pytest.mark.parametrize(
    "path",
    [
        "/products/prod_missing",
        "/products/external/missing",
        "/plans/plan_missing",
        "/plans/external/missing",
        "/customers/cus_missing",
        "/customers/external/missing",
    ],
)
def test_unknown_id_is_404(tenant, path):
    response = tenant.http.get(path)
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "not_found"
    assert path.rsplit("/", 1)[1] in body["error"]


def test_update_unknown_currency_is_404(tenant):
    response = tenant.http.put("/credits/currencies/ccur_missing", json={"status": "archived"})
    assert response.status_code == 404


def test_organizations_cannot_see_each_other(tenant, other_tenant):
    catalog = create_guide_catalog(tenant.paid())
    customer = tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada"}).json()

    for path in (
        f"/products/{catalog.product_id}",
        "/products/external/chatbot",
        f"/plans/{catalog.plan_ids['pro']}",
        "/plans/external/pro",
        f"/customers/{customer['id']}",
        "/customers/external/ada",
    ):
        assert other_tenant.http.get(path).status_code == 404, path

    assert other_tenant.http.get("/products/").json()["pagination"]["total"] == 0
    assert other_tenant.http.get("/plans/").json()["pagination"]["total"] == 0
    assert other_tenant.http.get("/customers/").json()["pagination"]["total"] == 0
    assert other_tenant.http.get("/credits/currencies").json()["data"] == []

    changed = other_tenant.http.put(
        f"/credits/currencies/{catalog.currency_id}", json={"status": "archived"}
    )
    assert changed.status_code == 404
    assert other_tenant.http.put(f"/products/{catalog.product_id}", json={"name": "x"}).status_code == 404
    assert other_tenant.http.delete(f"/customers/{customer['id']}").status_code == 404
    # Another organization may reuse the same keys and external ids.
    create_guide_catalog(other_tenant.paid())
    assert tenant.http.get("/products/external/chatbot").json()["id"] == catalog.product_id


def test_pricing_with_foreign_currency_is_400(tenant, other_tenant):
    foreign = make_currency(other_tenant)
    product = make_product(tenant)
    response = tenant.http.put(
        f"/products/{product['id']}", json={"productAttributes": [usage_line(foreign["id"])]}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_currency"


def test_pagination_limit_bounds(tenant):
    assert tenant.http.get("/products/", params={"limit": 0}).status_code == 400
    assert tenant.http.get("/products/", params={"limit": "ten"}).status_code == 400
    assert tenant.http.get("/products/", params={"offset": -1}).status_code == 400
    response = tenant.http.get("/products/", params={"limit": 100000})
    assert response.status_code == 400
    assert "limit" in response.json()["error"]


def test_huge_offset_is_400_on_every_list(tenant):
    document = tenant.http.get(tenant.http.base_url.copy_with(path="/openapi.json")).json()
    lists = [
        path.removeprefix("/api/v2")
        for path, operations in document["paths"].items()
        if "{" not in path
        and any(parameter["name"] == "offset" for parameter in operations.get("get", {}).get("parameters", []))
    ]
    assert "/signals/" in lists
    assert "/traces" in lists

    for path in lists:
        huge = tenant.http.get(path, params={"offset": "99999999999999999999999"})
        assert huge.status_code == 400, (path, huge.text)
        assert huge.json()["fields"][0]["field"] == "offset", path
        largest = tenant.http.get(path, params={"offset": 10**9})
        assert largest.status_code == 200, (path, largest.text)


def test_collection_routes_without_trailing_slash(tenant):
    created = tenant.http.post("/products", json={"name": "NoSlash"})
    assert created.status_code == 201
    listed = tenant.http.get("/products")
    assert listed.status_code == 200
    assert listed.json()["pagination"]["total"] == 1
    with_slash = tenant.http.get("/credits/currencies/")
    assert with_slash.status_code == 200


def test_body_without_content_type_is_400(tenant):
    response = tenant.http.post("/credits/currencies", content=b'{"name": "X", "key": "x"}', headers={"Content-Type": ""})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "unsupported_media_type"
    assert "Content-Type: application/json" in body["error"]


def test_misspelled_field_is_suggested(tenant):
    response = tenant.http.post("/credits/currencies", json={"name": "X", "kye": "x"})
    assert response.status_code == 400
    assert "did you mean 'key'" in response.json()["error"]
    assert "'kye'" in response.json()["error"]
    nested = tenant.http.post("/customers/", json={"nmae": "Ada"})
    assert "did you mean 'name'" in nested.json()["error"]
