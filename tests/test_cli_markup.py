"""The CLI prints names and messages that look like rich markup exactly as given, and cuts no table value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tallystick.cli.main import app
from tests.cli_helpers import api_env, invoke, runner
from tests.guide import create_guide_catalog

# A closing tag without an opening one made rich raise MarkupError; an opening tag was
# swallowed as a style.
MARKUP_VALUES = ["Acme [/bold] x", "[red]Evil", "[/]"]


@pytest.fixture
def cli_env(tenant):  # type: ignore[no-untyped-def]
    return api_env(tenant)


def column_text(output: str, index: int) -> str:
    """Join the pieces of column `index` of every body line of a printed table.

    A value folded over several lines comes back whole, since folding adds no characters.
    """
    pieces = []
    for line in output.splitlines():
        if line.startswith("│"):
            pieces.append(line.split("│")[index + 1].strip())
    return "".join(pieces)


@pytest.mark.parametrize("org", MARKUP_VALUES)
def test_api_keys_create_prints_org_as_given(tmp_path: Path, org: str):
    url = f"sqlite:///{tmp_path / 'keys.db'}"

    created = runner.invoke(app, ["api-keys", "create", "--org", org, "--database-url", url], env={"COLUMNS": "200"})
    listed = runner.invoke(app, ["api-keys", "list", "--database-url", url], env={"COLUMNS": "200"})

    assert created.exit_code == 0, created.output
    assert f"Organization: {org} (org_" in created.output
    assert "API key:      tsk_" in created.output
    assert listed.exit_code == 0, listed.output
    assert org in listed.output


def test_users_create_prints_org_and_password(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'users.db'}"

    created = runner.invoke(
        app, ["users", "create", "--org", "[/]", "--email", "a@b.example", "--database-url", url], env={"COLUMNS": "200"}
    )
    listed = runner.invoke(app, ["users", "list", "--database-url", url], env={"COLUMNS": "200"})

    assert created.exit_code == 0, created.output
    assert "of organization [/] created." in created.output
    assert "Password: " in created.output
    assert "http://HOST:PORT" not in created.output
    assert "/dashboard/login" in created.output
    assert listed.exit_code == 0, listed.output
    assert "[/]" in column_text(listed.output, 2)


def test_signal_send_prints_event_as_given(tenant, cli_env):
    sent = invoke(cli_env, "signals", "send", "[/]", "--customer", "[red]Evil")
    listed = invoke(cli_env, "signals", "list")

    assert sent.exit_code == 0, sent.output
    assert sent.output.strip() == "Signal [/] for [red]Evil: ingested."
    assert listed.exit_code == 0, listed.output
    assert "[/]" in column_text(listed.output, 1)
    assert "[red]Evil" in column_text(listed.output, 2)


def test_customer_listing_prints_names_as_given(tenant, cli_env):
    created = invoke(cli_env, "customers", "create", "--name", "[red]Evil", "--external-id", "evil")
    listed = invoke(cli_env, "customers", "list")
    record = invoke(cli_env, "customers", "get", "evil")

    assert created.exit_code == 0, created.output
    assert created.output.startswith("Created customer [red]Evil (cus_")
    assert listed.exit_code == 0, listed.output
    assert "[red]Evil" in listed.output
    assert record.exit_code == 0, record.output
    assert "name        [red]Evil" in record.output.splitlines()


@pytest.mark.parametrize(
    ("customer", "line"),
    [
        ("[red]Evil", "Error 404: Customer with externalId '[red]Evil' not found"),
        # The server decodes the path before routing, so an id with a slash matches no route.
        ("Acme [/bold] x", "Error 404: No route for GET /api/v2/customers/external/Acme [/bold] x"),
    ],
)
def test_api_error_prints_message_as_given(cli_env, customer: str, line: str):
    result = invoke(cli_env, "customers", "get", customer)

    assert result.exit_code == 1
    assert result.output.strip() == line


def test_apply_prints_catalog_names_as_given(cli_env, tmp_path: Path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("products:\n  - externalId: '[red]Evil'\n    name: '[/] product'\n    lines: []\n")

    result = invoke(cli_env, "apply", str(catalog), "--dry-run")

    assert result.exit_code == 0, result.output
    assert "create product [red]Evil" in result.output.splitlines()


def test_tables_keep_values_whole_at_80_columns(tenant, cli_env):
    create_guide_catalog(tenant.paid())
    email = "someone.with.a.long.address@billing.example.com"
    customer = json.loads(
        invoke(cli_env, "customers", "create", "--name", "Ada Lovelace", "--external-id", "ada", "--email", email, "--json").output
    )
    tenant.http.post("/customers/external/ada/credits/grants", json={"creditCurrencyKey": "chat_credits", "amount": 5})
    sent = invoke(cli_env, "signals", "send", "chat_message", "--customer", "ada", "--product", "chatbot")
    assert sent.exit_code == 0, sent.output
    [grant] = json.loads(invoke(cli_env, "grants", "list", "ada", "--json").output)["data"]
    [signal] = json.loads(invoke(cli_env, "signals", "list", "--json").output)["data"]
    plans = json.loads(invoke(cli_env, "plans", "list", "--json").output)["data"]
    narrow = {**cli_env, "COLUMNS": "80"}

    customers = invoke(narrow, "customers", "list")
    grants = invoke(narrow, "grants", "list", "ada")
    signals = invoke(narrow, "signals", "list")
    plan_table = invoke(narrow, "plans", "list")

    for result in (customers, grants, signals, plan_table):
        assert result.exit_code == 0, result.output
        assert "…" not in result.output
        assert max(len(line) for line in result.output.splitlines()) <= 80
    assert customer["id"] in customers.output
    assert email in column_text(customers.output, 3)
    assert grant["id"] in grants.output
    assert "chat_credits" in column_text(grants.output, 1)
    assert grant["periodStart"] in column_text(grants.output, 5)
    assert signal["id"] in signals.output
    assert "chat_message" in column_text(signals.output, 1)
    assert signal["createdAt"] in column_text(signals.output, 5)
    assert "".join(plan["productId"] for plan in plans) == column_text(plan_table.output, 4)
