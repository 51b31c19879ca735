"""`tallystick apply` and `tallystick export` against a live server."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tallystick.cli.main import app

runner = CliRunner()


@pytest.fixture
def cli_env(tenant):  # type: ignore[no-untyped-def]
    return {"TALLYSTICK_API_URL": tenant.server.root, "TALLYSTICK_API_KEY": tenant.api_key}


@pytest.fixture
def catalog_file(repo_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "catalog.yaml"
    copy.write_text((repo_root / "examples/chatbot/catalog.yaml").read_text())
    return copy


def invoke(env, *args):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env)


def test_apply_creates_guide_catalog(tenant, cli_env, catalog_file):
    result = invoke(cli_env, "apply", str(catalog_file))
    assert result.exit_code == 0, result.output
    assert "Applied" in result.output

    client = tenant.paid()
    [currency] = client.credits.list_credit_currencies().data
    assert currency.key == "chat_credits"
    product = client.products.get_product_by_external_id("chatbot")
    assert [line.name for line in product.product_attributes] == ["Monthly fee", "Chat message"]
    usage = product.product_attributes[1].pricing
    assert usage.credits_currency_id == currency.id
    assert usage.credit_cost == 1
    pro = client.plans.get_plan_by_external_id("pro")
    assert pro.attributes[0].pricing.price_points[0]["unitPrice"] == 7900
    assert pro.attributes[0].credit_benefits[0].amount == 2000


def test_reapply_changes_nothing(tenant, cli_env, catalog_file):
    assert invoke(cli_env, "apply", str(catalog_file)).exit_code == 0
    before = tenant.http.get("/plans/external/pro").json()

    again = invoke(cli_env, "apply", str(catalog_file))
    assert again.exit_code == 0, again.output
    assert "No changes" in again.output
    assert tenant.http.get("/plans/external/pro").json()["updatedAt"] == before["updatedAt"]


def test_edit_and_reapply_updates_plan(tenant, cli_env, catalog_file):
    assert invoke(cli_env, "apply", str(catalog_file)).exit_code == 0
    catalog_file.write_text(catalog_file.read_text().replace("amount: 2000", "amount: 2500"))

    dry = invoke(cli_env, "apply", "--dry-run", str(catalog_file))
    assert dry.exit_code == 0, dry.output
    assert "update plan pro (lines)" in dry.output
    assert "Dry run: 1 change(s) not applied." in dry.output
    assert tenant.paid().plans.get_plan_by_external_id("pro").attributes[0].credit_benefits[0].amount == 2000

    applied = invoke(cli_env, "apply", str(catalog_file))
    assert applied.exit_code == 0, applied.output
    assert "Applied 1 change(s)" in applied.output
    plan = tenant.paid().plans.get_plan_by_external_id("pro")
    assert plan.attributes[0].credit_benefits[0].amount == 2500
    assert "No changes" in invoke(cli_env, "apply", str(catalog_file)).output


def test_typo_in_field_names_line(cli_env, catalog_file):
    text = catalog_file.read_text().replace("    name: ChatBot", "    nmae: ChatBot")
    catalog_file.write_text(text)
    result = invoke(cli_env, "apply", str(catalog_file))
    assert result.exit_code == 1
    line = next(number for number, content in enumerate(text.splitlines(), 1) if "nmae:" in content)
    assert f"{catalog_file}:{line}: products[0].nmae: unknown field 'nmae'" in result.output


def test_typo_in_pricing_names_line(cli_env, catalog_file):
    text = catalog_file.read_text().replace("eventName: chat_message", "eventNme: chat_message")
    catalog_file.write_text(text)
    result = invoke(cli_env, "apply", str(catalog_file))
    assert result.exit_code == 1
    line = next(number for number, content in enumerate(text.splitlines(), 1) if "eventNme:" in content)
    assert f"{catalog_file}:{line}: products[0].lines[1].pricing.eventNme: unknown field" in result.output


def test_unknown_currency_reference_names_line(cli_env, catalog_file):
    text = catalog_file.read_text().replace("creditCurrency: chat_credits, amount: 500", "creditCurrency: chat, amount: 500")
    catalog_file.write_text(text)
    result = invoke(cli_env, "apply", str(catalog_file))
    assert result.exit_code == 1
    line = next(number for number, content in enumerate(text.splitlines(), 1) if "creditCurrency: chat," in content)
    assert f"{catalog_file}:{line}:" in result.output
    assert "unknown credit currency 'chat'" in result.output


def test_invalid_yaml_names_line(cli_env, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("currencies:\n  - key: a\n    name: [unclosed\n")
    result = invoke(cli_env, "apply", str(broken))
    assert result.exit_code == 1
    assert "invalid YAML" in result.output
    assert f"{broken}:" in result.output


def test_export_round_trips_through_apply(tenant, cli_env, catalog_file, tmp_path):
    assert invoke(cli_env, "apply", str(catalog_file)).exit_code == 0
    exported = tmp_path / "exported.yaml"
    result = invoke(cli_env, "export", "--output", str(exported))
    assert result.exit_code == 0, result.output
    text = exported.read_text()
    assert "creditCurrency: chat_credits" in text
    assert "externalId: business" in text

    again = invoke(cli_env, "apply", str(exported))
    assert again.exit_code == 0, again.output
    assert "No changes" in again.output


def test_apply_without_key_fails_clearly(catalog_file, tenant):
    result = runner.invoke(
        app, ["apply", str(catalog_file)], env={"TALLYSTICK_API_URL": tenant.server.root, "TALLYSTICK_API_KEY": ""}
    )
    assert result.exit_code == 1
    assert "API key" in result.output


def test_apply_with_wrong_key_prints_api_error(catalog_file, tenant):
    result = runner.invoke(
        app, ["apply", str(catalog_file)], env={"TALLYSTICK_API_URL": tenant.server.root, "TALLYSTICK_API_KEY": "tsk_wrong"}
    )
    assert result.exit_code == 1
    assert "Error 401" in result.output
    assert "Invalid or revoked API key" in result.output
