"""`tallystick import signals FILE`: backfill signals from CSV or JSON Lines, in batches.

Each row needs an idempotency key, so a re-run of the same file counts nothing twice. Rows
without one get a key derived from the row's content (SHA-256), which is stable across runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tallystick.cli.output import ApiKeyOption, ApiUrlOption, api_client, console, error_console

import_app = typer.Typer(help="Bulk imports.", no_args_is_help=True)

# The API accepts at most this many signals per request.
MAX_BATCH_SIZE = 1000
# Failed rows reported one by one before the rest are only counted.
_REPORTED_FAILURES = 20


class ImportFileError(Exception):
    """A row that cannot become a signal; the message names the file and line."""


@dataclass
class ImportTotals:
    ingested: int = 0
    duplicates: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def read_rows(path: Path, key_column: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, signal in wire form) for each row of a CSV or JSON Lines file."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        yield from _read_json_lines(path, key_column)
    elif path.suffix.lower() == ".csv":
        yield from _read_csv(path, key_column)
    else:
        raise ImportFileError(f"{path}: unknown file type '{path.suffix}'; use .csv or .jsonl")


def _read_json_lines(path: Path, key_column: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ImportFileError(f"{path}:{number}: invalid JSON: {error.msg}") from None
            if not isinstance(row, dict):
                raise ImportFileError(f"{path}:{number}: each line must be a JSON object")
            signal = _signal_from_json(row, key_column)
            yield number, _with_key(signal, line.strip())


def _signal_from_json(row: dict[str, Any], key_column: str) -> dict[str, Any]:
    """Accept the API's signal shape, or a flat shape with customer and product external ids."""
    if "customer" in row and isinstance(row["customer"], dict):
        signal = dict(row)
    else:
        signal = {
            "eventName": row.get("eventName", row.get("event_name")),
            "customer": {"externalCustomerId": row.get("externalCustomerId", row.get("customer"))},
        }
        product = row.get("externalProductId", row.get("product"))
        if product:
            signal["attribution"] = {"externalProductId": product}
        for name in ("timestamp", "data"):
            if row.get(name) is not None:
                signal[name] = row[name]
    key = row.get(key_column)
    if key is not None:
        signal["idempotencyKey"] = str(key)
    if key_column != "idempotencyKey":
        signal.pop(key_column, None)
    return signal


def _read_csv(path: Path, key_column: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Read columns event_name, customer, product, timestamp, data (JSON) and data.* fields."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "event_name" not in reader.fieldnames or "customer" not in reader.fieldnames:
            raise ImportFileError(f"{path}:1: the header needs at least the columns event_name and customer")
        for row in reader:
            number = reader.line_num
            signal: dict[str, Any] = {
                "eventName": row["event_name"],
                "customer": {"externalCustomerId": row["customer"]},
            }
            if row.get("product"):
                signal["attribution"] = {"externalProductId": row["product"]}
            if row.get("timestamp"):
                signal["timestamp"] = row["timestamp"]
            data: dict[str, Any] = {}
            if row.get("data"):
                try:
                    data = json.loads(row["data"])
                except json.JSONDecodeError as error:
                    raise ImportFileError(f"{path}:{number}: column data is not JSON: {error.msg}") from None
            for column, value in row.items():
                if column and column.startswith("data.") and value not in (None, ""):
                    data[column.removeprefix("data.")] = _csv_value(value)
            if data:
                signal["data"] = data
            if row.get(key_column):
                signal["idempotencyKey"] = row[key_column]
            yield number, _with_key(signal, json.dumps(row, sort_keys=True))


def _csv_value(text: str) -> Any:
    """Read numbers in data.* columns as numbers; everything else stays text."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _with_key(signal: dict[str, Any], content: str) -> dict[str, Any]:
    if not signal.get("idempotencyKey"):
        signal["idempotencyKey"] = "import-" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:40]
    return signal


@import_app.command("signals")
def import_signals(
    file: Annotated[Path, typer.Argument(help="A .csv or .jsonl file of signals.", show_default=False)],
    batch_size: Annotated[int, typer.Option(help="Signals per request.", min=1, max=MAX_BATCH_SIZE)] = 500,
    key_column: Annotated[
        str, typer.Option(help="Column or JSON key holding each row's idempotency key.")
    ] = "idempotency_key",
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Backfill signals from FILE. Re-running the same file counts nothing twice."""
    if not file.is_file():
        error_console.print(f"[red]Error:[/red] {file} is not a readable file")
        raise typer.Exit(code=1)
    total_lines = sum(1 for line in file.open(encoding="utf-8") if line.strip())
    if file.suffix.lower() == ".csv":
        total_lines = max(total_lines - 1, 0)

    totals = ImportTotals()
    with api_client(api_url, api_key) as client, Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"Importing {file.name}", total=total_lines)
        batch: list[tuple[int, dict[str, Any]]] = []
        try:
            for item in read_rows(file, key_column):
                batch.append(item)
                if len(batch) >= batch_size:
                    _send(client, file, batch, totals)
                    progress.advance(task, len(batch))
                    batch = []
            if batch:
                _send(client, file, batch, totals)
                progress.advance(task, len(batch))
        except ImportFileError as error:
            error_console.print(f"[red]Error:[/red] {error}")
            _print_totals(totals)
            raise typer.Exit(code=1) from None

    _print_totals(totals)
    if totals.failed:
        raise typer.Exit(code=1)


def _send(client: Any, path: Path, batch: list[tuple[int, dict[str, Any]]], totals: ImportTotals) -> None:
    result = client.post("/signals/bulk", {"signals": [signal for _, signal in batch]})
    totals.ingested += result["ingested"]
    totals.duplicates += result["duplicates"]
    totals.failed += result["failed"]
    for error in result.get("errors", []):
        if len(totals.failures) >= _REPORTED_FAILURES:
            break
        line = batch[error["index"]][0] if 0 <= error.get("index", -1) < len(batch) else "?"
        totals.failures.append(f"{path}:{line}: {error.get('message', 'rejected')}")


def _print_totals(totals: ImportTotals) -> None:
    for failure in totals.failures:
        error_console.print(failure)
    if totals.failed > len(totals.failures):
        error_console.print(f"... and {totals.failed - len(totals.failures)} more failed rows")
    console.print(
        f"Imported: {totals.ingested} ingested, {totals.duplicates} duplicates, {totals.failed} failed."
    )
