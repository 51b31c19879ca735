"""The server's cache of verified API keys: revocation delay, local revocation, isolation."""

from __future__ import annotations

import time

from sqlalchemy import update

from tests.conftest import make_tenant, serve_app


def _caching_app(store, database_url: str, seconds: float):  # type: ignore[no-untyped-def]
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    return create_app(Settings(database_url=database_url, api_key_cache_seconds=seconds), store=store)


def _revoke_as_another_process(store, api_key: str) -> None:  # type: ignore[no-untyped-def]
    """Revoke with a plain UPDATE, as another process would, so this process's cache is not cleared."""
    from tallystick.server import clock
    from tallystick.server.api_keys import hash_api_key
    from tallystick.server.models import ApiKey

    with store.transaction() as session:
        session.execute(
            update(ApiKey).where(ApiKey.key_hash == hash_api_key(api_key)).values(revoked_at=clock.now())
        )


def test_key_revoked_elsewhere_works_until_ttl(store, database_url):
    ttl = 3.0
    with serve_app(_caching_app(store, database_url, ttl), database_url) as running:
        tenant = make_tenant(running, store)
        # The entry counts from the start of the lookup, which lies between these two instants.
        sent_at = time.monotonic()
        assert tenant.http.get("/customers/").status_code == 200
        answered_at = time.monotonic()

        _revoke_as_another_process(store, tenant.api_key)
        assert tenant.http.get("/customers/").status_code == 200
        assert time.monotonic() - sent_at < ttl, "the cached request came too late to test"

        time.sleep(max(0.0, answered_at + ttl - time.monotonic()) + 0.1)
        expired = tenant.http.get("/customers/")
        assert expired.status_code == 401
        assert expired.json()["error"] == "Invalid or revoked API key"
        tenant.http.close()


def test_key_revoked_in_process_fails_at_once(store, database_url):
    from tallystick.server.api_keys import find_active_key, revoke_api_key

    with serve_app(_caching_app(store, database_url, 600), database_url) as running:
        tenant = make_tenant(running, store)
        assert tenant.http.get("/customers/").status_code == 200

        with store.transaction() as session:
            key = find_active_key(session, tenant.api_key)
            assert key is not None
            revoke_api_key(session, key.id)
        assert tenant.http.get("/customers/").status_code == 401
        tenant.http.close()


def test_cache_off_rejects_revoked_key_at_once(store, database_url):
    with serve_app(_caching_app(store, database_url, 0), database_url) as running:
        tenant = make_tenant(running, store)
        assert tenant.http.get("/customers/").status_code == 200

        _revoke_as_another_process(store, tenant.api_key)
        assert tenant.http.get("/customers/").status_code == 401
        tenant.http.close()


def test_cached_keys_keep_their_organization(store, database_url):
    with serve_app(_caching_app(store, database_url, 600), database_url) as running:
        first = make_tenant(running, store)
        second = make_tenant(running, store)
        for tenant in (first, second, first, second):
            created = tenant.http.post("/customers/", json={"name": "c", "externalId": f"x-{time.monotonic_ns()}"})
            assert created.status_code in (200, 201), created.text

        for tenant, other in ((first, second), (second, first)):
            listed = tenant.http.get("/customers/").json()
            assert listed["pagination"]["total"] == 2
            other_ids = {item["id"] for item in other.http.get("/customers/").json()["data"]}
            assert not other_ids & {item["id"] for item in listed["data"]}
        first.http.close()
        second.http.close()


def test_cache_entry_belongs_to_its_database():
    from tallystick.server.api_keys import VerifiedKey, VerifiedKeyCache

    cache = VerifiedKeyCache()
    key = VerifiedKey(organization_id="organization_a", api_key_id="key_a")
    cache.put("sqlite:///a.db", "hash", key, looked_up_at=time.monotonic(), generation=cache.generation())

    assert cache.get("sqlite:///a.db", "hash", 60) == key
    assert cache.get("sqlite:///b.db", "hash", 60) is None
    assert cache.get("sqlite:///a.db", "other-hash", 60) is None


def test_cache_entry_expires_after_ttl():
    from tallystick.server.api_keys import VerifiedKey, VerifiedKeyCache

    cache = VerifiedKeyCache()
    key = VerifiedKey(organization_id="organization_a", api_key_id="key_a")
    cache.put("db", "hash", key, looked_up_at=time.monotonic() - 10, generation=cache.generation())

    assert cache.get("db", "hash", 5) is None
    assert cache.get("db", "hash", 60) == key


def test_lookup_during_revocation_is_not_cached():
    from tallystick.server.api_keys import VerifiedKey, VerifiedKeyCache

    cache = VerifiedKeyCache()
    generation = cache.generation()
    cache.clear()  # a revocation committed while the lookup was running
    key = VerifiedKey(organization_id="organization_a", api_key_id="key_a")
    cache.put("db", "hash", key, looked_up_at=time.monotonic(), generation=generation)

    assert cache.get("db", "hash", 60) is None


def test_cache_keeps_at_most_max_entries():
    from tallystick.server.api_keys import VerifiedKey, VerifiedKeyCache

    cache = VerifiedKeyCache(max_entries=2)
    for name in ("a", "b", "c"):
        key = VerifiedKey(organization_id=f"organization_{name}", api_key_id=f"key_{name}")
        cache.put("db", name, key, looked_up_at=time.monotonic(), generation=cache.generation())

    assert cache.get("db", "a", 60) is None
    assert cache.get("db", "b", 60) is not None
    assert cache.get("db", "c", 60) is not None
