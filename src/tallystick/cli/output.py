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
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tallystick._http import DEFAULT_TIMEOUT, encode_json
from tallystick.client import ApiError, Client

# Values from users and the server are printed as rich Text or escaped, never as markup.
# Emoji codes such as :smile: are off too, so a name containing one prints as typed.
console = Console(emoji=False)
error_console = Console(stderr=True, emoji=False)

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
RequestTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        help="Seconds to wait for each attempt of a request; the client retries a few failures. "
        f"Default: {DEFAULT_TIMEOUT:g}.",
        min=0.1,
        # A day: sockets raise OverflowError for timeouts such as 1e10 s.
        max=86_400,
        show_default=False,
    ),
]


def print_error(message: str, *, label: str = "Error:") -> None:
    """Print `label` in red, then `message` as plain text, on standard error."""
    error_console.print(Text.assemble((label, "red"), " ", message), soft_wrap=True)


def require_id(value: str) -> str:
    """Reject an id argument that cannot name one item.

    An empty id would address the list route. The SDK's `segment` leaves dots alone, and an
    HTTP client resolves "." and ".." as relative path steps, which leads to another route.
    """
    if not value.strip():
        raise typer.BadParameter("must not be empty")
    if value in (".", ".."):
        raise typer.BadParameter(f"{value!r} is not a valid id")
    return value


@contextmanager
def api_client(api_url: str | None, api_key: str | None, *, timeout: float | None = None) -> Iterator[Client]:
    """Yield a client, turning API and connection errors into a message and exit code 1.

    `timeout` (seconds) replaces the SDK's default request timeout.
    """
    if not (api_key or os.environ.get("TALLYSTICK_API_KEY")):
        print_error(
            "no API key: pass --api-key or set TALLYSTICK_API_KEY "
            "(create one with `tallystick api-keys create --org NAME`)"
        )
        raise typer.Exit(code=1)
    try:
        options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        client = Client(api_url=api_url, api_key=api_key, **options)
    except ValueError as error:
        print_error(str(error))
        raise typer.Exit(code=1) from None
    try:
        yield client
    except ApiError as error:
        print_error(error.message, label=f"Error {error.status}:")
        raise typer.Exit(code=1) from None
    except httpx.HTTPError as error:
        reason = str(error).rstrip(".")
        print_error(
            f"cannot reach the tallystick server at {client.api_url}: {reason}. "
            "Check --api-url (or TALLYSTICK_API_URL) and that the server is running."
        )
        raise typer.Exit(code=1) from None
    finally:
        client.close()


def print_json(value: Any) -> None:
    """Print `value` as one line of JSON, with decimals written exactly as the server sent them."""
    typer.echo(encode_json(value).decode("utf-8"))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str | Callable[[dict[str, Any]], Any]]]) -> None:
    """Print `rows` with one column per (title, key or function) pair.

    No value is cut short. Columns of single words, such as ids, timestamps and amounts, stay
    on one line while the row still fits the terminal, because they are copied into other
    commands. Every other column wraps, and a word longer than its column folds onto the next
    line.
    """
    titles = [title for title, _ in columns]
    body = []
    for row in rows:
        cells = []
        for _, getter in columns:
            value = getter(row) if callable(getter) else row.get(getter)
            cells.append("" if value is None else str(value))
        body.append(cells)
    target = _table_console(titles, body)
    unbroken = _unbroken_columns(titles, body, target.width)
    table = Table()
    for index, title in enumerate(titles):
        table.add_column(title, no_wrap=index in unbroken, overflow="fold")
    for cells in body:
        table.add_row(*(Text(cell) for cell in cells))
    target.print(table)


def _table_console(titles: Sequence[str], body: Sequence[Sequence[str]]) -> Console:
    """Return the console to print a table on: `console`, or a wider one for piped output.

    Output to a pipe or file has no width, and rich then assumes 80 columns, which would fold
    the rows that scripts and grep read. Such output gets the table's full width unless
    COLUMNS sets one.
    """
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    natural = [max([cell_len(title), *(cell_len(cells[index]) for cells in body)]) for index, title in enumerate(titles)]
    full_width = 1 + sum(size + 3 for size in natural)
    if full_width <= console.width:
        return console
    return Console(width=full_width, emoji=False)


# Widths that a column which is not kept whole still gets when others are kept whole: a text
# column wraps between words, and a single-word column folds anywhere.
_MIN_TEXT_WIDTH = 10
_MIN_FOLDED_WIDTH = 4


def _unbroken_columns(titles: Sequence[str], body: Sequence[Sequence[str]], width: int) -> set[int]:
    """Return the indexes of the single-word columns that fit on one line in `width` characters.

    An "id" column is chosen first, then the narrowest ones, while every other column keeps
    _MIN_TEXT_WIDTH or _MIN_FOLDED_WIDTH characters (or its whole width when narrower).
    """
    natural = [max([cell_len(title), *(cell_len(cells[index]) for cells in body)]) for index, title in enumerate(titles)]
    single_word = [not any(any(c.isspace() for c in cells[index]) for cells in body) for index in range(len(titles))]
    least = [
        min(natural[index], _MIN_FOLDED_WIDTH if single_word[index] else _MIN_TEXT_WIDTH) for index in range(len(titles))
    ]
    # The default box draws one border left of every column and one at the right edge, and
    # pads each cell with a space on both sides.
    borders = 1 + 3 * len(titles)
    spare = width - borders - sum(least)
    candidates = sorted(
        (index for index in range(len(titles)) if single_word[index]),
        key=lambda index: (titles[index] != "id", natural[index]),
    )
    unbroken = set()
    for index in candidates:
        extra = natural[index] - least[index]
        if extra <= spare:
            unbroken.add(index)
            spare -= extra
    return unbroken


def print_record(record: dict[str, Any], fields: Sequence[str | tuple[str, Callable[[dict[str, Any]], Any]]]) -> None:
    """Print one `name  value` line per field. A field is a key of `record` or a (name, function) pair."""
    named = [(field, None) if isinstance(field, str) else field for field in fields]
    width = max(len(name) for name, _ in named)
    for name, getter in named:
        value = getter(record) if getter is not None else record.get(name)
        console.print(Text(f"{name.ljust(width)}  {'' if value is None else value}"), soft_wrap=True)


def money_text(minor_units: int | None, currency: str | None) -> str | None:
    """Format an amount in minor units of `currency` (cents for USD), such as 19900 USD -> "$199.00"."""
    if minor_units is None or not currency:
        return None
    amount = Decimal(minor_units).scaleb(-get_currency_precision(currency))
    return format_currency(amount, currency, locale="en_US")
