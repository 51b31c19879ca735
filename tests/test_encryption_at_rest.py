"""Stored secrets encrypted with TALLYSTICK_ENCRYPTION_KEYS, and `tallystick secrets encrypt`.

Each test runs on a SQLite database of its own, because the keys are process-wide settings and
the shared test database must stay readable without them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import text
from typer.testing import CliRunner

from tallystick.cli.main import app as cli
from tallystick.server.api_keys import create_api_key
from tallystick.server.app import create_app
from tallystick.server.db import Store
from tallystick.server.encryption import EncryptionKeyError, generate_key
from tallystick.server.migrate import upgrade_to_head
from tallystick.server.models import PaymentSettings, ServerSecret, WebhookSigningSecret
from tallystick.server.settings import Settings, get_settings
from tests.conftest import serve_app
from tests.dashboard_helpers import DashboardClient, make_operator

STRIPE_KEY = "sk_test_51EncryptionAtRestKey0000"
STRIPE_WEBHOOK_SECRET = "whsec_encryption_at_rest"
runner = CliRunner()


@pytest.fixture
def own_store(tmp_path) -> Iterator[Store]:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'secrets.db'}"
    upgrade_to_head(url)
    store = Store.open(url)
    yield store
    store.dispose()


@pytest.fixture
def use_keys(monkeypatch) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """Return a function that sets TALLYSTICK_ENCRYPTION_KEYS (None unsets it) for this test."""

    def set_keys(*keys: str | None) -> None:
        if keys == (None,):
            monkeypatch.delenv("TALLYSTICK_ENCRYPTION_KEYS", raising=False)
        else:
            monkeypatch.setenv("TALLYSTICK_ENCRYPTION_KEYS", ",".join(key for key in keys if key))
        get_settings.cache_clear()

    yield set_keys
    monkeypatch.delenv("TALLYSTICK_ENCRYPTION_KEYS", raising=False)
    get_settings.cache_clear()


def raw_values(store: Store) -> dict[str, str]:
    """Read the secret columns as stored, without the column type's decryption."""
    with store.engine.connect() as connection:
        settings_row = connection.execute(
            text("SELECT stripe_secret_key, stripe_webhook_secret FROM payment_settings")
        ).one()
        signing = connection.execute(text("SELECT secret FROM webhook_signing_secrets")).scalar_one()
    return {"stripe_secret_key": settings_row[0], "stripe_webhook_secret": settings_row[1], "signing": signing}


def store_secrets(store: Store) -> str:
    """Store Stripe settings and a webhook signing secret for a new organization; return its id."""
    with store.transaction() as session:
        created = create_api_key(session, "encryption-org")
        session.add(
            PaymentSettings(
                organization_id=created.organization_id,
                provider="stripe",
                stripe_secret_key=STRIPE_KEY,
                stripe_webhook_secret=STRIPE_WEBHOOK_SECRET,
            )
        )
        session.add(WebhookSigningSecret(organization_id=created.organization_id, secret="whsec_signing_secret"))
    return created.organization_id


def read_secrets(store: Store, organization_id: str) -> tuple[str | None, str | None, str]:
    with store.read_sessions() as session:
        settings = session.get(PaymentSettings, organization_id)
        signing = session.get(WebhookSigningSecret, organization_id)
        assert settings is not None and signing is not None
        return settings.stripe_secret_key, settings.stripe_webhook_secret, signing.secret


def encrypt_command(store: Store):  # type: ignore[no-untyped-def]
    return runner.invoke(cli, ["secrets", "encrypt", "--database-url", str(store.engine.url)])


def test_secrets_stored_encrypted_through_api(own_store, use_keys):
    use_keys(generate_key())
    with serve_app(create_app(Settings(database_url=str(own_store.engine.url)), store=own_store), str(own_store.engine.url)) as running:
        with own_store.transaction() as session:
            created = create_api_key(session, "api-org")
        http = httpx.Client(base_url=running.api_url, headers={"Authorization": f"Bearer {created.secret}"}, timeout=30)
        updated = http.put(
            "/payment-settings",
            json={"provider": "stripe", "stripeSecretKey": STRIPE_KEY, "stripeWebhookSecret": STRIPE_WEBHOOK_SECRET},
        )
        rotated = http.post("/webhooks/rotate-secret", json={})
        current_settings = http.get("/payment-settings")
        http.close()

    assert updated.status_code == 200, updated.text
    assert rotated.status_code == 200, rotated.text
    assert current_settings.json()["stripeSecretKeyLast4"] == STRIPE_KEY[-4:]
    stored = raw_values(own_store)
    signing_secret = rotated.json()["signingSecret"]
    for value, secret in (
        (stored["stripe_secret_key"], STRIPE_KEY),
        (stored["stripe_webhook_secret"], STRIPE_WEBHOOK_SECRET),
        (stored["signing"], signing_secret),
    ):
        assert value.startswith("fernet:")
        assert secret not in value
    assert read_secrets(own_store, created.organization_id) == (STRIPE_KEY, STRIPE_WEBHOOK_SECRET, signing_secret)


