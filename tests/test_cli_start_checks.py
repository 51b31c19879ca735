"""`tallystick serve` and `migrate` stop with one line on settings, options and URLs they cannot use."""

from __future__ import annotations

import os
import socket
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


def test_serve_rejects_unknown_log_level_plainly(tmp_path: Path):
    result = _serve(tmp_path, {}, "--log-level", "loud")

    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "'loud' is not one of debug, info, warning, error, critical" in output
    assert "Value error" not in output


def test_serve_on_busy_port_leaves_database_alone(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        url = f"sqlite:///{tmp_path / 'start.db'}"

        result = subprocess.run(
            [sys.executable, "-m", "tallystick.cli.main", "serve", "--database-url", url, "--port", str(port)],
            env={**os.environ, "COLUMNS": "400"},
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; stop the program that uses it "
        "or pass --port with a free port"
    ]
    assert not (tmp_path / "start.db").exists()


def test_sqlite_folder_advice(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'missing-folder' / 'x.db'}"

    result = runner.invoke(app, ["migrate", "--database-url", url], env={"COLUMNS": "400"})

    assert result.exit_code == 1
    assert "the file's folder must exist and be writable" in result.output
    assert "PostgreSQL" not in result.output


def test_migrate_rejects_file_that_is_no_database(tmp_path: Path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database, only text\n" * 100)

    result = runner.invoke(app, ["migrate", "--database-url", f"sqlite:///{junk}"], env={"COLUMNS": "400"})

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.startswith(f"Error: cannot open the database sqlite:///{junk}: file is not a database.")


@pytest.mark.parametrize("port", ["0", "99999"])
def test_demo_rejects_invalid_port(port: str):
    result = runner.invoke(app, ["demo", "--port", port, "--no-serve"], env={"COLUMNS": "400"})

    assert result.exit_code == 2
    assert "Invalid value for '--port'" in result.output


def test_demo_rejects_missing_database_folder(tmp_path: Path):
    database = tmp_path / "missing-folder" / "demo.db"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    # A child process, since the demo configures logging for the whole process.
    result = subprocess.run(
        [sys.executable, "-m", "tallystick.cli.main", "demo", "--port", str(port), "--database", str(database)],
        env={**os.environ, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"Error: the folder {database.parent} of --database does not exist; create it or pass another --database"
    ]


def test_version_option():
    from tallystick import __version__

    result = runner.invoke(app, ["--version"])

    assert result.exit_code == 0
    assert result.output.strip() == __version__


def test_launcher_without_server_extra():
    # `pip install tallystick` installs the script but not typer; None in sys.modules makes
    # the import fail as it would there.
    code = "import sys; sys.modules['typer'] = None; from tallystick.cli import run; run()"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "Error: the tallystick command needs the server extra, but the module 'typer' is not installed. "
        "Install it with: pip install 'tallystick[server]'"
    ]
