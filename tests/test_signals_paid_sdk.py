"""The official paid-python SDK sends the integration guide's chat_message signals.

Every chat message costs one Chat Credit; balances are read back through the SDK too.
"""

from __future__ import annotations

from paid.types import CustomerByExternalId, CustomerById, ProductByExternalId, Signal

from tests.guide import create_guide_catalog


def chat_message(external_customer_id: str, **fields: object) -> Signal:
    return Signal(
        event_name="chat_message",
        customer=CustomerByExternalId(external_customer_id=external_customer_id),
        attribution=ProductByExternalId(external_product_id="chatbot"),
        **fields,
    )


def test_chat_messages_consume_one_credit_each(tenant):
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    client.customers.create_customer(name="Ada", external_id="ada")
    client.customers.grant_customer_credits_by_external_id("ada", credit_currency_key="chat_credits", amount=500)

    response = client.signals.create_signals(
        signals=[
            chat_message("ada", data={"conversation_id": "c1", "characters": 140}),
            chat_message("ada", data={"conversation_id": "c1"}, idempotency_key="msg-2"),
            chat_message("ada", idempotency_key="msg-3"),
        ]
    )

    assert (response.ingested, response.duplicates, response.failed) == (3, 0, 0)
    [balance] = client.customers.get_customer_credit_balances_by_external_id("ada").data
    assert balance.credits_currency_id == catalog.currency_id
    assert balance.currency_key == "chat_credits"
    assert balance.available == 497
    assert balance.used == 3
    assert balance.total == 500


def test_sdk_retry_with_same_key_is_duplicate(tenant):
    client = tenant.paid()
    create_guide_catalog(client)
    client.customers.create_customer(name="Ada", external_id="ada")
    client.customers.grant_customer_credits_by_external_id("ada", credit_currency_key="chat_credits", amount=10)

    first = client.signals.create_signals(signals=[chat_message("ada", idempotency_key="msg-1")])
    again = client.signals.create_signals(signals=[chat_message("ada", idempotency_key="msg-1")])

    assert (first.ingested, first.duplicates) == (1, 0)
    assert (again.ingested, again.duplicates) == (0, 1)
    [balance] = client.customers.get_customer_credit_balances_by_external_id("ada").data
    assert balance.available == 9


def test_sdk_lists_and_gets_signals(tenant):
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    customer = client.customers.create_customer(name="Ada", external_id="ada")
    client.signals.create_signals(
        signals=[
            chat_message("ada", data={"n": 1}),
            Signal(event_name="chat_message", customer=CustomerById(customer_id=customer.id)),
        ]
    )

    listed = client.signals.list_signals(external_customer_id="ada", signal_name="chat_message")

    assert listed.pagination.total == 2
    assert {item.customer_id for item in listed.data} == {customer.id}
    assert {item.product_id for item in listed.data} == {catalog.product_id}
    fetched = client.signals.get_signal_by_id(listed.data[0].id)
    assert fetched.id == listed.data[0].id
    assert fetched.name == "chat_message"


def test_signal_for_new_customer_leaves_credits_pending(tenant):
    client = tenant.paid()
    create_guide_catalog(client)

    response = client.signals.create_signals(signals=[chat_message("newcomer")])

    assert response.ingested == 1
    customer = client.customers.get_customer_by_external_id("newcomer")
    assert customer.external_id == "newcomer"
    pending = client.customers.list_customer_pending_credit_consumption_by_external_id("newcomer")
    assert pending.pagination.total == 1
    assert pending.data[0].credits_decimal == "1"


def test_hold_then_signal_settles_hold(tenant):
    client = tenant.paid()
    create_guide_catalog(client)
    client.customers.create_customer(name="Ada", external_id="ada")
    client.customers.grant_customer_credits_by_external_id("ada", credit_currency_key="chat_credits", amount=2)
    placed = tenant.http.post(
        "/customers/external/ada/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": 1}
    )
    assert placed.status_code == 201, placed.text
    hold_id = placed.json()["holdId"]

    # paid-python models allow extra keys, so holdId travels as a top-level signal key.
    response = client.signals.create_signals(signals=[chat_message("ada", holdId=hold_id)])

    assert response.ingested == 1
    hold = tenant.http.get(f"/credits/holds/{hold_id}").json()
    assert hold["status"] == "settled"
    [signal] = client.signals.list_signals().data
    assert hold["settledSignalId"] == signal.id
    [balance] = client.customers.get_customer_credit_balances_by_external_id("ada").data
    assert balance.available == 1
