"""ingest_signal without HTTP, as the OTLP intake calls it for paid.trace.signal spans."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tallystick.server import clock
from tallystick.server.api_keys import create_api_key
from tallystick.server.signals.schemas import SignalInput
from tallystick.server.signals.service import ingest_signal, ingest_signals
from tests.test_signals_api import available_credits, create_catalog, create_customer, grant_credits, stored_signals


def new_organization(store) -> str:  # type: ignore[no-untyped-def]
    with store.transaction() as session:
        return create_api_key(session, f"org-{secrets.token_hex(6)}").organization_id


def test_span_signal_stores_trace_and_scope(store):
    organization_id = new_organization(store)
    catalog = create_catalog(store, organization_id)
    customer_id = create_customer(store, organization_id, "cust_ext_1")
    grant_credits(store, catalog, customer_id, "2")
    signal = SignalInput(
        event_name="chat_message",
        external_customer_id="cust_ext_1",
        external_product_id="chatbot",
        data={"paid": {"enable_cost_tracing": True}},
    )

    with store.transaction() as session:
        outcome = ingest_signal(
            session, organization_id, signal, trace_id="8243e3044e1eb6ab88c6682922933507", paid_scope_id=2026321151
        )

    assert outcome.status == "ingested"
    assert outcome.credits_consumed == Decimal(1)
    [stored] = stored_signals(store, organization_id)
    assert stored.id == outcome.signal_id
    assert stored.trace_id == "8243e3044e1eb6ab88c6682922933507"
    assert stored.paid_scope_id == 2026321151
    assert available_credits(store, catalog, customer_id) == Decimal(1)


def test_span_signal_with_nan_data_fails(store):
    organization_id = new_organization(store)
    signal = SignalInput(event_name="e", external_customer_id="c", data={"x": float("nan")})

    with store.transaction() as session:
        outcome = ingest_signal(session, organization_id, signal)

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.field == "signals[0].data.x"
    assert stored_signals(store, organization_id) == []


def test_frozen_clock_sets_receipt_time(store):
    organization_id = new_organization(store)
    moment = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    clock.freeze(moment)
    try:
        with store.transaction() as session:
            outcomes = ingest_signals(
                session,
                organization_id,
                [
                    SignalInput(event_name="e", external_customer_id="c"),
                    SignalInput(event_name="e", external_customer_id="c", timestamp=moment + timedelta(minutes=6)),
                ],
            )
    finally:
        clock.freeze(None)

    assert [outcome.status for outcome in outcomes] == ["ingested", "failed"]
    [stored] = stored_signals(store, organization_id)
    assert stored.received_at == moment
    assert stored.occurred_at == moment
