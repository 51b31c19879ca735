"""idempotency key of credit holds

Adds the nullable `credit_holds.idempotency_key` column and a unique index on
(organization_id, idempotency_key) over the rows that have a key, so that a client retrying a
hold after a timeout gets the first hold back instead of reserving the credits twice. Existing
holds keep a null key. On PostgreSQL the new column needs no table rewrite, but building the
index reads the whole table and blocks writes to it meanwhile.

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
    with op.batch_alter_table("credit_holds") as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.create_index(
            _INDEX,
            ["organization_id", "idempotency_key"],
            unique=True,
            sqlite_where=_HAS_KEY,
            postgresql_where=_HAS_KEY,
        )


def downgrade() -> None:
    with op.batch_alter_table("credit_holds") as batch_op:
        batch_op.drop_index(_INDEX)
        batch_op.drop_column("idempotency_key")
