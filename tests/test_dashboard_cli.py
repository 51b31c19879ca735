"""`tallystick users`: operators created and given new passwords from the command line can sign
in to the dashboard of the server that shares their database."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from tallystick.cli.main import app
from tests.dashboard_helpers import DashboardClient, Operator

runner = CliRunner()


@pytest.fixture
def browser(server) -> Iterator[DashboardClient]:  # type: ignore[no-untyped-def]
    client = DashboardClient(server.root)
    yield client
    client.close()


def users(database_url: str, *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["users", *args, "--database-url", database_url], input=stdin)


def test_created_operator_signs_in(server, browser, tenant, store):
    from tallystick.server.models import Organization

    with store.read_sessions() as session:
        organization = session.get(Organization, tenant.organization_id).name

    result = users(server.database_url, "create", "--org", organization, "--email", "cli-op@example.com", "--json")

    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["organizationId"] == tenant.organization_id
    assert len(created["password"]) == 24
    assert browser.sign_in(Operator("cli-op@example.com", created["password"])).status_code == 303


def test_password_from_stdin_is_not_printed(server, browser):
    result = users(
        server.database_url, "create", "--org", "cli-org", "--email", "stdin-op@example.com", "--password-stdin",
        stdin="a long enough password\n",
    )

    assert result.exit_code == 0, result.output
    assert "a long enough password" not in result.output
    assert browser.sign_in(Operator("stdin-op@example.com", "a long enough password")).status_code == 303


def test_duplicate_email_and_short_password_fail(server):
    users(server.database_url, "create", "--org", "cli-org", "--email", "twice@example.com")

    duplicate = users(server.database_url, "create", "--org", "cli-org", "--email", "TWICE@example.com")
    short = users(
        server.database_url, "create", "--org", "cli-org", "--email", "short@example.com", "--password-stdin", stdin="short\n"
    )

    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output
    assert short.exit_code == 1
    assert "12 to 1024 characters" in short.output


def test_set_password_ends_sessions(server, browser):
    users(
        server.database_url, "create", "--org", "cli-org", "--email", "reset-op@example.com", "--password-stdin",
        stdin="the first password\n",
    )
    browser.sign_in(Operator("reset-op@example.com", "the first password"))

    result = users(server.database_url, "set-password", "--email", "reset-op@example.com", "--password-stdin", stdin="the second password\n")

    assert result.exit_code == 0, result.output
    assert browser.get("/dashboard").status_code == 303
    assert browser.sign_in(Operator("reset-op@example.com", "the first password")).status_code == 401
    assert browser.sign_in(Operator("reset-op@example.com", "the second password")).status_code == 303
