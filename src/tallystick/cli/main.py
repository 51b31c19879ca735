"""`tallystick` command: run the server and manage API keys."""

from __future__ import annotations

import json
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tallystick import __version__
from tallystick.cli import resources
from tallystick.cli.catalog_commands import apply, export
from tallystick.cli.importer import import_app
from tallystick.cli.output import console, error_console, print_error, print_table
from tallystick.cli.secrets import secrets_app
from tallystick.cli.users import users_app

app = typer.Typer(
    name="tallystick",
    help="Self-hostable billing engine for AI products.",
    no_args_is_help=True,
    add_completion=False,
)
api_keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(api_keys_app, name="api-keys")

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TALLYSTICK_DATABASE_URL",
        help="SQLAlchemy URL of the store, such as sqlite:///tallystick.db or "
        "postgresql://user@host:5432/db. Default: tallystick.db in the working directory.",
        show_default=False,
    ),
]


def _database_url(value: str | None) -> str:
    from tallystick.server.settings import default_database_url

    return value or default_database_url()


def check_settings() -> None:
    """Exit with one line per problem when the TALLYSTICK_* settings are invalid."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError
    from rich.markup import escape

    from tallystick.server.settings import get_settings

    try:
        get_settings()
    except ValidationError as error:
        for problem in error.errors():
            error_console.print(f"[red]Error:[/red] {escape(_setting_problem(problem))}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    except SettingsError as error:
        # pydantic-settings raises this when a list setting is not JSON, naming the field.
        match = re.search(r'field "(\w+)"', str(error))
        field = match.group(1) if match else None
        error_console.print(f"[red]Error:[/red] {escape(_unparsed_setting(field))}", soft_wrap=True)
        raise typer.Exit(code=1) from None


# Settings whose values are not repeated in errors: they may contain passwords or keys.
_HIDDEN_SETTINGS = frozenset({"database_url", "secret_key", "encryption_keys", "rate_limit_storage_url"})


def _setting_problem(problem: Any) -> str:
    """Describe one validation problem of the settings, naming the environment variable."""
    message = problem["msg"].removeprefix("Value error, ")
    if not problem["loc"]:
        # A check across settings, whose message names them.
        return f"invalid setting: {message}"
    field = str(problem["loc"][0])
    variable = f"TALLYSTICK_{field.upper()}"
    if field in _HIDDEN_SETTINGS or "input" not in problem:
        return f"invalid setting {variable}: {message}"
    return f"invalid setting {variable}={problem['input']!r}: {message}"


def _unparsed_setting(field: str | None) -> str:
    from tallystick.server.settings import Settings

    if field is None or field not in Settings.model_fields:
        return "invalid setting: a TALLYSTICK_* value that must be JSON could not be parsed"
    info = Settings.model_fields[field]
    default = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    return f"invalid setting TALLYSTICK_{field.upper()}: must be JSON, such as {json.dumps(default)}"


def check_rate_limit_storage() -> None:
    """Exit with one line when TALLYSTICK_RATE_LIMIT_STORAGE_URL is invalid.

    Every server process would fail the same way while building its app, each with a
    traceback. Checking first prints one clear line.
    """
    from rich.markup import escape

    from tallystick.server.rate_limit import RateLimitStorageError, build_storage
    from tallystick.server.settings import get_settings

    settings = get_settings()
    try:
        build_storage(settings.rate_limit_storage_url.get_secret_value(), settings.rate_limit_key_prefix)
    except RateLimitStorageError as error:
        error_console.print(f"[red]Error:[/red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(code=1) from None


def open_database_or_exit(database_url: str) -> None:
    """Open one connection to the database, or exit with one line when it cannot be opened.

    Only this probe is turned into the one-line message: an error of a migration itself, such
    as a lock timeout, keeps its traceback.
    """
    from rich.markup import escape
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DatabaseError

    from tallystick.server.db import normalize_database_url

    problem = _database_url_problem(database_url)
    if problem is not None:
        error_console.print(
            f"[red]Error:[/red] {escape(problem)}. Use sqlite:///path/to/file.db or "
            "postgresql://user@host:5432/dbname in TALLYSTICK_DATABASE_URL or --database-url.",
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    engine = create_engine(normalize_database_url(database_url))
    is_sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as connection:
            if is_sqlite:
                # SQLite reads the file only at the first statement, which fails for a file that is no database.
                connection.exec_driver_sql("PRAGMA schema_version")
    except DatabaseError as error:
        shown_url = make_url(database_url).render_as_string(hide_password=True)
        reason = (str(error.orig).strip().splitlines() or ["unknown error"])[0].rstrip(".")
        if is_sqlite:
            advice = "tallystick creates the SQLite file and its tables, but the file's folder must exist and be writable."
        else:
            advice = "tallystick creates its tables, but a PostgreSQL database must be created first (createdb NAME)."
        print_error(
            f"cannot open the database {shown_url}: {reason}. Check TALLYSTICK_DATABASE_URL or --database-url. {advice}"
        )
        raise typer.Exit(code=1) from None
    finally:
        engine.dispose()


def _database_url_problem(database_url: str) -> str | None:
    """Return why `database_url` names no database that tallystick runs on, or None."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(database_url)
    except ArgumentError:
        # Not echoed, since a mistyped URL may still contain a password.
        return "the database URL cannot be parsed"
    if parsed.drivername in _SUPPORTED_DRIVERS:
        return None
    masked_url = parsed.render_as_string(hide_password=True)
    return f"the database URL {masked_url} names {parsed.drivername}, but tallystick runs on SQLite and on PostgreSQL with psycopg"


