"""Shared CLI plumbing: API client options, JSON or table output, and API error reporting."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated, Any

import httpx
import typer
from babel.numbers import format_currency, get_currency_precision
from rich.console import Console
from rich.table import Table

from tallystick._http import encode_json
from tallystick.client import ApiError, Client

console = Console()
error_console = Console(stderr=True)

ApiUrlOption = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        envvar="TALLYSTICK_API_URL",
        help="Server root, such as http://127.0.0.1:8000 (the CLI adds /api/v2).",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="TALLYSTICK_API_KEY", help="Secret API key.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]


@contextmanager
def api_client(api_url: str | None, api_key: str | None, *, timeout: float | None = None) -> Iterator[Client]:
    """Yield a client, turning API and connection errors into a message and exit code 1.

    `timeout` (seconds) replaces the SDK's default request timeout.
    """
    if not (api_key or os.environ.get("TALLYSTICK_API_KEY")):
        error_console.print(
            "[red]Error:[/red] no API key: pass --api-key or set TALLYSTICK_API_KEY "
            "(create one with `tallystick api-keys create --org NAME`)",
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    try:
        options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        client = Client(api_url=api_url, api_key=api_key, **options)
    except ValueError as error:
        error_console.print(f"[red]Error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    try:
        yield client
    except ApiError as error:
        error_console.print(f"[red]Error {error.status}:[/red] {error.message}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    except httpx.HTTPError as error:
        error_console.print(
            f"[red]Error:[/red] cannot reach the tallystick server at {client.api_url}: {error}. "
            "Check --api-url (or TALLYSTICK_API_URL) and that the server is running.",
            soft_wrap=True,
        )
        raise typer.Exit(code=1) from None
    finally:
        client.close()


def print_json(value: Any) -> None:
    """Print `value` as one line of JSON, with decimals written exactly as the server sent them."""
    typer.echo(encode_json(value).decode("utf-8"))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str | Callable[[dict[str, Any]], Any]]]) -> None:
    """Print `rows` with one column per (title, key or function) pair.

    An "id" column keeps its values whole on a narrow terminal, since they are copied into
    other commands; the other columns wrap instead.
    """
    body = []
    for row in rows:
        cells = []
        for _, getter in columns:
            value = getter(row) if callable(getter) else row.get(getter)
            cells.append("" if value is None else str(value))
        body.append(cells)
    table = Table()
    for index, (title, _) in enumerate(columns):
        if title == "id":
            widest = max((len(cells[index]) for cells in body), default=len(title))
            table.add_column(title, no_wrap=True, min_width=max(widest, len(title)))
        else:
            table.add_column(title)
    for cells in body:
        table.add_row(*cells)
    console.print(table)


def print_record(record: dict[str, Any], fields: Sequence[str | tuple[str, Callable[[dict[str, Any]], Any]]]) -> None:
    """Print one `name  value` line per field. A field is a key of `record` or a (name, function) pair."""
    named = [(field, None) if isinstance(field, str) else field for field in fields]
    width = max(len(name) for name, _ in named)
    for name, getter in named:
        value = getter(record) if getter is not None else record.get(name)
        console.print(f"{name.ljust(width)}  {'' if value is None else value}")


def money_text(minor_units: int | None, currency: str | None) -> str | None:
    """Format an amount in minor units of `currency` (cents for USD), such as 19900 USD -> "$199.00"."""
    if minor_units is None or not currency:
        return None
    amount = Decimal(minor_units).scaleb(-get_currency_precision(currency))
    return format_currency(amount, currency, locale="en_US")
