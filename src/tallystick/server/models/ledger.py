"""The credit ledger: grants, append-only ledger entries, pending consumption and holds.

Amounts are credits as exact decimals with nine places (the `Credits()` column stores them as
integers, so SQL sums are exact on SQLite too). Ledger entries are signed: grants positive,
spends and expiries negative, adjustments either way.

Invariants, for every (organization, customer, credit currency):
- `CreditGrant.remaining` equals the sum of the ledger entries that name the grant, and is never
  negative. The entries are the truth; `remaining` is a cache written under the account lock.
- At instant t, with G = sum(remaining of grants with starts_at <= t < expires_at),
  H = sum(reserved of holds active at t) and P = sum(remaining of unsettled pending
  consumption): available = max(0, G - H - P). Each write settles pending consumption before
  anything else, so after a write P > 0 only when G - H = 0.
- Every change to a grant's remaining is one ledger entry naming its cause.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server import clock
from tallystick.server.models.base import Base, OrgScopedMixin
from tallystick.server.models.cost import Usd
from tallystick.server.models.types import Credits, JsonObject


# Percent of each PostgreSQL heap page that inserts fill, for the tables whose rows every
# ingestion batch updates (an account's last sequence, a grant's remaining). The free space
# lets an update write the new row version on the same page without new index entries (a
# "HOT" update). In a batch of 1,000 accounts that took one WAL record per row instead of 3 to 6.
UPDATED_TABLE_FILLFACTOR = 70


class CreditAccount(Base):
    """The serialization point of one customer's credits in one currency.

    Every write to the customer's grants, entries, pending consumption or holds in that
    currency first locks this row (SELECT ... FOR UPDATE on PostgreSQL; SQLite writers hold the
    database write lock already). `last_sequence` numbers those writes, so entries and pending
    consumption written under the same frozen clock still have a total order.
    """

    __tablename__ = "credit_accounts"
    __table_args__ = {"postgresql_with": {"fillfactor": UPDATED_TABLE_FILLFACTOR}}

    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    credits_currency_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("credit_currencies.id"), primary_key=True
    )
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class CreditGrant(OrgScopedMixin, Base):
    """A pool of credits: an amount usable from `starts_at` until `expires_at` (None = never).

    Consumption draws grants by `priority` (lower first), then earliest `expires_at` (grants that
    never expire last), then oldest `starts_at`, then `sequence`.
    """

    __tablename__ = "credit_grants"
    __table_args__ = (
        Index("ix_credit_grants_account", "organization_id", "customer_id", "credits_currency_id"),
        Index(
            "uq_credit_grants_org_idempotency_key",
            "organization_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        {"postgresql_with": {"fillfactor": UPDATED_TABLE_FILLFACTOR}},
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"))
    credits_currency_id: Mapped[str] = mapped_column(String(40), ForeignKey("credit_currencies.id"))
    amount: Mapped[Decimal] = mapped_column(Credits())
    # Cache of sum(ledger entries naming this grant); written only under the account lock.
    remaining: Mapped[Decimal] = mapped_column(Credits())
    starts_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    priority: Mapped[int] = mapped_column(default=0)
    # Why the grant exists: manual, order_period, adjustment, promotion.
    source: Mapped[str] = mapped_column(String(32))
    # The wire `originCode` of entries touching this grant, such as "purchased" or "manual".
    origin_code: Mapped[str] = mapped_column(String(64), default="unknown")
    order_id: Mapped[str | None] = mapped_column(String(40), index=True)
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    description: Mapped[str | None] = mapped_column(String(500))
    # Set to expires_at once the expiry entry for the unused remainder is written. A grant used up
    # before it expired keeps None, since it has nothing left to expire.
    expired_at: Mapped[datetime | None]
    sequence: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    # The client's key of a manual grant: a retry with the same key returns this grant.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # USD value of one credit of a manual grant, as the client gave it; None when it gave none.
    # Margins value the credits of a grant without an order at this (None counts as 0), and
    # the credits of an order's grant at the order's price, whatever this holds.
    unit_value: Mapped[Decimal | None] = mapped_column(Usd())


class LedgerEntry(Base):
    """One signed change to a grant's remaining credits, with its cause. Never updated or deleted.

    `entry_type` is grant (+), spend (-), expiry (-) or adjustment (+ or -). A spend names the
    signal (or hold, or pending consumption it settled); an expiry names only its grant.
    `effective_at` is when the change counts (a grant's start, an expiry instant, a signal's
    processing time); `created_at` is when the row was written.

    As for signals (see `Signal`), only the organization id has a foreign key: entries are
    written under the account lock, for a customer, currency and grants that the same
    transaction has loaded.
    """

    __tablename__ = "credit_ledger_entries"
    __table_args__ = (
        Index(
            "ix_credit_ledger_entries_account",
            "organization_id",
            "customer_id",
            "credits_currency_id",
            "sequence",
        ),
        Index("ix_credit_ledger_entries_org_created", "organization_id", "created_at"),
        # Entries of grants that no order made (manual grants, promotions) name no order and
        # need no place in this index.
        Index(
            "ix_credit_ledger_entries_order_id",
            "order_id",
            sqlite_where=text("order_id IS NOT NULL"),
            postgresql_where=text("order_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Declared here rather than through OrgScopedMixin, whose single-column index the
    # composite indexes above make redundant.
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE")
    )
    customer_id: Mapped[str] = mapped_column(String(40))
    credits_currency_id: Mapped[str] = mapped_column(String(40))
    grant_id: Mapped[str] = mapped_column(String(40), index=True)
    entry_type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(Credits())
    signal_id: Mapped[str | None] = mapped_column(String(40), index=True)
    event_name: Mapped[str | None] = mapped_column(String(255))
    product_id: Mapped[str | None] = mapped_column(String(40))
    order_id: Mapped[str | None] = mapped_column(String(40))
    hold_id: Mapped[str | None] = mapped_column(String(40))
    pending_consumption_id: Mapped[str | None] = mapped_column(String(40))
    description: Mapped[str | None] = mapped_column(String(500))
    effective_at: Mapped[datetime]
    sequence: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class PendingConsumption(OrgScopedMixin, Base):
    """Consumption that no grant covered when it was recorded; settled oldest first by new grants.

    `remaining` is the part still unsettled (a cache of `amount` minus the spend entries that
    name this row). Rows settle first in, first out, by `sequence`: a backdated signal recorded
    later does not overtake consumption already waiting.
    """

    __tablename__ = "credit_pending_consumptions"
    __table_args__ = (
        Index(
            "ix_credit_pending_consumptions_account",
            "organization_id",
            "customer_id",
            "credits_currency_id",
            "settled_at",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"))
    credits_currency_id: Mapped[str] = mapped_column(String(40), ForeignKey("credit_currencies.id"))
    amount: Mapped[Decimal] = mapped_column(Credits())
    remaining: Mapped[Decimal] = mapped_column(Credits())
    signal_id: Mapped[str | None] = mapped_column(String(40), index=True)
    event_name: Mapped[str | None] = mapped_column(String(255))
    product_id: Mapped[str | None] = mapped_column(String(40))
    order_id: Mapped[str | None] = mapped_column(String(40))
    occurred_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]
    sequence: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class CreditHold(OrgScopedMixin, Base):
    """Credits reserved before an expensive action, so parallel checks cannot share the last credit.

    A hold's `reserved` credits count against available while `status` is active and
    `expires_at` is in the future. It ends as settled (a consumption named it), released
    (deleted by the client) or expired.
    """

    __tablename__ = "credit_holds"
    __table_args__ = (
        Index(
            "ix_credit_holds_account",
            "organization_id",
            "customer_id",
            "credits_currency_id",
            "status",
        ),
        Index(
            "uq_credit_holds_org_idempotency_key",
            "organization_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"))
    credits_currency_id: Mapped[str] = mapped_column(String(40), ForeignKey("credit_currencies.id"))
    # The credits the client asked to reserve; never changes.
    amount: Mapped[Decimal] = mapped_column(Credits())
    # The credits reserved now: `amount`, cut down when grants backing it expire first.
    reserved: Mapped[Decimal] = mapped_column(Credits())
    status: Mapped[str] = mapped_column(String(16), default="active")
    expires_at: Mapped[datetime]
    settled_signal_id: Mapped[str | None] = mapped_column(String(40))
    ended_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JsonObject)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    # The client's key of the hold request: a retry with the same key returns this hold.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
