"""unit value of credit grants

Adds the nullable `credit_grants.unit_value` column: the USD value of one credit of a manual
grant, which per-signal margins use as the revenue of each credit drawn from it. It holds
integer picodollars (twelve decimal places), as cost amounts do. Existing grants keep a null
value, which margins count as 0, as before this revision. On PostgreSQL a nullable column
without a default is added without rewriting the table.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallystick.server.models.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credit_grants") as batch_op:
        batch_op.add_column(
            sa.Column("unit_value", tallystick.server.models.types.ScaledDecimal(places=12), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("credit_grants") as batch_op:
        batch_op.drop_column("unit_value")
