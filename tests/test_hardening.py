"""Limits on hostile input: body size, JSON shape, and request rate per API key."""

from __future__ import annotations

import logging

import httpx
import pytest

from tallystick.server.hardening import THREADED_PARSE_BYTES
from tests.conftest import make_tenant, serve_app


def test_oversized_body_is_413(tenant):
    body = b'{"name": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    response = tenant.http.post("/customers/", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 0


def test_oversized_chunked_body_is_413(tenant):
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"name": "'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    response = tenant.http.post("/customers/", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_non_finite_number_is_400(tenant):
    for literal in ("NaN", "Infinity", "-Infinity"):
        response = tenant.http.post(
            "/credits/currencies",
            content=b'{"name": "x", "key": "k", "description": ' + literal.encode() + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, literal
        body = response.json()
        assert body["code"] == "invalid_json"
        assert literal in body["error"]


def test_non_finite_amount_without_json_type_is_400(tenant):
    customer_id = tenant.http.post("/customers/", json={"name": "c", "externalId": "c"}).json()["id"]
    assert tenant.http.post("/credits/currencies", json={"name": "Chat Credits", "key": "chat_credits"}).status_code == 201

    # curl -d sends a form content type, and the credit routes read such a body as JSON too.
    for route in ("grants", "holds"):
        for literal in ("NaN", "Infinity", "-Infinity"):
            response = tenant.http.post(
                f"/customers/{customer_id}/credits/{route}",
                content=b'{"creditCurrencyKey": "chat_credits", "amount": ' + literal.encode() + b"}",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code == 400, (route, literal)
            assert response.json()["code"] == "invalid_json", (route, literal)
            assert literal in response.json()["error"], (route, literal)
    assert tenant.http.get(f"/customers/{customer_id}/credits/balances").json() == {"data": []}


def test_overflowing_number_is_400(tenant):
    bodies = {
        "/customers/": b'{"name": "x", "metadata": {"n": 1e400}}',
        "/signals/bulk": b'{"signals": [{"eventName": "chat", "customer": {"externalCustomerId": "c-1"}, '
        b'"attribution": {"externalProductId": "bot"}, "data": {"n": -1e400}}]}',
    }
    for path, body in bodies.items():
        response = tenant.http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, path
        assert response.json()["code"] == "invalid_json", path
        assert "1e400" in response.json()["error"], path
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 0


def test_misspelled_key_is_400(tenant):
    tenant.http.post("/credits/currencies", json={"name": "Chat Credits", "key": "chat_credits"})
    tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada"})
    grants = "/customers/external/ada/credits/grants"

    misspelled = tenant.http.post(grants, json={"creditCurrencyKey": "chat_credits", "amount": 1, "unitvalue": "0.05"})
    conflicting = tenant.http.post(
        grants, json={"creditCurrencyKey": "chat_credits", "amount": 1, "unitValue": "0.05", "unit_value": "0.06"}
    )
    customer = tenant.http.post("/customers/", json={"name": "Bo", "ExternalID": "bo"})
    unknown = tenant.http.post(grants, json={"creditCurrencyKey": "chat_credits", "amount": 1, "note": "kept out"})

    assert misspelled.status_code == 400
    assert misspelled.json()["error"] == "Invalid unitvalue '0.05': unknown field; did you mean 'unitValue'?"
    assert conflicting.status_code == 400
    assert conflicting.json()["error"] == "Invalid unit_value '0.06': conflicts with 'unitValue'; send only 'unitValue'"
    assert customer.status_code == 400
    assert "did you mean 'externalId'?" in customer.json()["error"]
    # A key that resembles no field is still ignored, as paid-python expects.
    assert unknown.status_code == 201
    [balance] = tenant.http.get("/customers/external/ada/credits/balances").json()["data"]
    assert balance["totalDecimal"] == "1"
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 1


def test_deeply_nested_json_is_400(tenant):
    nested = "[" * 40 + "]" * 40
    response = tenant.http.post(
        "/customers/",
        content=('{"name": "x", "metadata": {"deep": ' + nested + "}}").encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "json_too_deep"


def test_rate_limit_per_key_is_429(store, database_url):
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    app = create_app(Settings(database_url=database_url, rate_limit="3/minute"), store=store)
    with serve_app(app, database_url) as running:
        limited = make_tenant(running, store)
        other = make_tenant(running, store)
        statuses = [limited.http.get("/customers/").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]

        rejected = limited.http.get("/customers/")
        assert rejected.status_code == 429
        assert rejected.json()["code"] == "rate_limited"
        assert 1 <= int(rejected.headers["Retry-After"]) <= 61
        # Another key of another organization has its own allowance.
        assert other.http.get("/customers/").status_code == 200
        limited.http.close()
        other.http.close()


def test_healthz_needs_no_key(server):
    assert httpx.get(server.root + "/healthz").status_code == 200


def test_request_id_echoed(tenant):
    response = tenant.http.get("/customers/", headers={"X-Request-Id": "req-123"})
    assert response.headers["x-request-id"] == "req-123"
    generated = tenant.http.get("/customers/")
    assert len(generated.headers["x-request-id"]) == 32


def _request_count(server, route: str, status: int) -> float:  # type: ignore[no-untyped-def]
    sample = f'tallystick_http_requests_total{{method="GET",route="{route}",status="{status}"}} '
    for line in httpx.get(server.root + "/metrics").text.splitlines():
        if line.startswith(sample):
            return float(line.removeprefix(sample))
    return 0.0


def test_metrics_count_requests(tenant, server):
    customers = "/api/v2/customers/"
    balances = "/api/v2/customers/external/{external_id}/credits/balances"
    customers_before = _request_count(server, customers, 200)
    balances_before = _request_count(server, balances, 404)

    tenant.http.get("/customers/")
    tenant.http.get("/customers")
    tenant.http.get("/customers/external/nobody/credits/balances")
    tenant.http.get("/customers/external/nobody/credits/balances/")

    # Labels carry the full route template, with the /api/v2 prefix and no ids from the path.
    # Both spellings of a route count under the one given in code.
    assert _request_count(server, customers, 200) == customers_before + 2
    assert _request_count(server, balances, 404) == balances_before + 2
    text = httpx.get(server.root + "/metrics").text
    assert 'route="/api/v2/customers"' not in text
    assert "credits/balances/" not in text
    assert "nobody" not in text


def test_readyz_reports_database(server):
    response = httpx.get(server.root + "/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_fails_without_database(tmp_path):
    from sqlalchemy.orm import sessionmaker

    from tallystick.server.app import create_app
    from tallystick.server.db import Store, create_store_engine
    from tallystick.server.migrate import upgrade_to_head
    from tallystick.server.settings import Settings

    url = f"sqlite:///{tmp_path / 'ready.db'}"
    upgrade_to_head(url)
    store = Store.open(url)
    app = create_app(Settings(database_url=url), store=store)
    with serve_app(app, url) as running:
        assert httpx.get(running.root + "/readyz").status_code == 200
        # The database becomes unreachable while the server runs.
        missing = create_store_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}", read_only=True)
        store.read_sessions = sessionmaker(missing)
        response = httpx.get(running.root + "/readyz")
    store.dispose()
    assert response.status_code == 503
    assert response.json()["code"] == "not_ready"


def metric_value(server, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    """Read one sample of the server's /metrics page; 0 when the series does not exist yet."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.root + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return sample.value
    return 0.0


def test_metrics_count_signals_and_credits(tenant, store, server):
    from tests.test_signals_api import chat_message, create_catalog, create_customer, grant_credits, send

    catalog = create_catalog(store, tenant.organization_id, credit_cost="1.5")
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "10")
    ingested_before = metric_value(server, "tallystick_signals_ingested_total")
    failed_before = metric_value(server, "tallystick_signals_failed_total")
    credits_before = metric_value(server, "tallystick_credits_consumed_total", currency_key="chat_credits")

    first = send(tenant, chat_message(idempotencyKey="m1"), chat_message(idempotencyKey="m2"))
    repeated = send(tenant, chat_message(idempotencyKey="m1"))
    invalid = send(tenant, chat_message(attribution={"externalProductId": "no-such-product"}))

    assert first.json()["ingested"] == 2
    assert repeated.json()["duplicates"] == 1
    assert invalid.json()["failed"] == 1
    # Duplicates are not counted; the metric counts signals stored.
    assert metric_value(server, "tallystick_signals_ingested_total") - ingested_before == 2
    assert metric_value(server, "tallystick_signals_failed_total") - failed_before == 1
    consumed = metric_value(server, "tallystick_credits_consumed_total", currency_key="chat_credits")
    assert consumed - credits_before == 3.0


def test_count_after_commit_skips_rolled_back_work(store):
    from prometheus_client import CollectorRegistry, Counter
    from sqlalchemy import text

    from tallystick.server.observability import count_after_commit

    counter = Counter("test_rolled_back_total", "A counter for this test.", registry=CollectorRegistry())
    with store.sessions() as session:
        session.execute(text("SELECT 1"))
        count_after_commit(session, counter, 5)
        session.rollback()
        with session.begin_nested():
            count_after_commit(session, counter, 2)
        assert counter._value.get() == 0
        session.commit()
    assert counter._value.get() == 2


def test_unhandled_error_keeps_connection(store, database_url):
    from fastapi import APIRouter

    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    app = create_app(Settings(database_url=database_url), store=store)
    broken = APIRouter()

    @broken.get("/broken")
    def fail() -> None:
        raise RuntimeError("boom")

    app.include_router(broken)
    with serve_app(app, database_url) as running, httpx.Client(base_url=running.root) as http:
        first = http.get("/broken")
        assert first.status_code == 500
        assert first.json() == {"error": "Internal server error", "code": "internal_error"}
        # The same pooled connection still works.
        assert http.get("/healthz").status_code == 200


def test_unstorable_characters_are_400(tenant):
    bodies = {
        '{"name": "a\\u0000b"}': "name",
        '{"name": "x", "metadata": {"deep": ["ok", "\\u0000"]}}': "metadata.deep[1]",
        '{"name": "x", "metadata": {"k\\u0000": 1}}': "metadata key",
        '{"name": "\\ud800"}': "name",
    }
    for body, field in bodies.items():
        response = tenant.http.post("/customers/", content=body.encode(), headers={"Content-Type": "application/json"})
        assert response.status_code == 400, body
        assert response.json()["code"] == "validation_error", body
        assert response.json()["fields"][0]["field"] == field, body

    urls = {
        "/customers/external/a%00b": "path",
        "/customers/?externalId=%00": "externalId",
        "/signals/?customerId=%ED%A0%80": "customerId",
        "/customers/?ab%00c=1": "ab\ufffdc",
    }
    for url, field in urls.items():
        response = tenant.http.get(url)
        assert response.status_code == 400, url
        assert response.json()["code"] == "validation_error", url
        assert response.json()["fields"] == [
            {
                "field": field,
                "message": "contains a NUL character or an unpaired UTF-16 surrogate, which cannot be stored",
                "value": None,
            }
        ], url
    page = httpx.get(tenant.server.root + "/checkout/chk_%00")
    assert page.status_code == 400
    # A valid astral character (an escaped surrogate pair) is stored as it is.
    created = tenant.http.post(
        "/customers/", content='{"name": "smile \\ud83d\\ude00"}'.encode(), headers={"Content-Type": "application/json"}
    )
    assert created.status_code == 201
    assert created.json()["name"] == "smile \U0001f600"


def test_readyz_recovers_when_database_returns(tmp_path):
    from tallystick.server.app import create_app
    from tallystick.server.migrate import upgrade_to_head
    from tallystick.server.settings import Settings

    folder = tmp_path / "created-later"
    url = f"sqlite:///{folder / 'db.sqlite'}"
    app = create_app(Settings(database_url=url))
    with serve_app(app, url) as running:
        down = httpx.get(running.root + "/readyz")
        folder.mkdir()
        upgrade_to_head(url)
        up = httpx.get(running.root + "/readyz")

    assert down.status_code == 503
    # The server started without its database and loaded the shared secret key once it answered.
    assert up.status_code == 200
    assert app.state.secret_key_loaded is True


def test_unreachable_database_is_503(tmp_path, caplog):
    from tallystick.server.app import create_app
    from tallystick.server.migrate import upgrade_to_head
    from tallystick.server.settings import Settings

    folder = tmp_path / "created-later"
    url = f"sqlite:///{folder / 'db.sqlite'}"
    app = create_app(Settings(database_url=url))
    headers = {"Authorization": "Bearer tsk_not_a_real_key"}
    with caplog.at_level(logging.INFO, logger="tallystick"), serve_app(app, url) as running:
        down = [httpx.get(running.api_url + "/customers/", headers=headers) for _ in range(3)]
        folder.mkdir()
        upgrade_to_head(url)
        up = httpx.get(running.api_url + "/customers/", headers=headers)

    for response in down:
        assert response.status_code == 503
        assert response.json() == {
            "error": "The database is unavailable; retry the request",
            "code": "database_unavailable",
        }
        assert response.headers["Retry-After"] == "1"
    # Once the database is reachable, the unknown key is what fails.
    assert up.status_code == 401
    logged = [record for record in caplog.records if record.getMessage() == "database.unavailable"]
    # Repeats within the log interval are counted, not logged one by one.
    assert len(logged) == 1
    assert logged[0].route == "/api/v2/customers/"  # type: ignore[attr-defined]
    assert "unable to open database file" in logged[0].error  # type: ignore[attr-defined]


def test_unreachable_database_gives_pages_html(tmp_path):
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    url = f"sqlite:///{tmp_path / 'missing-folder' / 'db.sqlite'}"
    with serve_app(create_app(Settings(database_url=url)), url) as running:
        page = httpx.get(running.root + "/checkout/chk_somebody")
        api = httpx.get(running.api_url + "/customers/", headers={"Authorization": "Bearer tsk_not_a_real_key"})

    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "Temporarily unavailable" in page.text
    assert page.headers["Retry-After"] == "1"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert api.status_code == 503
    assert api.json()["code"] == "database_unavailable"


def test_unpaired_surrogate_in_signals_is_400(tenant):
    # Bulk signals report NUL per signal, but no signal can store or report a lone surrogate.
    body = (
        b'{"signals": [{"eventName": "chat_message", "customer": {"externalCustomerId": "u"}, '
        b'"data": {"text": "\\ud800"}}]}'
    )

    response = tenant.http.post("/signals/bulk", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert response.json()["fields"][0]["field"] == "signals[0].data.text"
    assert tenant.http.get("/signals/").json()["data"] == []


def test_large_bodies_get_same_checks(tenant):
    # Bodies over THREADED_PARSE_BYTES are parsed in a worker thread, with the same checks.
    padding = "p" * (THREADED_PARSE_BYTES + 1024)
    cases = {
        '{"name": "x", "description": "' + padding + '", "amount": NaN}': "invalid_json",
        '{"name": "x", "metadata": {"pad": "' + padding + '", "deep": ' + "[" * 40 + "]" * 40 + "}}": "json_too_deep",
        '{"name": "a\\u0000b", "metadata": {"pad": "' + padding + '"}}': "validation_error",
    }
    for body, code in cases.items():
        assert len(body) > THREADED_PARSE_BYTES
        response = tenant.http.post("/customers/", content=body.encode(), headers={"Content-Type": "application/json"})
        assert response.status_code == 400, code
        assert response.json()["code"] == code

    created = tenant.http.post("/customers/", json={"name": "large", "metadata": {"pad": padding}})
    assert created.status_code == 201, created.text
    assert created.json()["metadata"]["pad"] == padding
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 1


# In UTC these fall after 9999-12-31 or before 0001-01-01, which no database column stores.
LATE = "9999-12-31T23:59:59-01:00"
EARLY = "0001-01-01T00:00:00+01:00"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/customers/external/c-1/credits/grants", {"creditCurrencyKey": "k", "amount": 1, "expiresAt": LATE}, "expiresAt"),
        ("POST", "/customers/external/c-1/credits/grants", {"creditCurrencyKey": "k", "amount": 1, "startsAt": EARLY}, "startsAt"),
        ("PUT", "/customers/cus_missing", {"churnDate": LATE}, "churnDate"),
        ("POST", "/checkouts/", {"products": [], "successUrl": "https://example.com", "expiresAt": LATE}, "expiresAt"),
        ("PUT", "/value-models/", {"content": {"valueTypes": []}, "effectiveFrom": LATE}, "effectiveFrom"),
        ("POST", "/value-receipts/", {"externalCustomerId": "c-1", "startDate": EARLY, "endDate": LATE}, "startDate"),
        ("GET", f"/orders/?startDateTo={LATE}", None, "startDateTo"),
        ("GET", f"/signals/?createdAtTo={LATE}", None, "createdAtTo"),
        ("GET", f"/credits/transactions?createdAtFrom={EARLY}", None, "createdAtFrom"),
        ("GET", f"/costs/aggregates?endTime={LATE}", None, "endTime"),
        ("GET", f"/traces?endTime={LATE}", None, "endTime"),
    ],
)
def test_date_times_outside_utc_range_are_400(tenant, method, path, body, field):
    response = tenant.http.request(method, path.replace("+", "%2B"), json=body)

    assert response.status_code == 400, response.text
    assert field in [item["field"] for item in response.json()["fields"]], response.text
    assert "outside the years 1 to 9999" in response.text


@pytest.mark.parametrize("path", ["/checkouts/%0A", "/customers/%0A", "/webhooks/deliveries/%0A", "/orders/a%09b"])
def test_control_characters_in_path_are_400(tenant, path):
    response = tenant.http.get(path)

    assert response.status_code == 400, response.text
    assert response.json()["fields"][0]["field"] == "path"
    assert "control character" in response.json()["error"]