# URL schemes that the server opens. SQLite goes through Python's sqlite3 and PostgreSQL through
# psycopg 3, to which a plain postgresql:// URL is mapped.
_SUPPORTED_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg"})


def migrate_or_exit(database_url: str) -> str | None:
    """Bring the schema up to date, or exit with one line when the database cannot be opened.

    Return the schema revision found before migrating (see `upgrade_to_head`).
    """
    from tallystick.server.migrate import upgrade_to_head

    open_database_or_exit(database_url)
    return upgrade_to_head(database_url)


def check_stored_secrets(database_url: str) -> None:
    """Exit with one line when a stored secret cannot be decrypted with the configured keys."""
    from sqlalchemy import select

    from tallystick.server.db import Store
    from tallystick.server.encryption import EncryptionKeyError
    from tallystick.server.models import ServerSecret

    store = Store.open(database_url)
    try:
        with store.read_sessions() as session:
            session.scalars(select(ServerSecret)).all()
    except EncryptionKeyError as error:
        print_error(str(error))
        raise typer.Exit(code=1) from None
    finally:
        store.dispose()


def _configure_logging(level: str) -> None:
    from tallystick.server.observability import configure_logging

    configure_logging(level)


@app.command()
def version() -> None:
    """Print the tallystick version."""
    console.print(__version__)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the tallystick version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Self-hostable billing engine for AI products."""


class LogLevel(str, Enum):
    """Levels of the server's log, from the most detailed."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


def _parse_log_level(text: str) -> LogLevel:
    # A parser, since typer's own check of an Enum option prefixes its message with
    # pydantic's "Value error, ".
    for level in LogLevel:
        if level.value == text.lower():
            return level
    raise typer.BadParameter(f"{text!r} is not one of " + ", ".join(level.value for level in LogLevel))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.", min=1, max=65535)] = 8000,
    database_url: DatabaseUrlOption = None,
    workers: Annotated[int, typer.Option(help="Number of server processes.", min=1)] = 1,
    log_level: Annotated[
        LogLevel, typer.Option(help="Logging level.", parser=_parse_log_level, case_sensitive=False)
    ] = LogLevel.info,
) -> None:
    """Run the API server. Migrations run before it accepts requests."""
    import uvicorn

    from tallystick.cli.ports import listen_problem
    from tallystick.server.observability import logging_config

    level = log_level.value
    _configure_logging(level)
    check_settings()
    check_rate_limit_storage()
    # Checked before migrating, so that a second `serve` on a busy port leaves the database alone.
    problem = listen_problem(host, port)
    if problem is not None:
        print_error(problem)
        raise typer.Exit(code=1)
    url = _database_url(database_url)
    migrate_or_exit(url)
    check_stored_secrets(url)
    # Worker processes build their app from the environment, so pass the URL down that way.
    os.environ["TALLYSTICK_DATABASE_URL"] = url
    uvicorn.run(
        "tallystick.server.app:create_app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=level,
        # The app logs each request as request.finished, by route template; uvicorn's access
        # log would print raw paths and query strings, which carry tokens.
        access_log=False,
        log_config=logging_config(level),
    )


@app.command()
def migrate(database_url: DatabaseUrlOption = None) -> None:
    """Bring the database schema up to date without starting the server."""
    from tallystick.server.migrate import current_revision

    url = _database_url(database_url)
    before = migrate_or_exit(url)
    after = current_revision(url)
    if before == after:
        console.print(f"Database schema is up to date (revision {after}).")
    elif before is None:
        console.print(f"Database schema created (revision {after}).")
    else:
        console.print(f"Database schema upgraded from revision {before} to {after}.")


