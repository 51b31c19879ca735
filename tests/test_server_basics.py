"""Server plumbing: health check, authentication, error shape and OpenAPI."""

from __future__ import annotations

import httpx


def test_healthz_reports_ok(server):
    response = httpx.get(server.root + "/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_openapi_document_served(server):
    # The first request builds the OpenAPI document, which takes seconds on a loaded machine.
    response = httpx.get(server.root + "/openapi.json", timeout=60)
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "tallystick"
    docs = httpx.get(server.root + "/docs", timeout=60)
    assert docs.status_code == 200


def test_missing_key_is_401(server):
    response = httpx.get(server.api_url + "/customers/")
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "unauthorized"
    assert "Authorization" in body["error"]


def test_unknown_key_is_401(server):
    response = httpx.get(
        server.api_url + "/customers/", headers={"Authorization": "Bearer tsk_not_a_real_key"}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_wrong_scheme_is_401(server, tenant):
    response = httpx.get(
        server.api_url + "/customers/", headers={"Authorization": f"Basic {tenant.api_key}"}
    )
    assert response.status_code == 401


def test_revoked_key_is_401(server, store, tenant):
    from tallystick.server.api_keys import find_active_key, revoke_api_key

    assert tenant.http.get("/customers/").status_code == 200
    with store.transaction() as session:
        key = find_active_key(session, tenant.api_key)
        assert key is not None
        revoke_api_key(session, key.id)
    response = tenant.http.get("/customers/")
    assert response.status_code == 401
    assert response.json()["error"] == "Invalid or revoked API key"


def test_unknown_route_is_json_404(tenant):
    response = tenant.http.get("/no-such-thing")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_api_key_stored_as_hash_only(store, tenant):
    from sqlalchemy import select

    from tallystick.server.api_keys import hash_api_key
    from tallystick.server.models import ApiKey

    with store.read_sessions() as session:
        keys = session.scalars(
            select(ApiKey).where(ApiKey.organization_id == tenant.organization_id)
        ).all()
    assert len(keys) == 1
    assert keys[0].key_hash == hash_api_key(tenant.api_key)
    stored = {getattr(keys[0], column) for column in ("id", "name", "key_hash", "key_prefix")}
    assert tenant.api_key not in stored


def test_api_docs_need_no_cdn(server):
    page = httpx.get(server.root + "/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    script = httpx.get(server.root + "/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert len(script.content) > 100_000
    assert httpx.get(server.root + "/docs/assets/swagger-ui.css").status_code == 200
