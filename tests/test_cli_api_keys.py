"""`tallystick api-keys` against a SQLite store in a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tallystick.cli.main import app

runner = CliRunner()


def test_create_list_and_revoke(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    created = runner.invoke(app, ["api-keys", "create", "--org", "Acme AI", "--database-url", url, "--json"])
    assert created.exit_code == 0, created.output
    body = json.loads(created.output)
    assert body["apiKey"].startswith("tsk_")
    assert body["organizationId"].startswith("org_")
    assert body["apiKeyId"].startswith("key_")

    listed = runner.invoke(app, ["api-keys", "list", "--org", "Acme AI", "--database-url", url], env={"COLUMNS": "80"})
    assert listed.exit_code == 0, listed.output
    assert body["apiKeyId"] in listed.output
    assert body["apiKey"] not in listed.output

    revoked = runner.invoke(app, ["api-keys", "revoke", body["apiKeyId"], "--database-url", url])
    assert revoked.exit_code == 0
    as_json = json.loads(runner.invoke(app, ["api-keys", "list", "--database-url", url, "--json"]).output)
    assert as_json[0]["revokedAt"] is not None


def test_list_unknown_organization_fails(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner.invoke(app, ["api-keys", "create", "--org", "Acme AI", "--database-url", url])
    result = runner.invoke(app, ["api-keys", "list", "--org", "Acme A", "--database-url", url])
    assert result.exit_code == 1
    assert "No API keys for organization 'Acme A'" in result.output


def test_revoke_unknown_key_fails(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    result = runner.invoke(app, ["api-keys", "revoke", "key_missing", "--database-url", url])
    assert result.exit_code == 1
    assert "not found" in result.output


def test_unopenable_database_prints_one_line(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'missing-folder' / 'keys.db'}"

    for command in (["migrate"], ["api-keys", "create", "--org", "Acme AI"]):
        result = runner.invoke(app, [*command, "--database-url", url], env={"COLUMNS": "400"})

        assert result.exit_code == 1
        assert f"Error: cannot open the database {url}: unable to open database file." in result.output
        assert "Traceback" not in result.output
