"""idempotency key of credit holds

Adds the nullable `credit_holds.idempotency_key` column and a unique index on
(organization_id, idempotency_key) over the rows that have a key, so that a client retrying a
hold after a timeout gets the first hold back instead of reserving the credits twice. Existing
holds keep a null key.

On PostgreSQL the new column needs no table rewrite, and the index is built with CREATE INDEX
CONCURRENTLY, so servers still running the previous version keep writing holds while it
builds. Such a build cannot run in a transaction, so the column is committed first. A build
that fails leaves the revision at 0002 with the column and an invalid index in place, and the
next run of this revision replaces that index. SQLite rebuilds the table in one transaction.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_INDEX = "uq_credit_holds_org_idempotency_key"
_HAS_KEY = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _upgrade_postgresql()
        return

    with op.batch_alter_table("credit_holds") as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.create_index(
            _INDEX,
            ["organization_id", "idempotency_key"],
            unique=True,
            sqlite_where=_HAS_KEY,
            postgresql_where=_HAS_KEY,
        )


def _upgrade_postgresql() -> None:
    # IF NOT EXISTS and the DROP below make a rerun after a failed index build succeed.
    op.add_column(
        "credit_holds", sa.Column("idempotency_key", sa.String(length=255), nullable=True), if_not_exists=True
    )
    with op.get_context().autocommit_block():
        op.drop_index(_INDEX, table_name="credit_holds", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            _INDEX,
            "credit_holds",
            ["organization_id", "idempotency_key"],
            unique=True,
            postgresql_where=_HAS_KEY,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        # Dropped the way it was built, without an exclusive lock on the table.
        with op.get_context().autocommit_block():
            op.drop_index(_INDEX, table_name="credit_holds", postgresql_concurrently=True, if_exists=True)
        op.drop_column("credit_holds", "idempotency_key")
        return

    with op.batch_alter_table("credit_holds") as batch_op:
        batch_op.drop_index(_INDEX)
        batch_op.drop_column("idempotency_key")