@api_keys_app.command("create")
def api_keys_create(
    org: Annotated[str, typer.Option("--org", help="Organization name; created if missing.")],
    name: Annotated[str, typer.Option(help="Label for the key, shown in listings.")] = "",
    database_url: DatabaseUrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create an API key. The key is printed once and stored only as a hash."""
    from tallystick.server.api_keys import create_api_key
    from tallystick.server.db import Store

    url = _database_url(database_url)
    migrate_or_exit(url)
    store = Store.open(url)
    try:
        with store.transaction() as session:
            created = create_api_key(session, org, name)
    finally:
        store.dispose()

    if as_json:
        typer.echo(
            json.dumps(
                {"organizationId": created.organization_id, "apiKey": created.secret, "apiKeyId": created.api_key_id}
            )
        )
        return
    console.print(f"Organization: [bold]{escape(org)}[/bold] ({created.organization_id})", soft_wrap=True)
    console.print(f"API key id:   {created.api_key_id}")
    console.print(f"API key:      [bold]{created.secret}[/bold]")
    console.print("Store the key now: it is not shown again.")


@api_keys_app.command(
    "list",
    # Each help paragraph is one string, because typer prints a docstring's line breaks as they are.
    help="List API keys (their prefixes only; secrets are never stored).\n\n"
    "With --org, an organization without keys is an error: the command prints why on standard error and "
    "exits with 1, after printing [] with --json.",
)
def api_keys_list(
    org: Annotated[str | None, typer.Option("--org", help="Only this organization's keys.")] = None,
    database_url: DatabaseUrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    from tallystick.server.api_keys import list_api_keys
    from tallystick.server.db import Store

    url = _database_url(database_url)
    migrate_or_exit(url)
    store = Store.open(url)
    try:
        with store.transaction() as session:
            rows = list_api_keys(session, org)
            items = [
                {
                    "id": key.id,
                    "organizationId": organization.id,
                    "organization": organization.name,
                    "name": key.name,
                    "prefix": key.key_prefix,
                    "createdAt": key.created_at.isoformat(),
                    "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
                }
                for key, organization in rows
            ]
    finally:
        store.dispose()

    if as_json:
        typer.echo(json.dumps(items))
    if org is not None and not items:
        error_console.print(
            f"No API keys for organization {escape(repr(org))}; check its name with `tallystick api-keys list`.",
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    if as_json:
        return
    print_table(
        items,
        [
            ("organization", "organization"),
            ("name", "name"),
            ("prefix", lambda item: item["prefix"] + "..."),
            ("created", lambda item: item["createdAt"][:19]),
            ("revoked", lambda item: (item["revokedAt"] or "")[:19]),
            ("id", "id"),
        ],
    )


@api_keys_app.command("revoke")
def api_keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Id of the key to revoke (key_...).")],
    database_url: DatabaseUrlOption = None,
) -> None:
    """Revoke an API key. Servers reject it within TALLYSTICK_API_KEY_CACHE_SECONDS (default 5 s)."""
    from tallystick.server.api_keys import revoke_api_key
    from tallystick.server.db import Store

    url = _database_url(database_url)
    migrate_or_exit(url)
    store = Store.open(url)
    try:
        with store.transaction() as session:
            api_key = revoke_api_key(session, key_id)
    finally:
        store.dispose()
    if api_key is None:
        error_console.print(f"API key {escape(repr(key_id))} not found.", soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(f"Revoked API key {escape(key_id)}.", soft_wrap=True)


@app.command()
def demo(
    messages: Annotated[int, typer.Option(help="Chat messages to send.", min=1, max=10_000)] = 40,
    port: Annotated[int, typer.Option(help="TCP port of the tallystick server.", min=1, max=65535)] = 8000,
    database: Annotated[
        Path, typer.Option(help="SQLite file for the demo; it is recreated on every run.")
    ] = Path("tallystick-demo.db"),
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Exit after the summary instead of serving until Ctrl-C.")
    ] = False,
) -> None:
    """Run the integration guide end to end: catalog, checkout, traced chat, signals, summary."""
    from tallystick.demo.run import DemoError, run_demo
    from tallystick.server.observability import configure_logging

    # Plain lines rather than JSON: the demo's output is read by a person.
    configure_logging("warning", json_format=False)
    try:
        run_demo(messages=messages, port=port, database=database, console=console, serve=not no_serve)
    except DemoError as error:
        print_error(str(error))
        raise typer.Exit(code=1) from None


app.command()(apply)
app.command()(export)
resources.register(app)
app.add_typer(import_app, name="import")
app.add_typer(users_app, name="users")
app.add_typer(secrets_app, name="secrets")


def run() -> None:
    app()


if __name__ == "__main__":
    run()
