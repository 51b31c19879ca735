"""Set-based inserts: a whole batch of rows in one statement.

On PostgreSQL the rows travel as one JSON parameter, read back by
``INSERT ... SELECT ... FROM json_to_recordset(...)``. Serializing a thousand rows with orjson
costs far less Python time than binding each value separately, and PostgreSQL parses the JSON
in C. On SQLite, executemany runs one prepared statement per row in the same transaction,
which is the fastest form there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    String,
    Select,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    literal_column,
    null,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tallystick.server.models.types import JsonDocument, ScaledDecimal, UtcDateTime

_TEXT_ARRAY = postgresql.ARRAY(String())


def in_list(column: Any, name: str, dialect: str) -> Any:
    """Return a test that text `column` is one of the values of list parameter `name`.

    On PostgreSQL the list travels as one array parameter (`= ANY(:name)`). An IN list renders
    a placeholder per value, which SQLAlchemy and psycopg then spend more time on than
    PostgreSQL spends on the query, and psycopg does not cache such a query's conversion.
    """
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=_TEXT_ARRAY))
    return column.in_(bindparam(name, expanding=True))


def kind_branch(kind: str, column_types: dict[str, Any], columns: dict[str, Any]) -> Select[Any]:
    """Build one branch of a UNION ALL whose rows are told apart by a `kind` column.

    The branch selects every column of `column_types`, NULL for those missing from `columns`.
    NULLs are cast, because PostgreSQL types a chain of UNIONs one pair at a time and would give
    two untyped NULLs the type text. Every value is coerced to its column's type, so credits and
    times convert as the model's columns convert them.
    """
    selected = [literal_column(f"'{kind}'").label("kind")]
    for name, column_type in column_types.items():
        column = columns.get(name, cast(null(), column_type))
        selected.append(type_coerce(column, column_type).label(name))
    return select(*selected)


def for_each_dialect(build: Any) -> dict[str, Any]:
    """Build a statement once per supported dialect, for lookup by `dialect.name`."""
    return {dialect: build(dialect) for dialect in ("postgresql", "sqlite")}


def _postgres_type(column_type: Any) -> str:
    if isinstance(column_type, ScaledDecimal | BigInteger):
        return "bigint"
    if isinstance(column_type, Integer):
        return "integer"
    if isinstance(column_type, Boolean):
        return "boolean"
    if isinstance(column_type, UtcDateTime):
        return "timestamptz"
    if isinstance(column_type, JsonDocument):
        return "jsonb"
    return "text"


@lru_cache(maxsize=64)
def _postgres_insert(
    table: Table, columns: tuple[str, ...], conflict: tuple[str, ...] | None, returning: tuple[str, ...]
) -> Any:
    definitions = ", ".join(f"{name} {_postgres_type(table.c[name].type)}" for name in columns)
    names = ", ".join(columns)
    statement = (
        f"INSERT INTO {table.name} ({names}) SELECT {names} "
        f"FROM json_to_recordset(CAST(:rows AS json)) AS batch({definitions})"
    )
    if conflict is not None:
        target = f" ({', '.join(conflict)})" if conflict else ""
        statement += f" ON CONFLICT{target} DO NOTHING"
    if returning:
        statement += f" RETURNING {', '.join(returning)}"
    return text(statement)


def _json_rows(table: Table, columns: tuple[str, ...], rows: Sequence[dict[str, Any]]) -> str:
    """Serialize rows for json_to_recordset; scaled decimals become their stored integers."""
    scaled = [(name, table.c[name].type) for name in columns if isinstance(table.c[name].type, ScaledDecimal)]
    if scaled:
        converted = []
        for row in rows:
            row = dict(row)
            for name, column_type in scaled:
                row[name] = column_type.process_bind_param(row[name], None)
            converted.append(row)
        rows = converted
    times = [name for name in columns if isinstance(table.c[name].type, UtcDateTime)]
    for row in rows:
        for name in times:
            value = row[name]
            if value is not None and value.tzinfo is None:
                raise ValueError(f"naive datetime {value!r} in column {name} cannot be stored; attach a timezone")
    try:
        return orjson.dumps(rows).decode()
    except TypeError:
        # orjson writes integers of at most 64 bits; jsonb keeps larger ones, as json does.
        return json.dumps(rows, default=_isoformat, allow_nan=False)


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialize {type(value).__name__} as JSON")


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    skip_conflicts_on: tuple[str, ...] | None = None,
    returning: str | tuple[str, ...] | None = None,
) -> list[Any]:
    """Insert rows that all carry the same keys (column names); return what `returning` names.

    With `skip_conflicts_on` (the columns of a unique index, or () for any unique index), rows
    that conflict with an existing row are skipped (ON CONFLICT DO NOTHING). `returning` is
    one column, whose values are returned, or a tuple of columns, whose rows are returned, for
    the rows inserted. Without it, returns [].
    """
    if not rows:
        return []
    columns = tuple(rows[0])
    names = (returning,) if isinstance(returning, str) else tuple(returning or ())
    if session.get_bind().dialect.name == "postgresql":
        statement = _postgres_insert(table, columns, skip_conflicts_on, names)
        result = session.execute(statement, {"rows": _json_rows(table, columns, rows)})
    else:
        statement = sqlite.insert(table)
        if skip_conflicts_on is not None:
            statement = statement.on_conflict_do_nothing(index_elements=list(skip_conflicts_on) or None)
        if not names:
            session.execute(statement, list(rows))
            return []
        result = session.execute(statement.returning(*(table.c[name] for name in names)), list(rows))
    if not names:
        return []
    if isinstance(returning, str):
        return list(result.scalars())
    return [tuple(row) for row in result]


# Up to this many rows, update_rows sends an executemany of one-row updates instead of JSON.
_FEW_ROWS = 8


@lru_cache(maxsize=64)
def _postgres_update(table: Table, keys: tuple[str, ...], values: tuple[str, ...]) -> Any:
    columns = keys + values
    definitions = ", ".join(f"{name} {_postgres_type(table.c[name].type)}" for name in columns)
    assignments = ", ".join(f"{name} = batch.{name}" for name in values)
    matches = " AND ".join(f"{table.name}.{name} = batch.{name}" for name in keys)
    return text(
        f"UPDATE {table.name} SET {assignments} "
        f"FROM json_to_recordset(CAST(:rows AS json)) AS batch({definitions}) WHERE {matches}"
    )


def update_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], *, keys: tuple[str, ...]) -> None:
    """Update one row per dict, found by the `keys` columns, setting the dict's other columns.

    All dicts carry the same columns. On PostgreSQL more than a few rows are one UPDATE ...
    FROM json_to_recordset statement; otherwise it is an executemany.
    """
    if not rows:
        return
    values = tuple(name for name in rows[0] if name not in keys)
    # PostgreSQL plans json_to_recordset for 100 rows whatever it holds, and for a few rows
    # that plan (a hash join over the whole table) cost about 2 ms where an index probe per
    # row costs a tenth of that.
    if session.get_bind().dialect.name == "postgresql" and len(rows) > _FEW_ROWS:
        statement = _postgres_update(table, keys, values)
        session.execute(statement, {"rows": _json_rows(table, keys + values, rows)})
        return

    statement = (
        update(table)
        .where(and_(*(table.c[name] == bindparam(f"key_{name}", type_=table.c[name].type) for name in keys)))
        .values({name: bindparam(f"value_{name}", type_=table.c[name].type) for name in values})
    )
    parameters = [
        {**{f"key_{name}": row[name] for name in keys}, **{f"value_{name}": row[name] for name in values}}
        for row in rows
    ]
    session.execute(statement, parameters)
