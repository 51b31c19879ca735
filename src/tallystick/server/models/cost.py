"""Cost records of AI calls, per-model price overrides, and the claims that attribute costs to signals.

Costs are USD as exact decimals with twelve places (`ScaledDecimal(12)` stores integer
picodollars), so per-token prices such as $0.075 per million tokens stay exact and SQL sums stay
exact on SQLite too. One BIGINT column holds up to about 9.2 million USD.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server import clock
from tallystick.server.models.base import Base, TimestampMixin
from tallystick.server.models.types import JsonObject, ScaledDecimal

# Decimal places of every USD cost amount and per-unit price in this module.
COST_PLACES = 12


def Usd() -> ScaledDecimal:  # noqa: N802 - reads as a column type
    return ScaledDecimal(COST_PLACES)


class CostRecord(Base):
    """What one AI call cost: usage as reported, the price applied, and the signal it belongs to.

    A record comes from an LLM span of an OTLP trace (`source` "span"), from `POST /costs/bulk`
    ("bulk") or from the `costData` of a signal ("signal"). Span records are unique per
    (organization, trace id, span id), so a resent OTLP batch adds nothing. Records from the
    other sources are unique per (organization, idempotency key).

    `input_tokens` always includes cache reads and cache writes, whatever the emitter reported;
    `cache_read_tokens` and `cache_write_tokens` are subsets of it, and `reasoning_tokens` is a
    subset of `output_tokens`.
    """

    __tablename__ = "cost_records"
    __table_args__ = (
        Index(
            "uq_cost_records_org_trace_span",
            "organization_id",
            "trace_id",
            "span_id",
            unique=True,
            sqlite_where=text("span_id IS NOT NULL"),
            postgresql_where=text("span_id IS NOT NULL"),
        ),
        Index(
            "uq_cost_records_org_idempotency_key",
            "organization_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_cost_records_org_started_at", "organization_id", "started_at"),
        Index("ix_cost_records_customer_started_at", "customer_id", "started_at"),
        Index("ix_cost_records_signal_id", "signal_id"),
        # Attribution finds unclaimed costs of a trace or of a paid_scope_id.
        Index(
            "ix_cost_records_org_scope",
            "organization_id",
            "paid_scope_id",
            sqlite_where=text("paid_scope_id IS NOT NULL"),
            postgresql_where=text("paid_scope_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE")
    )
    # span | bulk | signal
    source: Mapped[str] = mapped_column(String(16))

    # OTLP ids as lowercase hex: 32 digits for traces, 16 for spans.
    trace_id: Mapped[str | None] = mapped_column(String(32))
    span_id: Mapped[str | None] = mapped_column(String(16))
    parent_span_id: Mapped[str | None] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(300))
    span_name: Mapped[str | None] = mapped_column(String(255))
    # Instrumentation scope (name and version) that emitted the span.
    scope_name: Mapped[str | None] = mapped_column(String(255))
    scope_version: Mapped[str | None] = mapped_column(String(64))
    # Which attribute convention the usage was read from, such as openinference or gen_ai.
    emitter: Mapped[str] = mapped_column(String(32))

    customer_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("customers.id"))
    external_customer_id: Mapped[str | None] = mapped_column(String(255))
    product_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("products.id"))
    external_product_id: Mapped[str | None] = mapped_column(String(255))
    paid_scope_id: Mapped[int | None] = mapped_column(BigInteger)
    # The signal this cost is attributed to; a cost belongs to at most one signal.
    signal_id: Mapped[str | None] = mapped_column(String(40))

    # When the call started (the span's start): the instant prices are looked up for.
    started_at: Mapped[datetime]
    start_time_unix_nano: Mapped[int | None] = mapped_column(BigInteger)
    end_time_unix_nano: Mapped[int | None] = mapped_column(BigInteger)

    # Provider and model as the emitter named them, and as used for the price lookup.
    vendor: Mapped[str | None] = mapped_column(String(255))
    provider: Mapped[str | None] = mapped_column(String(64))
    model_reported: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    operation: Mapped[str | None] = mapped_column(String(64))
    service_tier: Mapped[str | None] = mapped_column(String(32))

    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    input_audio_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_audio_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    input_image_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    image_count: Mapped[int] = mapped_column(BigInteger, default=0)
    audio_seconds: Mapped[Decimal | None] = mapped_column(ScaledDecimal(6))
    # The emitter's input count before conversion, and whether it included cached tokens
    # ("inclusive" or "exclusive"), kept for audit.
    input_tokens_reported: Mapped[int | None] = mapped_column(BigInteger)
    input_tokens_mode: Mapped[str | None] = mapped_column(String(16))

    # The cost counted for margins and totals; NULL while the record is unpriced.
    cost_amount: Mapped[Decimal | None] = mapped_column(Usd())
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    # priced | unpriced
    cost_status: Mapped[str] = mapped_column(String(16))
    # Where the amount came from: price_table, override, client (an amount sent by the app).
    cost_source: Mapped[str | None] = mapped_column(String(16))
    # The price table and version, or the override id, that priced the record.
    price_reference: Mapped[str | None] = mapped_column(String(120))
    # The model id of the price table entry that matched.
    price_model_id: Mapped[str | None] = mapped_column(String(255))
    # Why the record has no amount, such as an unknown model.
    unpriced_reason: Mapped[str | None] = mapped_column(String(500))
    # A cost the emitter computed itself (such as llm.cost.total), kept beside ours to compare.
    reported_cost_amount: Mapped[Decimal | None] = mapped_column(Usd())
    reported_cost_attribute: Mapped[str | None] = mapped_column(String(64))

    # metadata.* span attributes (without the prefix), or the metadata of a bulk cost.
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JsonObject)
    # The span's attributes as received, for the trace listing.
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JsonObject)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class CostAttributionClaim(Base):
    """A signal's claim on the costs of one trace or of one paid_scope_id.

    `kind` "trace" keys by the trace id (a signal span with enable_cost_tracing); "scope" keys
    by customer id and paid_scope_id (a REST signal with data.paid.paid_scope_id). The primary
    key makes the first signal to claim a key its only owner, so costs never go to two signals.
    """

    __tablename__ = "cost_attribution_claims"

    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    claim_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    signal_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class PriceOverride(TimestampMixin, Base):
    """An operator's price for one model, used instead of the price table.

    Prices are USD per million tokens (per image, per audio second and per request for the
    other units). A NULL cache price bills those tokens at the input price. `provider` NULL
    matches the model under any provider.
    """

    __tablename__ = "cost_price_overrides"
    __table_args__ = (UniqueConstraint("organization_id", "provider_key", "model"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE")
    )
    provider: Mapped[str | None] = mapped_column(String(64))
    # provider, or "" for any provider: unique constraints treat NULLs as distinct.
    provider_key: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    input_per_mtok: Mapped[Decimal] = mapped_column(Usd(), default=Decimal(0))
    output_per_mtok: Mapped[Decimal] = mapped_column(Usd(), default=Decimal(0))
    cache_read_per_mtok: Mapped[Decimal | None] = mapped_column(Usd())
    cache_write_per_mtok: Mapped[Decimal | None] = mapped_column(Usd())
    per_image: Mapped[Decimal | None] = mapped_column(Usd())
    per_audio_second: Mapped[Decimal | None] = mapped_column(Usd())
    per_request: Mapped[Decimal | None] = mapped_column(Usd())
    description: Mapped[str | None] = mapped_column(String(500))
