"""`tallystick users`: operator accounts that sign in to the dashboard."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape

from tallystick.cli.output import console, error_console, print_table

users_app = typer.Typer(
    help="Create and list dashboard operator accounts and replace their passwords.", no_args_is_help=True
)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TALLYSTICK_DATABASE_URL",
        help="SQLAlchemy URL of the store. Default: tallystick.db in the working directory.",
        show_default=False,
    ),
]


def _open_store(database_url: str | None):  # type: ignore[no-untyped-def]
    from tallystick.cli.main import migrate_or_exit
    from tallystick.server.db import Store
    from tallystick.server.settings import default_database_url

    url = database_url or default_database_url()
    migrate_or_exit(url)
    return Store.open(url)


@users_app.command("create")
def users_create(
    org: Annotated[str, typer.Option("--org", help="Organization name; created if missing.")],
    email: Annotated[str, typer.Option("--email", help="The operator's email, used to sign in.")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from the first line of standard input instead of generating one.",
        ),
    ] = False,
    database_url: DatabaseUrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create an operator. A generated password is printed once; only its hash is stored."""
    from tallystick.server.api_keys import get_or_create_organization
    from tallystick.server.dashboard.operators import (
        OperatorError,
        create_operator,
        generate_password,
    )

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else generate_password()
    store = _open_store(database_url)
    try:
        with store.transaction() as session:
            organization = get_or_create_organization(session, org)
            operator = create_operator(session, organization_id=organization.id, email=email, password=password)
            result = {"organizationId": organization.id, "operatorId": operator.id, "email": operator.email}
    except OperatorError as error:
        error_console.print(f"Cannot create the operator: {escape(str(error))}.", soft_wrap=True)
        raise typer.Exit(code=1) from None
    finally:
        store.dispose()

    if not password_stdin:
        result["password"] = password
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(
        f"Operator {escape(result['email'])} ({result['operatorId']}) of organization {escape(org)} created.",
        soft_wrap=True,
    )
    if not password_stdin:
        console.print(f"Password: [bold]{escape(password)}[/bold]", soft_wrap=True)
        console.print("Store the password now: it is not shown again.", soft_wrap=True)
    console.print(
        "Sign in at /dashboard/login on the tallystick server, such as http://127.0.0.1:8000/dashboard/login "
        "for `tallystick serve` with its default host and port.",
        soft_wrap=True,
    )


@users_app.command("set-password")
def users_set_password(
    email: Annotated[str, typer.Option("--email", help="The operator's email.")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from the first line of standard input instead of generating one.",
        ),
    ] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Replace an operator's password, ending their sessions. A generated password is printed once."""
    from tallystick.server.dashboard.operators import (
        OperatorError,
        find_operator_by_email,
        generate_password,
        set_password,
    )

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else generate_password()
    store = _open_store(database_url)
    try:
        with store.transaction() as session:
            operator = find_operator_by_email(session, email)
            if operator is None:
                error_console.print(f"No operator has the email {escape(email)}.", soft_wrap=True)
                raise typer.Exit(code=1)
            set_password(session, operator, password)
    except OperatorError as error:
        error_console.print(f"Cannot set the password: {escape(str(error))}.", soft_wrap=True)
        raise typer.Exit(code=1) from None
    finally:
        store.dispose()

    console.print(f"Password of {escape(email)} replaced; their dashboard sessions have ended.", soft_wrap=True)
    if not password_stdin:
        console.print(f"Password: [bold]{escape(password)}[/bold]", soft_wrap=True)
        console.print("Store the password now: it is not shown again.", soft_wrap=True)


@users_app.command("list")
def users_list(database_url: DatabaseUrlOption = None) -> None:
    """List operators with their organization and last sign-in."""
    from tallystick.server.dashboard.operators import list_operators
    from tallystick.server.models import Organization

    store = _open_store(database_url)
    try:
        with store.transaction() as session:
            rows = [
                (operator.id, operator.email, session.get(Organization, operator.organization_id), operator.last_login_at)
                for operator in list_operators(session)
            ]
            items = [
                (operator_id, email, organization.name if organization else "", last.isoformat() if last else "")
                for operator_id, email, organization, last in rows
            ]
    finally:
        store.dispose()
    print_table(
        [dict(zip(("id", "email", "organization", "lastSignIn"), item, strict=True)) for item in items],
        [("id", "id"), ("email", "email"), ("organization", "organization"), ("last sign-in", "lastSignIn")],
    )
