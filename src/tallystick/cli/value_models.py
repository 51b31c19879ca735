"""`tallystick value-models`: show, upload and backfill the organization's value model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from tallystick.errors import ApiError

from tallystick.cli.output import (
    ApiKeyOption,
    ApiUrlOption,
    JsonOption,
    RequestTimeoutOption,
    api_client,
    console,
    print_error,
    print_json,
)
from tallystick.cli.text_files import NotUtf8Error, read_utf8

value_models = typer.Typer(help="The value model: value types, formulas and signal bindings.", no_args_is_help=True)

# Seconds the CLI waits for an upload or a backfill, which evaluate every signal of the
# organization again (about 3,500 signals a second on SQLite).
DEFAULT_BACKFILL_TIMEOUT = 600.0

# Largest --timeout, a day. Larger ones reach the OverflowError that sockets raise for 1e10 s
# (CPython 3.11 on Linux).
MAX_BACKFILL_TIMEOUT = 86_400.0

TimeoutOption = Annotated[
    float,
    typer.Option(
        help="Seconds to wait for the server, which evaluates every signal again.", min=1, max=MAX_BACKFILL_TIMEOUT
    ),
]


@value_models.command("show")
def show(
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the active value model version."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        try:
            version = client.value_models.get_current()
        except ApiError as error:
            if error.status != 404:
                raise
            # The server's message names the HTTP route; this names the command.
            print_error(
                "this organization has no value model yet; upload one with `tallystick value-models upload FILE`",
                label=f"Error {error.status}:",
            )
            raise typer.Exit(code=1) from None
    if as_json:
        print_json(version)
        return
    content = version["content"]
    console.print(f"Version {version['version']} ({version.get('status', 'active')}), created {version['createdAt']}.")
    console.print(
        f"{len(content.get('valueTypes', []))} value types, {len(content.get('formulas', []))} formulas, "
        f"{len(content.get('signals', []))} signal bindings."
    )


@value_models.command("upload")
def upload(
    path: Annotated[Path, typer.Argument(help="JSON or YAML file with the model content.", exists=True, dir_okay=False)],
    effective_from: Annotated[
        str | None,
        typer.Option(help="RFC 3339 time with an offset, such as 2026-01-01T00:00:00Z, from which the version applies."),
    ] = None,
    timeout: TimeoutOption = DEFAULT_BACKFILL_TIMEOUT,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a new version of the value model; the server evaluates every signal with it."""
    content = _read_content(path)
    fields: dict[str, Any] = {"content": content}
    if effective_from is not None:
        fields["effective_from"] = effective_from
    with api_client(api_url, api_key, timeout=timeout) as client:
        version = client.value_models.update(**fields)
    if as_json:
        print_json(version)
        return
    console.print(f"Uploaded value model version {version['version']}; it is active.")


@value_models.command("backfill")
def backfill(
    timeout: TimeoutOption = DEFAULT_BACKFILL_TIMEOUT,
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate every signal again under the active version and refresh draft value receipts."""
    with api_client(api_url, api_key, timeout=timeout) as client:
        result = client.value_models.backfill()
    if as_json:
        print_json(result)
        return
    console.print(
        f"Evaluated {result['signalsEvaluated']} signals under version {result['version']} and "
        f"refreshed {result['receiptsRefreshed']} draft receipts."
    )


def _read_content(path: Path) -> dict[str, Any]:
    """Read the model content from `path`: the content object itself, or `{"content": {...}}`."""
    try:
        text = read_utf8(path)
    except (OSError, NotUtf8Error) as error:
        raise typer.BadParameter(str(error), param_hint="PATH") from None
    try:
        loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise typer.BadParameter(f"{path} is not valid JSON or YAML: {error}", param_hint="PATH") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("content"), dict):
        loaded = loaded["content"]
    if not isinstance(loaded, dict):
        raise typer.BadParameter(f"{path} must contain a JSON object with the model content", param_hint="PATH")
    return loaded
