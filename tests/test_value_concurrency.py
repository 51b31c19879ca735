"""Concurrent writes of delivered value: uploads and syncs serialize per organization."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.test_value_receipts import guide_setup, guide_value_model, send_march_signals

WORKERS = 6


def test_concurrent_uploads_number_versions(tenant):
    guide_setup(tenant)

    def upload(index: int) -> int:
        # Each upload differs, since one equal to the active version adds none.
        content = guide_value_model(hourly_rate_cents=6000 + index).dict(by_alias=True, exclude_none=True)
        for value_type in content["valueTypes"]:
            value_type["calculationTimeline"][0]["effectiveFrom"] = "2020-01-01T00:00:00Z"
        with httpx.Client(base_url=tenant.server.api_url, headers=tenant.http.headers, timeout=60) as client:
            return client.put("/value-models/", json={"content": content}).status_code

    with ThreadPoolExecutor(WORKERS) as pool:
        statuses = list(pool.map(upload, range(WORKERS)))

    assert statuses == [200] * WORKERS
    versions = tenant.http.get("/value-models/versions").json()
    assert sorted(item["version"] for item in versions["data"]) == list(range(1, WORKERS + 1))
    assert [item["status"] for item in versions["data"]].count("active") == 1


def test_concurrent_syncs_give_one_receipt(tenant):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)
    body = {"externalCustomerId": "ada", "startDate": "2026-03-01T00:00:00Z", "endDate": "2026-04-01T00:00:00Z"}

    def sync(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=tenant.server.api_url, headers=tenant.http.headers, timeout=60) as http:
            response = http.post("/value-receipts/sync", json=body)
            return response.status_code, response.json().get("id", "")

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(sync, range(WORKERS)))

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (WORKERS - 1) + [201]
    assert len({receipt_id for _, receipt_id in results}) == 1
    assert tenant.http.get("/value-receipts/").json()["total"] == 1
