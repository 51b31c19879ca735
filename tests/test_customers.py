"""Customers through the official paid-python SDK and over raw HTTP."""

from __future__ import annotations

import pytest


def test_customer_crud_with_paid_sdk(tenant):
    client = tenant.paid()
    created = client.customers.create_customer(
        name="Ada Lovelace",
        external_id="ada",
        email="ada@example.com",
        billing_address={"line1": "1 Analytical St", "city": "London", "country": "GB"},
        metadata={"tier": "gold"},
    )
    assert created.id.startswith("cus_")
    assert created.email == "ada@example.com"
    assert created.phone == ""
    assert created.website == ""
    assert created.billing_address.city == "London"
    assert created.creation_state == "active"
    assert created.status == "active"
    assert created.default_currency == "USD"

    assert client.customers.get_customer_by_id(created.id) == client.customers.get_customer_by_external_id("ada")

    renamed = client.customers.update_customer_by_external_id("ada", external_id="ada-2", phone="+44 20")
    assert renamed.external_id == "ada-2"
    assert renamed.phone == "+44 20"
    assert renamed.email == "ada@example.com"

    state = client.customers.get_customer_state_by_external_id("ada-2")
    assert state.customer.id == created.id
    assert state.credits.balances == []

    assert client.customers.delete_customer_by_external_id("ada-2") is not None
    listed = client.customers.list_customers()
    assert listed.pagination.total == 0


def test_customer_update_null_clears_field(tenant):
    created = tenant.http.post("/customers/", json={"name": "Bo", "email": "bo@example.com"}).json()
    updated = tenant.http.put(f"/customers/{created['id']}", json={"email": None})
    assert updated.status_code == 200
    assert updated.json()["email"] == ""
    assert updated.json()["name"] == "Bo"


def test_customer_name_cannot_be_null(tenant):
    created = tenant.http.post("/customers/", json={"name": "Bo"}).json()
    response = tenant.http.put(f"/customers/{created['id']}", json={"name": None})
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert response.json()["error"] == "Invalid name: cannot be null"
    assert response.json()["fields"] == [{"field": "name", "message": "cannot be null", "value": None}]
    assert tenant.http.get(f"/customers/{created['id']}").json()["name"] == "Bo"


def test_customer_object_field_message(tenant):
    response = tenant.http.post("/customers/", json={"name": "Bo", "billingAddress": "1 Main St"})
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid billingAddress '1 Main St': must be a JSON object"
    assert response.json()["fields"][0]["field"] == "billingAddress"


def test_customer_validator_message_unprefixed(tenant):
    response = tenant.http.post("/customers/", json={"name": "Bo", "externalId": "a/b"})
    assert response.status_code == 400
    message = response.json()["fields"][0]["message"]
    assert message == "must not contain '/', since it is used in URL paths"


@pytest.mark.parametrize("external_id", [".", "..", "a/b"])
def test_unaddressable_external_ids_rejected(tenant, external_id):
    created = tenant.http.post("/customers/", json={"name": "Bo", "externalId": external_id})
    signal = {"eventName": "chat_message", "customer": {"externalCustomerId": external_id}}
    sent = tenant.http.post("/signals/bulk", json={"signals": [signal]})

    assert created.status_code == 400
    assert created.json()["fields"][0]["field"] == "externalId"
    assert "used in URL paths" in created.json()["fields"][0]["message"]
    assert sent.status_code == 400
    assert "used in URL paths" in sent.text
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 0


def test_capitalized_misspelling_names_key(tenant):
    response = tenant.http.post("/customers/", json={"Name": "Bo"})

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid Name 'Bo': unknown field; did you mean 'name'?"
    assert response.json()["fields"][0]["field"] == "Name"
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 0


def test_customer_duplicate_external_id_is_400(tenant):
    tenant.http.post("/customers/", json={"name": "A", "externalId": "a"})
    response = tenant.http.post("/customers/", json={"name": "B", "externalId": "a"})
    assert response.status_code == 400
    assert response.json()["code"] == "duplicate"


def test_deleted_customer_frees_external_id(tenant):
    first = tenant.http.post("/customers/", json={"name": "A", "externalId": "a"}).json()
    assert tenant.http.delete(f"/customers/{first['id']}").json() == {}
    assert tenant.http.get(f"/customers/{first['id']}").status_code == 404
    second = tenant.http.post("/customers/", json={"name": "A again", "externalId": "a"})
    assert second.status_code == 201
    assert second.json()["id"] != first["id"]


