"""Limits on hostile input: body size, JSON shape, and request rate per API key."""

from __future__ import annotations

import httpx

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


def test_metrics_count_requests(tenant, server):
    tenant.http.get("/customers/")
    text = httpx.get(server.root + "/metrics").text
    assert 'tallystick_http_requests_total{method="GET",route="/customers/",status="200"}' in text


def test_readyz_reports_database(server):
    response = httpx.get(server.root + "/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_fails_without_database(tmp_path):
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    missing = tmp_path / "no-such-dir" / "db.sqlite"
    app = create_app(Settings(database_url=f"sqlite:///{missing}"))
    with serve_app(app, f"sqlite:///{missing}") as running:
        response = httpx.get(running.root + "/readyz")
    assert response.status_code == 503
    assert response.json()["code"] == "not_ready"
