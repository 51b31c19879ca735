"""`tallystick serve` and `migrate` stop with one line on settings, options and URLs they cannot use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tallystick.cli.main import app

runner = CliRunner()

BAD_SETTINGS = [
    (
        {"TALLYSTICK_RATE_LIMIT": "abc"},
        "Error: invalid setting TALLYSTICK_RATE_LIMIT='abc': must be a rate such as 1000/second or 60000/minute, or off",
    ),
    (
        {"TALLYSTICK_RATE_LIMIT": "0/second"},
        "Error: invalid setting TALLYSTICK_RATE_LIMIT='0/second': must allow at least 1 request; use off to turn "
        "the limit off",
    ),
    (
        {"TALLYSTICK_INGESTION_CONCURRENCY": "0"},
        "Error: invalid setting TALLYSTICK_INGESTION_CONCURRENCY='0': Input should be greater than or equal to 1",
    ),
    (
        {"TALLYSTICK_RENEWAL_PAYMENT_RETRY_HOURS": "abc"},
        "Error: invalid setting TALLYSTICK_RENEWAL_PAYMENT_RETRY_HOURS: must be JSON, such as [24.0, 72.0, 120.0]",
    ),
]


def _serve(tmp_path: Path, environment: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    # A child process, since serve configures logging for the whole process.
    url = f"sqlite:///{tmp_path / 'start.db'}"
    return subprocess.run(
        [sys.executable, "-m", "tallystick.cli.main", "serve", "--database-url", url, "--port", "9", *options],
        env={**os.environ, "COLUMNS": "400", **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("environment", "line"), BAD_SETTINGS)
def test_serve_rejects_bad_setting(tmp_path: Path, environment: dict[str, str], line: str):
    # Two workers: a setting that failed in each worker would restart them without end.
    result = _serve(tmp_path, environment, "--workers", "2")

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert line in output.splitlines()
    # Nothing was migrated: the checks run before the database is opened.
    assert not (tmp_path / "start.db").exists()


def test_serve_hides_secret_setting_value(tmp_path: Path):
    storage_url = "redis://:hunter2@127.0.0.1:1/0?nonsense_option=1"
    result = _serve(tmp_path, {"TALLYSTICK_RATE_LIMIT_STORAGE_URL": storage_url})

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.startswith("Error:")
    assert "hunter2" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--log-level", "verbose"], "Invalid value for '--log-level'"),
        (["--port", "99999"], "Invalid value for '--port'"),
        (["--port", "0"], "Invalid value for '--port'"),
    ],
)
def test_serve_rejects_bad_option(tmp_path: Path, options: list[str], message: str):
    result = _serve(tmp_path, {}, *options)

    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "start.db").exists()


@pytest.mark.parametrize(
    ("url", "line"),
    [
        ("notaurl", "Error: the database URL cannot be parsed."),
        (
            "mysql://root:secret@127.0.0.1/shop",
            "Error: the database URL mysql://root:***@127.0.0.1/shop names mysql, but tallystick runs on SQLite and "
            "on PostgreSQL with psycopg.",
        ),
        (
            "postgresql+psycopg2://app:secret@127.0.0.1/shop",
            "Error: the database URL postgresql+psycopg2://app:***@127.0.0.1/shop names postgresql+psycopg2, but "
            "tallystick runs on SQLite and on PostgreSQL with psycopg.",
        ),
    ],
)
def test_unusable_database_url_prints_one_line(url: str, line: str):
    result = runner.invoke(app, ["migrate", "--database-url", url], env={"COLUMNS": "400"})

    assert result.exit_code == 1
    assert result.output.startswith(line)
    assert "secret" not in result.output
    assert "Traceback" not in result.output


def test_serve_accepts_log_level_in_capitals(tmp_path: Path):
    # An invalid setting stops serve after the options are read, so the level was accepted.
    result = _serve(tmp_path, {"TALLYSTICK_INGESTION_CONCURRENCY": "0"}, "--log-level", "WARNING")

    assert result.returncode == 1
    assert "TALLYSTICK_INGESTION_CONCURRENCY" in result.stdout + result.stderr
