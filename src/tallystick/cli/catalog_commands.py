"""`tallystick apply` and `tallystick export`: the catalog as a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from tallystick.cli.catalog_apply import export_catalog, plan_changes, read_state
from tallystick.cli.catalog_file import CatalogFileError, dump_catalog, load_catalog_file
from tallystick.cli.output import (
    ApiKeyOption,
    ApiUrlOption,
    RequestTimeoutOption,
    api_client,
    console,
    error_console,
    print_error,
)

_ACTION_STYLE = {"create": "green", "update": "yellow", "keep": "dim"}


def apply(
    file: Annotated[Path, typer.Argument(help="Catalog YAML file.", show_default=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the changes without making them.")] = False,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
) -> None:
    """Create or update credit currencies, products, pricing lines and plans from FILE."""
    try:
        loaded = load_catalog_file(file)
    except CatalogFileError as error:
        # Plain output: rich would wrap the file:line prefixes that editors jump to.
        typer.echo(f"Invalid catalog file\n{error}", err=True)
        raise typer.Exit(code=1) from None

    with api_client(api_url, api_key, timeout=timeout) as client:
        state = read_state(client)
        changes = plan_changes(client, loaded.spec, state)
        pending = [change for change in changes if change.action != "keep"]

        for change in changes:
            style = _ACTION_STYLE[change.action]
            detail = f" ({change.detail})" if change.detail else ""
            console.print(Text.assemble((f"{change.action:>6}", style), f" {change.kind} {change.name}{detail}"))

        if not pending:
            console.print(f"No changes: the server's catalog already matches {escape(str(file))}.", soft_wrap=True)
            return
        if dry_run:
            console.print(f"Dry run: {len(pending)} change(s) not applied.")
            return
        for change in pending:
            change.apply()
        console.print(f"Applied {len(pending)} change(s) from {escape(str(file))}.", soft_wrap=True)


def export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of standard output.")
    ] = None,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
) -> None:
    """Write the server's catalog as catalog YAML, the format that `apply` reads."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        state = read_state(client)
    text = dump_catalog(export_catalog(state))
    for product_id in state.unnamed_products:
        error_console.print(f"Skipped product {escape(product_id)}: it has no externalId to name it by.", soft_wrap=True)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        print_error(f"cannot write {output}: {error.strerror}; pass --output with a file path in a folder that exists and is writable")
        raise typer.Exit(code=1) from None
    console.print(f"Wrote {escape(str(output))}.", soft_wrap=True)
