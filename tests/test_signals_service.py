"""ingest_signal without HTTP, as the OTLP intake calls it for paid.trace.signal spans."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
from sqlalchemy import text

from tallystick.server import clock
from tallystick.server.api_keys import create_api_key
from tallystick.server.signals import queries
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


def test_taken_keys_probe_index_per_key(store):
    if store.is_sqlite:
        _check_sqlite_key_probes(store)
        return
    keys = orjson.dumps([f"key-{number}" for number in range(99)] + ["old-7"]).decode()
    # A copy of the signals table with its indexes, analyzed while empty and then filled, as a
    # young table is between two ANALYZE runs. A plain join of the keys with it was planned as
    # a hash join over all the organization's rows.
    statement = queries._POSTGRES_TAKEN_KEYS.text.replace("signals", "young_signals")

    with store.transaction() as session:
        session.execute(text("CREATE TEMPORARY TABLE young_signals (LIKE signals INCLUDING INDEXES) ON COMMIT DROP"))
        session.execute(text("ANALYZE young_signals"))
        session.execute(
            text(
                "INSERT INTO young_signals (id, organization_id, customer_id, event_name, occurred_at, received_at, "
                "idempotency_key, data, credits_consumed, credits_pending) "
                "SELECT 'sig-' || n, 'org-young', 'cus-young', 'chat_message', now(), now(), 'old-' || n, '{}', 0, 0 "
                "FROM generate_series(1, 50000) AS n"
            )
        )
        found_keys = session.scalars(text(statement), {"organization_id": "org-young", "keys": keys}).all()
        [[plan]] = session.execute(
            text("EXPLAIN (FORMAT JSON) " + statement), {"organization_id": "org-young", "keys": keys}
        ).all()

    nodes = list(_plan_nodes(plan[0]["Plan"]))
    scans = [node for node in nodes if node.get("Relation Name") == "young_signals"]
    assert found_keys == ["old-7"]
    assert [node["Node Type"] for node in scans] in (["Index Only Scan"], ["Index Scan"])
    assert "idempotency_key" in scans[0]["Index Cond"]
    assert not any(node["Node Type"] in ("Hash Join", "Merge Join", "Hash") for node in nodes)


def _check_sqlite_key_probes(store) -> None:  # type: ignore[no-untyped-def]
    statement = queries._TAKEN_KEYS.params(organization_id="org-young", keys=["key-1", "key-2"])
    with store.transaction() as session:
        compiled = statement.compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
        plan = session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()

    # SQLite names the index of a UNIQUE constraint itself (sqlite_autoindex_...).
    [step] = [row[-1] for row in plan]
    assert step.startswith("SEARCH signals USING COVERING INDEX")
    assert step.endswith("(organization_id=? AND idempotency_key=?)")


def _plan_nodes(node: dict):  # type: ignore[no-untyped-def]
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)
