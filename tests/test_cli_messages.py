"""Help texts and messages of the CLI read as sentences about this installation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tallystick.cli.main import app
from tallystick.server.db import Store
from tallystick.server.encryption import generate_key
from tallystick.server.migrate import upgrade_to_head
from tallystick.server.models import ServerSecret
from tallystick.server.settings import get_settings

runner = CliRunner()


@pytest.fixture
def one_secret_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Yield the URL of a SQLite store with one stored secret, with an encryption key set."""
    url = f"sqlite:///{tmp_path / 'secrets.db'}"
    upgrade_to_head(url)
    store = Store.open(url)
    with store.transaction() as session:
        session.add(ServerSecret(name="secret_key", value="signing-key"))
    store.dispose()
    monkeypatch.setenv("TALLYSTICK_ENCRYPTION_KEYS", generate_key())
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_encrypt_counts_one_secret(one_secret_database: str):
    result = runner.invoke(app, ["secrets", "encrypt", "--database-url", one_secret_database])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Encrypted 1 stored secret with the first key."


def test_users_help_names_set_password():
    result = runner.invoke(app, ["users", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    assert "Create and list dashboard operator accounts and replace their passwords." in result.output
    assert "set-password" in result.output


@pytest.mark.parametrize(
    ("command", "paragraph"),
    [
        (
            ["grants", "list", "--help"],
            'With --json the command prints them as {"data": [...]}, each grant with its currency',
        ),
        (
            ["secrets", "encrypt", "--help"],
            "Run it after setting the keys for the first time, and after putting a new key first, so that secrets",
        ),
    ],
)
def test_help_paragraphs_have_no_hard_breaks(command: list[str], paragraph: str):
    result = runner.invoke(app, command, env={"COLUMNS": "200"})

    assert result.exit_code == 0
    assert paragraph in result.output