def test_encrypt_command_then_rotation(own_store, use_keys):
    use_keys(None)
    organization_id = store_secrets(own_store)
    assert raw_values(own_store)["stripe_secret_key"] == STRIPE_KEY

    old_key, new_key = generate_key(), generate_key()
    use_keys(old_key)
    # Secrets stored in clear stay readable once keys are set, before the command runs.
    assert read_secrets(own_store, organization_id) == (STRIPE_KEY, STRIPE_WEBHOOK_SECRET, "whsec_signing_secret")
    first = encrypt_command(own_store)
    assert first.exit_code == 0, first.output
    assert "Encrypted 3 stored secrets" in first.output
    under_old_key = raw_values(own_store)
    assert all(value.startswith("fernet:") for value in under_old_key.values())

    use_keys(new_key, old_key)
    assert read_secrets(own_store, organization_id) == (STRIPE_KEY, STRIPE_WEBHOOK_SECRET, "whsec_signing_secret")
    rotated = encrypt_command(own_store)
    assert rotated.exit_code == 0, rotated.output

    use_keys(new_key)
    assert read_secrets(own_store, organization_id) == (STRIPE_KEY, STRIPE_WEBHOOK_SECRET, "whsec_signing_secret")
    assert raw_values(own_store) != under_old_key


def test_wrong_or_missing_key_is_clear_error(own_store, use_keys):
    use_keys(generate_key())
    organization_id = store_secrets(own_store)

    use_keys(generate_key())
    with pytest.raises(EncryptionKeyError, match="none of the keys"):
        read_secrets(own_store, organization_id)
    failed = encrypt_command(own_store)
    assert failed.exit_code == 1
    assert "none of the keys in TALLYSTICK_ENCRYPTION_KEYS decrypts" in failed.output

    use_keys(None)
    with pytest.raises(EncryptionKeyError, match="not set"):
        read_secrets(own_store, organization_id)
    without_keys = encrypt_command(own_store)
    assert without_keys.exit_code == 1
    assert "TALLYSTICK_ENCRYPTION_KEYS is not set" in without_keys.output


def test_malformed_key_rejected_at_start(monkeypatch):
    good_key = generate_key()
    monkeypatch.setenv("TALLYSTICK_ENCRYPTION_KEYS", f"{good_key},not-a-fernet-key")

    with pytest.raises(ValidationError) as raised:
        Settings()

    message = str(raised.value)
    assert "key 2 is not a Fernet key" in message
    assert "not-a-fernet-key" not in message
    assert good_key[:8] not in message
    assert good_key[-8:] not in message


def test_cli_reports_bad_keys_in_one_line(own_store, use_keys):
    use_keys(generate_key())
    store_secrets(own_store)
    with own_store.transaction() as session:
        session.add(ServerSecret(name="secret_key", value="signing-key"))
    url = str(own_store.engine.url)

    use_keys("not-a-fernet-key")
    malformed = runner.invoke(cli, ["secrets", "encrypt", "--database-url", url])
    use_keys(None)
    # serve stops before it starts listening, because the stored signing key cannot be read. It
    # runs in a child process, since it configures logging for the whole process.
    environment = {name: value for name, value in os.environ.items() if name != "TALLYSTICK_ENCRYPTION_KEYS"}
    unreadable = subprocess.run(
        [sys.executable, "-m", "tallystick.cli.main", "serve", "--database-url", url, "--port", "9"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert malformed.exit_code == 1
    assert malformed.output.strip().splitlines() == [
        "Error: invalid setting TALLYSTICK_ENCRYPTION_KEYS: key 1 is not a Fernet key (urlsafe base64 of "
        "32 bytes); list keys separated by commas and generate them with `tallystick secrets generate-key`"
    ]
    assert unreadable.returncode == 1
    assert "a stored secret is encrypted but TALLYSTICK_ENCRYPTION_KEYS is not set" in unreadable.stderr
    assert "Traceback" not in unreadable.stderr


def test_server_without_key_answers_503(own_store, use_keys):
    use_keys(generate_key())
    with own_store.transaction() as session:
        created = create_api_key(session, "misconfigured-org")
        session.add(PaymentSettings(organization_id=created.organization_id, provider="stripe", stripe_secret_key=STRIPE_KEY))

    operator = make_operator(own_store, created.organization_id)

    # The operator encrypted the secrets but started this server without the key.
    use_keys(None)
    url = str(own_store.engine.url)
    with serve_app(create_app(Settings(database_url=url), store=own_store), url) as running:
        http = httpx.Client(base_url=running.api_url, headers={"Authorization": f"Bearer {created.secret}"}, timeout=30)
        response = http.get("/payment-settings")
        http.close()
        dashboard = DashboardClient(running.root)
        assert dashboard.sign_in(operator).status_code == 303
        page = dashboard.get("/dashboard/settings/payments")
        dashboard.close()

    assert response.status_code == 503, response.text
    assert response.json()["code"] == "server_misconfigured"
    assert "TALLYSTICK_ENCRYPTION_KEYS is not set" in response.json()["error"]
    assert STRIPE_KEY not in response.text
    assert page.status_code == 503
    assert "TALLYSTICK_ENCRYPTION_KEYS is not set" in page.text
