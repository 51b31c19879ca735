"""Files read and written by the CLI: common encodings and numbers work or fail with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tallystick.cli.main import app
from tests.cli_helpers import api_env, invoke, runner


@pytest.fixture
def cli_env(tenant):  # type: ignore[no-untyped-def]
    return api_env(tenant, columns=400)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error")]


def test_import_csv_with_byte_order_mark(tenant, cli_env, tmp_path: Path):
    csv_file = tmp_path / "excel.csv"
    csv_file.write_bytes("event_name,customer,data.minutes\nchat_message,bo,3\n".encode("utf-8-sig"))

    result = invoke(cli_env, "import", "signals", str(csv_file))

    assert result.exit_code == 0, result.output
    assert "1 ingested, 0 duplicates, 0 failed" in result.output
    [signal] = tenant.http.get("/signals/", params={"externalCustomerId": "bo"}).json()["data"]
    assert signal["data"] == {"minutes": 3}


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        (
            "nan.csv",
            "event_name,customer,data.tokens\nchat_message,bo,1\nchat_message,bo,NaN\n",
            "nan.csv:3: column data.tokens: 'NaN' is not a finite number",
        ),
        (
            "huge.csv",
            "event_name,customer,data.tokens\nchat_message,bo,1e999\n",
            "huge.csv:2: column data.tokens: '1e999' is not a finite number",
        ),
        (
            "data.csv",
            'event_name,customer,data\nchat_message,bo,"{""usage"": {""tokens"": Infinity}}"\n',
            "data.csv:2: column data: the value of usage.tokens is not a finite number",
        ),
        (
            "nan.jsonl",
            '{"event_name": "chat_message", "customer": "bo", "data": {"tokens": NaN}}\n',
            "nan.jsonl:1: the value of data.tokens is not a finite number",
        ),
    ],
)
def test_import_rejects_non_finite_number(tenant, cli_env, tmp_path: Path, name: str, content: str, line: str):
    path = tmp_path / name
    path.write_text(content)

    result = invoke(cli_env, "import", "signals", str(path))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [error] = error_lines(result.output)
    assert error.startswith(f"Error: {tmp_path / line}")
    assert tenant.http.get("/signals/").json()["pagination"]["total"] == 0


def test_import_rejects_non_utf8_file(tenant, cli_env, tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("event_name,customer\nchat_message,café\n".encode("latin-1"))

    result = invoke(cli_env, "import", "signals", str(path))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert error_lines(result.output) == [f"Error: {path}:2: the file is not UTF-8 text; save it as UTF-8 and try again"]


def test_import_help_documents_format(cli_env):
    result = invoke(cli_env, "import", "signals", "--help")

    assert result.exit_code == 0
    assert "event_name,customer,product,idempotency_key,data.minutes_saved" in result.output
    assert '{"event_name": "chat_message", "customer": "alice"' in result.output


def test_apply_rejects_non_utf8_file(cli_env, tmp_path: Path):
    path = tmp_path / "catalog.yaml"
    path.write_bytes("currencies:\n  - key: chat\n    name: Caf\xe9\n".encode("latin-1"))

    result = invoke(cli_env, "apply", str(path))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{path}:3: the file is not UTF-8 text" in result.output


def test_value_model_upload_rejects_non_utf8_file(cli_env, tmp_path: Path):
    path = tmp_path / "model.yaml"
    path.write_bytes(b"valueTypes: []\nname: caf\xe9\n")

    result = invoke(cli_env, "value-models", "upload", str(path))

    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"{path}:2: the file is not UTF-8 text" in result.output


def test_value_model_show_names_upload_command(cli_env):
    result = invoke(cli_env, "value-models", "show")

    assert result.exit_code == 1
    assert "tallystick value-models upload FILE" in result.output
    assert "PUT /value-models/" not in result.output


@pytest.mark.parametrize("timeout", ["1e10", "inf", "nan"])
def test_backfill_rejects_huge_timeout(cli_env, timeout: str):
    result = invoke(cli_env, "value-models", "backfill", "--timeout", timeout)

    assert result.exit_code == 2
    assert "Invalid value for '--timeout'" in result.output


@pytest.mark.parametrize("target", ["missing-folder/catalog.yaml", "."])
def test_export_to_unwritable_path(cli_env, tmp_path: Path, target: str):
    output = tmp_path / target

    result = invoke(cli_env, "export", "--output", str(output))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [error] = error_lines(result.output)
    assert error.startswith(f"Error: cannot write {output}: ")


def test_api_keys_list_unknown_org_json(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner.invoke(app, ["api-keys", "create", "--org", "Acme AI", "--database-url", url])

    result = runner.invoke(app, ["api-keys", "list", "--org", "nobody", "--database-url", url, "--json"])

    assert result.exit_code == 1
    assert json.loads(result.stdout) == []
    assert "No API keys for organization 'nobody'" in result.stderr
