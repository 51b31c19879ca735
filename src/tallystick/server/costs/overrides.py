"""Per-model price overrides: an operator's prices, used instead of the genai-prices table.

An override applies to calls priced after it is saved; cost records already stored keep their
amounts. It matches a call's model as sent or after the cleanup used for price lookups (vendor
prefix and date suffix removed), case-insensitively. An override with a provider wins over one
for any provider.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server.costs.pricing import price_table_provider
from tallystick.server.costs.schemas import PriceOverrideIn
from tallystick.server.errors import not_found
from tallystick.server.ids import new_id
from tallystick.server.models.cost import PriceOverride

log = logging.getLogger(__name__)


def list_overrides(session: Session, organization_id: str) -> list[PriceOverride]:
    return list(
        session.scalars(
            select(PriceOverride)
            .where(PriceOverride.organization_id == organization_id)
            .order_by(PriceOverride.model, PriceOverride.provider_key)
        )
    )


def save_override(session: Session, organization_id: str, body: PriceOverrideIn) -> tuple[PriceOverride, bool]:
    """Create the override for (provider, model), or replace its prices; return it and whether it is new."""
    provider = price_table_provider(body.provider)
    model = body.model.strip().lower()
    override = session.scalar(
        select(PriceOverride).where(
            PriceOverride.organization_id == organization_id,
            PriceOverride.provider_key == (provider or ""),
            PriceOverride.model == model,
        )
    )
    created = override is None
    if override is None:
        override = PriceOverride(
            id=new_id("price_override"),
            organization_id=organization_id,
            provider=provider,
            provider_key=provider or "",
            model=model,
        )
        session.add(override)

    override.input_per_mtok = body.input_per_million_tokens
    override.output_per_mtok = body.output_per_million_tokens
    override.cache_read_per_mtok = body.cache_read_per_million_tokens
    override.cache_write_per_mtok = body.cache_write_per_million_tokens
    override.per_image = body.per_image
    override.per_audio_second = body.per_audio_second
    override.per_request = body.per_request
    override.description = body.description
    session.flush()
    log.info(
        "costs.price_override_saved",
        extra={"organization_id": organization_id, "price_override_id": override.id, "new_override": created},
    )
    return override, created


def delete_override(session: Session, organization_id: str, override_id: str) -> None:
    override = session.scalar(
        select(PriceOverride).where(
            PriceOverride.organization_id == organization_id, PriceOverride.id == override_id
        )
    )
    if override is None:
        raise not_found("Price override", "id", override_id)
    session.delete(override)
    session.flush()
    log.info(
        "costs.price_override_deleted",
        extra={"organization_id": organization_id, "price_override_id": override_id},
    )
