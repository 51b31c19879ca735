"""Running the `tallystick` command in process against a test server."""

from __future__ import annotations

from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from tallystick.cli.main import app

runner = CliRunner()


def api_env(tenant: Any, columns: int = 200) -> dict[str, str]:
    """Return the environment that points the CLI's API commands at the tenant's server."""
    return {"TALLYSTICK_API_URL": tenant.server.root, "TALLYSTICK_API_KEY": tenant.api_key, "COLUMNS": str(columns)}


def invoke(env: dict[str, str], *args: str) -> Result:
    return runner.invoke(app, list(args), env=env)
