"""Resource commands and signal imports of the `tallystick` CLI against a live server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tallystick.cli.main import app
from tallystick.cli.output import money_text
from tests.billing_helpers import buy, create_chat_catalog
from tests.guide import create_guide_catalog

runner = CliRunner()


@pytest.fixture
def cli_env(tenant):  # type: ignore[no-untyped-def]
    return {"TALLYSTICK_API_URL": tenant.server.root, "TALLYSTICK_API_KEY": tenant.api_key, "COLUMNS": "200"}


def invoke(env, *args):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, list(args), env=env)
    return result


def test_customers_create_list_and_get(cli_env):
    created = invoke(cli_env, "customers", "create", "--name", "Ada", "--external-id", "ada", "--json")
    assert created.exit_code == 0, created.output
    customer = json.loads(created.output)
    assert customer["externalId"] == "ada"

    listed = invoke(cli_env, "customers", "list")
    assert listed.exit_code == 0
    assert customer["id"] in listed.output

    shown = invoke(cli_env, "customers", "get", "ada", "--json")
    assert json.loads(shown.output)["id"] == customer["id"]


def test_missing_customer_prints_api_error(cli_env):
    result = invoke(cli_env, "customers", "get", "nobody")
    assert result.exit_code == 1
    assert "Error 404" in result.output
    assert "nobody" in result.output


def test_grant_signal_and_balance(tenant, cli_env):
    create_guide_catalog(tenant.paid())
    tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada"})

    grant_once = ("grants", "create", "ada", "--currency", "chat_credits", "--amount", "10", "--idempotency-key", "g1")
    granted = invoke(cli_env, *grant_once)
    assert granted.exit_code == 0, granted.output
    assert "Granted 10 chat_credits to ada." in granted.output
    again = invoke(cli_env, *grant_once)
    assert again.exit_code == 0, again.output
    assert "already exists for this idempotency key; nothing granted" in again.output

    sent = invoke(cli_env, "signals", "send", "chat_message", "--customer", "ada", "--product", "chatbot", "--idempotency-key", "m1")
    assert sent.exit_code == 0, sent.output
    assert "ingested" in sent.output
    again = invoke(cli_env, "signals", "send", "chat_message", "--customer", "ada", "--product", "chatbot", "--idempotency-key", "m1")
    assert "duplicate" in again.output

    balances = invoke(cli_env, "balances", "ada", "--json")
    assert balances.exit_code == 0, balances.output
    [balance] = json.loads(balances.output)["data"]
    assert balance["currencyKey"] == "chat_credits"
    assert balance["available"] == 9

    listed = invoke(cli_env, "signals", "list", "--customer", "ada", "--json")
    assert json.loads(listed.output)["pagination"]["total"] == 1


def test_grant_create_with_unit_value(tenant, cli_env):
    create_guide_catalog(tenant.paid())
    tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada"})

    valued = invoke(cli_env, "grants", "create", "ada", "--currency", "chat_credits", "--amount", "5", "--unit-value", "0.05", "--json")
    invalid = invoke(cli_env, "grants", "create", "ada", "--currency", "chat_credits", "--amount", "5", "--unit-value", "-1")
    not_a_number = invoke(cli_env, "grants", "create", "ada", "--currency", "chat_credits", "--amount", "5", "--unit-value", "abc")

    assert valued.exit_code == 0, valued.output
    assert json.loads(valued.output)["grant"]["unitValue"] == "0.050000000000"
    assert invalid.exit_code == 1
    assert "unitValue" in invalid.output
    assert not_a_number.exit_code == 2
    assert "'abc' is not a number" in not_a_number.output
    assert "--unit-value" in not_a_number.output
    [balance] = tenant.http.get("/customers/external/ada/credits/balances").json()["data"]
    assert balance["totalDecimal"] == "5"


def test_grant_create_sends_exact_amount(tenant, cli_env):
    create_guide_catalog(tenant.paid())
    tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada"})

    granted = invoke(cli_env, "grants", "create", "ada", "--currency", "chat_credits", "--amount", "2.500001")
    not_a_number = invoke(cli_env, "grants", "create", "ada", "--currency", "chat_credits", "--amount", "nan")

    assert granted.exit_code == 0, granted.output
    assert not_a_number.exit_code == 2
    assert "'nan' is not a number" in not_a_number.output
    huge = invoke(cli_env, "grants", "create", "ada", "--currency", "chat_credits", "--amount", "1e100000000")
    assert huge.exit_code == 2
    assert "'1e100000000' is out of range" in huge.output
    [balance] = tenant.http.get("/customers/external/ada/credits/balances").json()["data"]
    assert balance["totalDecimal"] == "2.500001"


def _table_line(output: str, text: str) -> str:
    """Return the one line of a printed table that contains `text`."""
    [line] = [line for line in output.splitlines() if text in line]
    return line


def test_grants_list_shows_each_grant(tenant, cli_env):
    create_guide_catalog(tenant.paid())
    tenant.http.post("/credits/currencies", json={"key": "image_credits", "name": "Image Credits"})
    tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada"})
    expiring = {"creditCurrencyKey": "chat_credits", "amount": 10, "expiresAt": "2099-01-01T00:00:00Z"}
    tenant.http.post("/customers/external/ada/credits/grants", json=expiring)
    open_ended = {"creditCurrencyKey": "chat_credits", "amount": "2.500001"}
    tenant.http.post("/customers/external/ada/credits/grants", json=open_ended)
    tenant.http.post("/customers/external/ada/credits/grants", json={"creditCurrencyKey": "image_credits", "amount": 3})
    sent = invoke(cli_env, "signals", "send", "chat_message", "--customer", "ada", "--product", "chatbot")
    assert sent.exit_code == 0, sent.output

    as_json = invoke(cli_env, "grants", "list", "ada", "--json")
    table = invoke(cli_env, "grants", "list", "ada")

    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)["data"]
    by_total = {row["totalDecimal"]: row for row in rows}
    assert sorted(by_total) == ["10", "2.500001", "3"]
    assert by_total["3"]["currencyKey"] == "image_credits"
    assert by_total["10"]["currencyKey"] == "chat_credits"
    # The grant that expires first is drawn first.
    assert (by_total["10"]["usedDecimal"], by_total["10"]["availableDecimal"]) == ("1", "9")
    assert (by_total["2.500001"]["usedDecimal"], by_total["2.500001"]["availableDecimal"]) == ("0", "2.500001")

    assert table.exit_code == 0, table.output
    expiring_line = _table_line(table.output, by_total["10"]["id"])
    assert "chat_credits" in expiring_line
    assert " 9 " in expiring_line
    assert "2099-01-01" in expiring_line
    open_ended_line = _table_line(table.output, by_total["2.500001"]["id"])
    assert "2.500001" in open_ended_line
    assert "never" in open_ended_line
    assert by_total["2.500001"]["periodStart"] in open_ended_line
    assert "image_credits" in _table_line(table.output, by_total["3"]["id"])


def test_grants_list_by_customer_id(tenant, cli_env):
    create_guide_catalog(tenant.paid())
    customer = tenant.http.post("/customers/", json={"name": "Ada"}).json()
    tenant.http.post(f"/customers/{customer['id']}/credits/grants", json={"creditCurrencyKey": "chat_credits", "amount": 4})

    result = invoke(cli_env, "grants", "list", customer["id"], "--json")

    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)["data"]
    assert row["totalDecimal"] == "4"


def test_grants_list_without_grants(tenant, cli_env):
    tenant.http.post("/customers/", json={"name": "Bo", "externalId": "bo"})

    table = invoke(cli_env, "grants", "list", "bo")
    as_json = invoke(cli_env, "grants", "list", "bo", "--json")

    assert table.exit_code == 0, table.output
    assert table.output.strip() == "No active credit grants for customer bo."
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == {"data": []}


def test_grants_list_unknown_customer(cli_env):
    by_external_id = invoke(cli_env, "grants", "list", "nobody")
    by_id = invoke(cli_env, "grants", "list", "cus_nobody")

    assert by_external_id.exit_code == 1
    assert len(by_external_id.output.strip().splitlines()) == 1
    assert "customer with external id 'nobody' not found" in by_external_id.output
    assert by_id.exit_code == 1
    assert len(by_id.output.strip().splitlines()) == 1
    assert "customer with id 'cus_nobody' not found" in by_id.output


def test_balances_unknown_customer(cli_env):
    result = invoke(cli_env, "balances", "nobody")

    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "customer with external id 'nobody' not found" in result.output


def test_wrong_api_path_not_blamed_on_customer(tenant, cli_env):
    tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada"})
    wrong_path = {**cli_env, "TALLYSTICK_API_URL": tenant.server.root + "/wrongprefix"}

    result = invoke(wrong_path, "grants", "list", "ada")

    assert result.exit_code == 1
    assert "No route" in result.output
    assert "create the customer" not in result.output


def test_grants_list_keeps_ids_whole(tenant, cli_env):
    create_guide_catalog(tenant.paid())
    tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada"})
    tenant.http.post("/customers/external/ada/credits/grants", json={"creditCurrencyKey": "chat_credits", "amount": 5})
    [grant] = json.loads(invoke(cli_env, "grants", "list", "ada", "--json").output)["data"]

    narrow = invoke({**cli_env, "COLUMNS": "80"}, "grants", "list", "ada")

    assert narrow.exit_code == 0, narrow.output
    assert grant["id"] in narrow.output


def test_grant_create_unknown_customer(tenant, cli_env):
    create_guide_catalog(tenant.paid())

    result = invoke(cli_env, "grants", "create", "new user", "--currency", "chat_credits", "--amount", "5")

    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "customer with external id 'new user' not found" in result.output
    assert "tallystick customers create --name NAME --external-id 'new user'" in result.output
    assert "404" not in result.output
    assert tenant.http.get("/customers/external/new user").status_code == 404


def test_signal_send_rejects_bad_data(cli_env):
    result = invoke(cli_env, "signals", "send", "chat_message", "--customer", "ada", "--data", "{oops")
    assert result.exit_code != 0
    assert "invalid JSON" in result.output


def test_import_csv_is_idempotent(tenant, cli_env, tmp_path: Path):
    create_guide_catalog(tenant.paid())
    tenant.http.post("/customers/", json={"name": "Bo", "externalId": "bo"})
    tenant.http.post("/customers/external/bo/credits/grants", json={"creditCurrencyKey": "chat_credits", "amount": 100})
    rows = ["event_name,customer,product,idempotency_key,data.minutes_saved"]
    rows += [f"chat_message,bo,chatbot,row-{number},{number}" for number in range(25)]
    csv_file = tmp_path / "signals.csv"
    csv_file.write_text("\n".join(rows) + "\n")

    first = invoke(cli_env, "import", "signals", str(csv_file), "--batch-size", "10")
    assert first.exit_code == 0, first.output
    assert "25 ingested, 0 duplicates, 0 failed" in first.output

    second = invoke(cli_env, "import", "signals", str(csv_file))
    assert second.exit_code == 0, second.output
    assert "0 ingested, 25 duplicates, 0 failed" in second.output

    [balance] = tenant.http.get("/customers/external/bo/credits/balances").json()["data"]
    assert balance["available"] == 75
    listed = tenant.http.get("/signals/", params={"externalCustomerId": "bo", "limit": 1}).json()
    assert listed["data"][0]["data"]["minutes_saved"] in range(25)


def test_import_jsonl_without_keys_is_idempotent(tenant, cli_env, tmp_path: Path):
    lines = [json.dumps({"eventName": "search", "customer": {"externalCustomerId": "cy"}, "data": {"n": n}}) for n in range(5)]
    jsonl = tmp_path / "signals.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")

    assert "5 ingested" in invoke(cli_env, "import", "signals", str(jsonl)).output
    assert "5 duplicates" in invoke(cli_env, "import", "signals", str(jsonl)).output


def test_import_reports_failed_rows_with_line(tenant, cli_env, tmp_path: Path):
    jsonl = tmp_path / "signals.jsonl"
    jsonl.write_text(
        json.dumps({"eventName": "ok", "customer": {"externalCustomerId": "cy"}}) + "\n"
        + json.dumps({"eventName": "", "customer": {"externalCustomerId": "cy"}}) + "\n"
    )
    result = invoke(cli_env, "import", "signals", str(jsonl))
    assert result.exit_code == 1
    assert "1 ingested, 0 duplicates, 1 failed" in result.output
    assert f"{jsonl}:2:" in result.output


def test_import_bad_json_line_names_line(cli_env, tmp_path: Path):
    jsonl = tmp_path / "signals.jsonl"
    jsonl.write_text('{"eventName": "a", "customer": {"externalCustomerId": "c"}}\n{broken\n')
    result = invoke(cli_env, "import", "signals", str(jsonl))
    assert result.exit_code == 1
    assert f"{jsonl}:2: invalid JSON" in result.output


def test_value_model_upload_show_backfill(cli_env, tmp_path):
    from tallystick.demo.value import VALUE_MODEL

    model_file = tmp_path / "value-model.yaml"
    model_file.write_text(yaml.safe_dump(VALUE_MODEL))

    uploaded = invoke(cli_env, "value-models", "upload", str(model_file))
    assert uploaded.exit_code == 0, uploaded.output
    assert "Uploaded value model version 1; it is active." in uploaded.output

    current = invoke(cli_env, "value-models", "show", "--json")
    assert current.exit_code == 0, current.output
    assert json.loads(current.output)["content"]["valueTypes"] == json.loads(json.dumps(VALUE_MODEL["valueTypes"]))

    backfilled = invoke(cli_env, "value-models", "backfill", "--json")
    assert backfilled.exit_code == 0, backfilled.output
    result = json.loads(backfilled.output)
    assert (result["version"], result["signalsEvaluated"], result["receiptsRefreshed"]) == (1, 0, 0)


def test_value_model_upload_rejects_bad_file(cli_env, tmp_path):
    not_a_model = tmp_path / "model.json"
    not_a_model.write_text("[1, 2")

    result = invoke(cli_env, "value-models", "upload", str(not_a_model))

    assert result.exit_code == 2
    assert "is not valid JSON or YAML" in result.output
    assert invoke(cli_env, "value-models", "show").exit_code == 1


def test_invoices_show_formatted_total(tenant, cli_env):
    catalog = create_chat_catalog(tenant, [("Pro", 19900, 1000)])
    buy(tenant, catalog, "Pro", "invoice-buyer")
    invoice = tenant.http.get("/invoices/").json()["data"][0]
    assert invoice["invoiceTotal"] == 19900
    assert invoice["currency"] == "USD"

    listed = invoke(cli_env, "invoices", "list")
    assert listed.exit_code == 0, listed.output
    assert "$199.00" in listed.output
    [row] = [line for line in listed.output.splitlines() if invoice["id"] in line]
    assert "│ paid" in row

    detail = invoke(cli_env, "invoices", "get", invoice["id"])
    assert detail.exit_code == 0, detail.output
    lines = {line.split()[0]: line.split()[1] for line in detail.output.splitlines()}
    assert lines["total"] == "$199.00"
    assert lines["remaining"] == money_text(invoice["amountRemaining"], "USD")
    assert lines["paymentStatus"] == "paid"
