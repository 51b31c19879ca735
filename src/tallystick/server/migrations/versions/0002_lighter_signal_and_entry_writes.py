"""lighter signal and ledger entry writes

Every ingestion batch inserts signals and ledger entries and updates accounts and grants, so
this revision makes those writes cheaper on PostgreSQL (see docs/benchmarks.md):

- drops the foreign keys of `signals` and `credit_ledger_entries` except the organization's;
- drops the ledger entries' single-column organization index, which the composite indexes
  that start with the organization make redundant, and indexes only the entries that name an
  order;
- leaves 30% of each new page of `credit_accounts` and `credit_grants` free, so that updating
  a row can keep the new version on the same page without new index entries. Pages written
  before this revision fill up as before until the table is rewritten (VACUUM FULL).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (constraint name, column, referred table)
_SIGNAL_FOREIGN_KEYS = (
    ("fk_signals_credit_currency_id_credit_currencies", "credit_currency_id", "credit_currencies"),
    ("fk_signals_customer_id_customers", "customer_id", "customers"),
    ("fk_signals_product_attribute_id_product_attributes", "product_attribute_id", "product_attributes"),
    ("fk_signals_product_id_products", "product_id", "products"),
)
_ENTRY_FOREIGN_KEYS = (
    ("fk_credit_ledger_entries_credits_currency_id_credit_currencies", "credits_currency_id", "credit_currencies"),
    ("fk_credit_ledger_entries_customer_id_customers", "customer_id", "customers"),
    ("fk_credit_ledger_entries_grant_id_credit_grants", "grant_id", "credit_grants"),
)
_NAMES_ORDER = sa.text("order_id IS NOT NULL")
_UPDATED_TABLES = ("credit_accounts", "credit_grants")


def upgrade() -> None:
    with op.batch_alter_table("signals") as batch_op:
        for name, _column, _table in _SIGNAL_FOREIGN_KEYS:
            batch_op.drop_constraint(name, type_="foreignkey")
    with op.batch_alter_table("credit_ledger_entries") as batch_op:
        for name, _column, _table in _ENTRY_FOREIGN_KEYS:
            batch_op.drop_constraint(name, type_="foreignkey")
        batch_op.drop_index("ix_credit_ledger_entries_organization_id")
        batch_op.drop_index("ix_credit_ledger_entries_order_id")
        batch_op.create_index(
            "ix_credit_ledger_entries_order_id",
            ["order_id"],
            sqlite_where=_NAMES_ORDER,
            postgresql_where=_NAMES_ORDER,
        )
    if op.get_bind().dialect.name == "postgresql":
        for table in _UPDATED_TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _UPDATED_TABLES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    with op.batch_alter_table("credit_ledger_entries") as batch_op:
        batch_op.drop_index("ix_credit_ledger_entries_order_id")
        batch_op.create_index("ix_credit_ledger_entries_order_id", ["order_id"])
        batch_op.create_index("ix_credit_ledger_entries_organization_id", ["organization_id"])
        for name, column, table in _ENTRY_FOREIGN_KEYS:
            batch_op.create_foreign_key(name, table, [column], ["id"])
    with op.batch_alter_table("signals") as batch_op:
        for name, column, table in _SIGNAL_FOREIGN_KEYS:
            batch_op.create_foreign_key(name, table, [column], ["id"])
