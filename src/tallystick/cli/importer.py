"""`tallystick import signals FILE`: backfill signals from CSV or JSON Lines, in batches.

Each row needs an idempotency key, so a re-run of the same file counts nothing twice. Rows
without one get a key derived from the row's content (SHA-256), which is stable across runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from tallystick.cli.output import (
    ApiKeyOption,
    ApiUrlOption,
    RequestTimeoutOption,
    api_client,
    console,
    error_console,
    print_error,
)
from tallystick.cli.text_files import not_utf8_message

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


def count_rows(path: Path) -> int:
    """Return the number of non-blank lines of `path`, raising ImportFileError at a line that is not UTF-8."""
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise ImportFileError(not_utf8_message(path, number)) from None
            if line.strip():
                count += 1
    return count


def _non_finite_number(value: Any, where: str) -> str | None:
    """Return where `value` contains NaN or an infinity, such as "data.tokens", or None.

    Python's json module reads NaN, Infinity and numbers such as 1e999 as floats, which JSON
    cannot carry to the server.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        children = [(f"{where}.{key}" if where else str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
    else:
        return None
    for child_where, item in children:
        found = _non_finite_number(item, child_where)
        if found is not None:
            return found
    return None


def _read_json_lines(path: Path, key_column: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ImportFileError(f"{path}:{number}: invalid JSON: {error.msg}") from None
            if not isinstance(row, dict):
                raise ImportFileError(f"{path}:{number}: each line must be a JSON object")
            key = _non_finite_number(row, "")
            if key is not None:
                raise ImportFileError(f"{path}:{number}: the value of {key} {_NON_FINITE}")
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
    with path.open(encoding="utf-8-sig", newline="") as handle:
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
                key = _non_finite_number(data, "")
                if key is not None:
                    subject = f"the value of {key}" if key else "the value"
                    raise ImportFileError(f"{path}:{number}: column data: {subject} {_NON_FINITE}")
            for column, value in row.items():
                if column and column.startswith("data.") and value not in (None, ""):
                    number_or_text = _csv_value(value)
                    if isinstance(number_or_text, float) and not math.isfinite(number_or_text):
                        raise ImportFileError(f"{path}:{number}: column {column}: {value!r} {_NON_FINITE}")
                    data[column.removeprefix("data.")] = number_or_text
            if data:
                signal["data"] = data
            if row.get(key_column):
                signal["idempotencyKey"] = row[key_column]
            yield number, _with_key(signal, json.dumps(row, sort_keys=True))


_NON_FINITE = "is not a finite number; JSON has no NaN or infinity, so write a finite number or leave the value out"


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


@import_app.command(
    "signals",
    # Each help paragraph is one string, because typer prints a docstring's line breaks as they are.
    help="Backfill signals from FILE, a UTF-8 .csv or .jsonl (JSON Lines) file. Re-running the same file "
    "counts nothing twice.\n\n"
    "CSV: a header row, then one signal per row. The columns are event_name and customer (required; customer "
    "is the external id), product (external id), timestamp (RFC 3339), idempotency_key, data (a JSON object) "
    "and data.NAME, which sets the data field NAME; a number there is sent as a number. Example:\n\n"
    "event_name,customer,product,idempotency_key,data.minutes_saved\n"
    "chat_message,alice,chatbot,row-1,5\n\n"
    "JSON Lines: one JSON object per line, with the keys event_name (or eventName), customer (external id), "
    "product, timestamp, data and idempotency_key. A line in the API's signal shape, with a customer object "
    "such as {\"externalCustomerId\": \"alice\"}, is sent as it is. Example:\n\n"
    '{"event_name": "chat_message", "customer": "alice", "data": {"minutes_saved": 5}}\n\n'
    "A row without an idempotency key gets one made from its content (SHA-256), so it is counted once.",
)
def import_signals(
    file: Annotated[Path, typer.Argument(help="A .csv or .jsonl file of signals.", show_default=False)],
    batch_size: Annotated[int, typer.Option(help="Signals per request.", min=1, max=MAX_BATCH_SIZE)] = 500,
    key_column: Annotated[
        str, typer.Option(help="Column or JSON key holding each row's idempotency key.")
    ] = "idempotency_key",
    api_url: ApiUrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: RequestTimeoutOption = None,
) -> None:
    if not file.is_file():
        print_error(f"{file} is not a readable file")
        raise typer.Exit(code=1)
    try:
        total_lines = count_rows(file)
    except ImportFileError as error:
        print_error(str(error))
        raise typer.Exit(code=1) from None
    if file.suffix.lower() == ".csv":
        total_lines = max(total_lines - 1, 0)

    totals = ImportTotals()
    with api_client(api_url, api_key, timeout=timeout) as client, Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"Importing {escape(file.name)}", total=total_lines)
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
            print_error(str(error))
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
        error_console.print(Text(failure), soft_wrap=True)
    if totals.failed > len(totals.failures):
        error_console.print(f"... and {totals.failed - len(totals.failures)} more failed rows")
    console.print(
        f"Imported: {totals.ingested} ingested, {totals.duplicates} duplicates, {totals.failed} failed."
    )
