"""Storage floor of the server benchmark: raw inserts of signal-like rows, no server involved.

PostgreSQL: psycopg 3 binary COPY into a scratch table shaped like `signals` (same columns,
defaults and indexes, including the unique (organization, idempotency key) index), one COPY
and one commit per batch. SQLite: executemany INSERT OR IGNORE into such a table, one commit
per batch, with the server's pragmas (WAL, synchronous=FULL). Prints one JSON result.

Usage: storage_floor.py DATABASE_URL ORGANIZATION_ID CUSTOMER_ID ROWS BATCH
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import sys
import time
from datetime import UTC, datetime

import orjson
from sqlalchemy.engine import make_url

COLUMNS = (
    "id",
    "organization_id",
    "customer_id",
    "event_name",
    "occurred_at",
    "received_at",
    "data",
    "idempotency_key",
    "credits_consumed",
    "credits_pending",
)


def rows(organization_id: str, customer_id: str, count: int) -> list[tuple]:
    now = datetime.now(UTC)
    prefix = secrets.token_hex(4)
    return [
        (
            f"sig_floor_{prefix}_{number}",
            organization_id,
            customer_id,
            "chat_message",
            now,
            now,
            {"model": "gpt-4o-mini", "tokens": 100 + number % 900},
            f"floor-{prefix}-{number}",
            1_000_000_000,
            0,
        )
        for number in range(count)
    ]


def postgres_floor(url: str, data: list[tuple], batch: int) -> float:
    import psycopg
    from psycopg.types.json import Jsonb

    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_copy_floor (LIKE signals INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        connection.commit()
        types = ["varchar", "varchar", "varchar", "varchar", "timestamptz", "timestamptz", "jsonb", "varchar", "int8", "int8"]
        started = time.perf_counter()
        for start in range(0, len(data), batch):
            with connection.cursor() as cursor:
                statement = f"COPY bench_copy_floor ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(statement) as copy:
                    copy.set_types(types)
                    for row in data[start : start + batch]:
                        copy.write_row((*row[:6], Jsonb(row[6]), *row[7:]))
            connection.commit()
        elapsed = time.perf_counter() - started
        connection.execute("DROP TABLE bench_copy_floor")
        connection.commit()
    return elapsed


def sqlite_floor(url: str, data: list[tuple], batch: int) -> float:
    path = make_url(url).database
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS bench_copy_floor AS SELECT * FROM signals WHERE 0")
    connection.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS bench_copy_floor_key ON bench_copy_floor (organization_id, idempotency_key)"
    )
    statement = (
        f"INSERT OR IGNORE INTO bench_copy_floor ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    )
    started = time.perf_counter()
    for start in range(0, len(data), batch):
        chunk = [
            (*row[:4], row[4].isoformat(), row[5].isoformat(), orjson.dumps(row[6]).decode(), *row[7:])
            for row in data[start : start + batch]
        ]
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(statement, chunk)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.execute("DROP TABLE bench_copy_floor")
    connection.close()
    return elapsed


def main() -> None:
    url, organization_id, customer_id, count, batch = sys.argv[1:6]
    data = rows(organization_id, customer_id, int(count))
    if url.startswith("sqlite"):
        method, elapsed = "executemany INSERT OR IGNORE", sqlite_floor(url, data, int(batch))
    else:
        method, elapsed = "COPY (binary)", postgres_floor(url, data, int(batch))
    json.dump({"method": method, "rows": len(data), "seconds": elapsed, "rows_per_s": len(data) / elapsed}, sys.stdout)


if __name__ == "__main__":
    main()