def test_customer_list_filters(tenant):
    tenant.http.post("/customers/", json={"name": "Alice Smith", "externalId": "alice"})
    tenant.http.post("/customers/", json={"name": "Bob Jones", "externalId": "bob", "creationState": "draft"})

    def names(**params):  # type: ignore[no-untyped-def]
        return [item["name"] for item in tenant.http.get("/customers/", params=params).json()["data"]]

    assert names(name="smith") == ["Alice Smith"]
    assert names(externalId="bob") == ["Bob Jones"]
    assert names(creationState="draft") == ["Bob Jones"]
    assert names() == ["Bob Jones", "Alice Smith"]
    assert names(createdAtFrom="2000-01-01") == ["Bob Jones", "Alice Smith"]
    assert names(createdAtTo="2000-01-01") == []
    # A name filter with LIKE wildcards matches them literally.
    assert names(name="%") == []


def test_customer_list_bad_filters_are_400(tenant):
    assert tenant.http.get("/customers/", params={"status": "gone"}).status_code == 400
    response = tenant.http.get("/customers/", params={"createdAtFrom": "yesterday"})
    assert response.status_code == 400
    assert "createdAtFrom" in response.json()["error"]


def test_customer_bad_body_names_field(tenant):
    response = tenant.http.post("/customers/", json={"name": "A", "billingAddress": {"city": 7}})
    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == "billingAddress.city"
    response = tenant.http.post("/customers/", json={"name": "A", "defaultCurrency": "dollars"})
    assert response.status_code == 400
    assert "defaultCurrency" in response.json()["error"]


INVALID_EMAILS = [
    "not-an-email",
    "ada@",
    "@example.com",
    "ada@@example.com",
    "ada@example..com",
    "ada lovelace@example.com",
    " ada@example.com",
    "Ada <ada@example.com>",
    "ada@localhost",
    "ada@example",
]


def test_customer_create_rejects_invalid_email(tenant):
    for email in INVALID_EMAILS:
        response = tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada", "email": email})

        assert response.status_code == 400, email
        body = response.json()
        assert body["code"] == "validation_error"
        assert body["error"].startswith(f"Invalid email {email!r}: value is not a valid email address")
        assert body["fields"][0]["field"] == "email"
        assert body["fields"][0]["value"] == email
    assert tenant.http.get("/customers/external/ada").status_code == 404
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 0


def test_customer_update_rejects_invalid_email(tenant):
    created = tenant.http.post("/customers/", json={"name": "Bo", "externalId": "bo", "email": "bo@example.com"}).json()

    by_id = tenant.http.put(f"/customers/{created['id']}", json={"name": "Bo 2", "email": "bo@"})
    by_external_id = tenant.http.put("/customers/external/bo", json={"externalId": "bo-2", "email": "bo.example.com"})

    assert by_id.status_code == 400
    assert by_id.json()["fields"][0]["field"] == "email"
    assert by_id.json()["fields"][0]["value"] == "bo@"
    assert by_external_id.status_code == 400
    assert by_external_id.json()["fields"][0]["value"] == "bo.example.com"
    unchanged = tenant.http.get(f"/customers/{created['id']}").json()
    assert unchanged["email"] == "bo@example.com"
    assert unchanged["name"] == "Bo"
    assert unchanged["externalId"] == "bo"


def test_customer_email_kept_as_sent(tenant):
    accepted = ["Ada.Lovelace+billing@Example.COM", "billing@acme.test", "ünïcode@exämple.de", ""]
    for email in accepted:
        response = tenant.http.post("/customers/", json={"name": "Ada", "email": email})

        assert response.status_code == 201, response.text
        assert response.json()["email"] == email
    omitted = tenant.http.post("/customers/", json={"name": "Ada"})
    null = tenant.http.post("/customers/", json={"name": "Ada", "email": None})
    assert omitted.status_code == 201
    assert omitted.json()["email"] == ""
    assert null.status_code == 201
    assert null.json()["email"] == ""


def test_invalid_email_with_paid_sdk(tenant):
    from paid.errors import BadRequestError

    client = tenant.paid()
    created = client.customers.create_customer(name="Ada", external_id="ada", email=None)

    with pytest.raises(BadRequestError) as create_error:
        client.customers.create_customer(name="Bo", external_id="bo", email="bo at example.com")
    with pytest.raises(BadRequestError) as update_error:
        client.customers.update_customer_by_external_id("ada", email="ada@")

    assert created.email == ""
    assert create_error.value.body["fields"][0]["field"] == "email"
    assert update_error.value.body["fields"][0]["value"] == "ada@"
    assert client.customers.get_customer_by_external_id("ada").email == ""
    updated = client.customers.update_customer_by_external_id("ada", email="ada@example.com")
    assert updated.email == "ada@example.com"
