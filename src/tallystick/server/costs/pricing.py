"""Prices of model calls from the genai-prices table, and operators' per-model overrides.

`genai_prices.calc_price` takes about 50 microseconds per call, nearly all of it in splitting the
usage into priced units, which is too slow to run on every span. So the price of a model at an
instant is resolved once and compiled into a list of (unit, price, the units it contains),
which is cached. Pricing a call then multiplies counts by prices. The compiled form applies genai-prices'
own rule (a priced unit is charged for its count minus the counts of the more specific priced
units inside it, such as cache reads inside input tokens), and a test checks it gives the same
total as `calc_price` for every model in the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Any

import genai_prices
from genai_prices.data_snapshot import get_snapshot
from genai_prices.data_units import unit_data
from genai_prices.types import ModelInfo, ModelPrice, Provider, StartDateConstraint, TieredPrices, Usage

from tallystick.server.costs.normalization import UsageRecord
from tallystick.server.models.cost import COST_PLACES

PRICE_TABLE = f"genai-prices {genai_prices.__version__}"

_COST_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
_PER_MILLION = Decimal(1_000_000)
# Largest cost of one call that is stored, in USD. A cost column holds up to about 9.2 million
# USD; a call costing more than this comes from corrupt counts, and stays unpriced.
MAX_COST_PER_CALL = Decimal(1_000_000)


def round_cost(amount: Decimal) -> Decimal:
    """Round a USD cost to the twelve places that cost records store, half to even.

    This is the one rounding step of cost tracking. It applies when a record is written and when
    an amount is rendered for the wire; sums and margins add stored amounts exactly.
    """
    return amount.quantize(_COST_QUANTUM, rounding=ROUND_HALF_EVEN)


# Provider names that emitters use, mapped to genai-prices provider ids. Names not listed are
# looked up as sent. genai-prices itself resolves `aws.bedrock`, `gcp.vertex_ai` and others,
# but not `x_ai`, `gcp.gen_ai` or `azure.ai.inference`. It also maps the Azure OpenAI names
# to `openai` instead of `azure`.
PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure": "azure",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.inference": "azure",
    "aws": "aws",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "amazon": "aws",
    "google": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gemini": "google",
    "mistral": "mistral",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "x-ai": "x-ai",
    "moonshot": "moonshotai",
    "moonshot_ai": "moonshotai",
    "moonshotai": "moonshotai",
    "together_ai": "together",
    "together-ai": "together",
}


def price_table_provider(vendor: str | None) -> str | None:
    """Map an emitter's provider name to a genai-prices provider id (None: guess from model)."""
    if vendor is None:
        return None
    lowered = vendor.strip().lower()
    if not lowered:
        return None
    return PROVIDER_IDS.get(lowered, lowered)


# Date suffixes of model snapshots: -2024-07-18, -20241022, @20250929.
_DATE_SUFFIX = re.compile(r"[-@](\d{4}-\d{2}-\d{2}|\d{8})$")


def model_candidates(model: str) -> list[tuple[str | None, str]]:
    """List (provider from a prefix, model name) pairs to try, the name as sent first.

    Cleanup steps: drop a vendor prefix such as `openai/` (OpenRouter and LiteLLM style) or
    `models/` (Gemini style), then a date suffix, since genai-prices lists only some dated
    snapshots.
    """
    candidates: list[tuple[str | None, str]] = [(None, model)]
    prefix_provider: str | None = None
    name = model
    if "/" in name:
        prefix, _, rest = name.partition("/")
        if rest:
            prefix_provider = None if prefix.lower() == "models" else prefix
            name = rest
            candidates.append((prefix_provider, name))
    undated = _DATE_SUFFIX.sub("", name)
    if undated != name and undated:
        candidates.append((prefix_provider, undated))
    return candidates


@dataclass(frozen=True)
class PriceResult:
    """The outcome of pricing one call: an amount with its source, or the reason there is none."""

    amount: Decimal | None
    status: str  # priced | unpriced
    source: str | None = None  # price_table | override
    reference: str | None = None
    provider: str | None = None
    model: str | None = None
    price_model_id: str | None = None
    reason: str | None = None


def unpriced(reason: str, *, provider: str | None = None, model: str | None = None) -> PriceResult:
    return PriceResult(amount=None, status="unpriced", reason=reason, provider=provider, model=model)


def usage_counts(usage: UsageRecord) -> dict[str, int | Decimal]:
    """Return the genai-prices usage keys of a record, leaving out zero counts."""
    counts: dict[str, int | Decimal] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_reasoning_tokens": usage.reasoning_tokens,
        "input_audio_tokens": usage.input_audio_tokens,
        "output_audio_tokens": usage.output_audio_tokens,
        "input_image_tokens": usage.input_image_tokens,
    }
    if usage.audio_seconds:
        counts["audio_seconds"] = usage.audio_seconds
        counts["input_audio_seconds"] = usage.audio_seconds
    return {key: value for key, value in counts.items() if value}


# genai-prices' unit registry: usage key -> (price key, units per price, dimensions).
_UNITS = {
    usage_key: (raw["price_key"], int(raw["per"]), frozenset(raw.get("dimensions", {}).items()))
    for usage_key, raw in unit_data.items()
}
_UNITS_BY_PRICE_KEY = {price_key: (usage_key, per, dims) for usage_key, (price_key, per, dims) in _UNITS.items()}


@dataclass(frozen=True)
class _PricedUnit:
    usage_key: str
    per: int
    price: Decimal | TieredPrices
    # Indexes (in the compiled plan) of the priced units this one contains.
    contained: tuple[int, ...]


@dataclass(frozen=True)
class CompiledPrice:
    """One model's prices at one instant, ready to multiply with usage counts."""

    provider_id: str
    model_id: str
    units: tuple[_PricedUnit, ...]
    # genai-prices' own calculation, for the few models it prices with special rules.
    exact: ModelPrice | None

    def cost(self, counts: dict[str, int | Decimal]) -> Decimal:
        """Return the USD cost of `counts`; raise ValueError when counts contradict each other."""
        if self.exact is not None:
            return self.exact.calc_price(Usage(**counts))["total_price"]

        input_tokens = counts.get("input_tokens", 0)
        leaves: list[int | Decimal] = []
        total = Decimal(0)
        for unit in self.units:
            if unit.usage_key == "requests":
                leaf: int | Decimal = 1
            else:
                leaf = counts.get(unit.usage_key, 0) - sum(leaves[index] for index in unit.contained)
            if leaf < 0:
                raise ValueError(
                    f"usage counts inside {unit.usage_key} exceed {unit.usage_key} "
                    f"({counts.get(unit.usage_key, 0)})"
                )
            leaves.append(leaf)
            total += _unit_price(unit.price, input_tokens) * leaf / unit.per
        return total


def _unit_price(price: Decimal | TieredPrices, input_tokens: int | Decimal) -> Decimal:
    """Pick the tier by total input tokens; crossing a tier reprices all tokens (genai-prices' rule)."""
    if not isinstance(price, TieredPrices):
        return price
    for tier in reversed(price.tiers):
        if input_tokens > tier.start:
            return tier.price
    return price.base


def compile_model_price(provider: Provider, model: ModelInfo, model_price: ModelPrice) -> CompiledPrice:
    """Compile a genai-prices `ModelPrice` into units ordered most specific first."""
    if provider.id == "groq" and model.id.startswith("whisper-large-v3"):
        # genai-prices bills these transcriptions for at least 10 seconds, a rule outside the
        # unit table, so they go through its own calculation.
        return CompiledPrice(provider.id, model.id, (), exact=model_price)

    raw_units: list[tuple[str, int, frozenset[Any], Decimal | TieredPrices]] = []
    for price_key, price in model_price.__dict__.items():
        if price_key.startswith("_") or price is None or price_key not in _UNITS_BY_PRICE_KEY:
            continue
        usage_key, per, dimensions = _UNITS_BY_PRICE_KEY[price_key]
        raw_units.append((usage_key, per, dimensions, price))
    raw_units.sort(key=lambda unit: (-len(unit[2]), unit[0]))

    units: list[_PricedUnit] = []
    for index, (usage_key, per, dimensions, price) in enumerate(raw_units):
        contained = tuple(
            other_index
            for other_index, other in enumerate(raw_units)
            if other_index != index and dimensions <= other[2]
        )
        units.append(_PricedUnit(usage_key, per, price, contained))
    return CompiledPrice(provider.id, model.id, tuple(units), exact=None)


@dataclass(frozen=True, eq=False)
class _Resolution:
    """A price table entry found for a (provider, model) pair; compared by identity."""

    provider: Provider
    model: ModelInfo
    model_ref: str


@lru_cache(maxsize=8192)
def _resolve(provider_id: str | None, model: str) -> _Resolution | str:
    """Find the price table entry for a model, trying the cleaned-up names, or return why not."""
    snapshot = get_snapshot()
    last_error = ""
    for prefix_provider, name in model_candidates(model):
        candidate_provider = provider_id or price_table_provider(prefix_provider)
        try:
            provider, info = snapshot.find_provider_model(name, None, candidate_provider, None)
        except LookupError as error:
            last_error = str(error)
            continue
        return _Resolution(provider, info, name)
    return last_error or f"model {model!r} not found"


# Constraint keys of models whose prices change only by date, per (model, UTC date).
_DATED_KEYS: dict[tuple[int, Any], tuple[bool, ...]] = {}


def _constraint_key(model: ModelInfo, at: datetime) -> tuple[bool, ...]:
    """Return which of the model's dated or time-of-day prices are active at `at`.

    Two instants with the same result get the same prices, so this identifies the time range
    that a compiled price is valid in. Start dates compare UTC dates, so a model without
    time-of-day prices has one key per day, which is cached.
    """
    if _dated_only(model):
        day_key = (id(model), at.astimezone(UTC).date())
        cached = _DATED_KEYS.get(day_key)
        if cached is None:
            if len(_DATED_KEYS) >= _MAX_COMPILED:
                _DATED_KEYS.clear()
            cached = _DATED_KEYS[day_key] = _active_constraints(model, at)
        return cached
    return _active_constraints(model, at)


# Whether a model's prices change only by date, per model object (the price table's models
# live as long as the process).
_DATED_ONLY: dict[int, bool] = {}


def _dated_only(model: ModelInfo) -> bool:
    known = _DATED_ONLY.get(id(model))
    if known is None:
        constraints = [price.constraint for price in model.prices] if isinstance(model.prices, list) else []
        constraints += [variant.constraint for variant in model.price_variants or ()]
        known = all(item is None or isinstance(item, StartDateConstraint) for item in constraints)
        _DATED_ONLY[id(model)] = known
    return known


def _active_constraints(model: ModelInfo, at: datetime) -> tuple[bool, ...]:
    active: list[bool] = []
    if isinstance(model.prices, list):
        active.extend(p.constraint is None or p.constraint.active(at) for p in model.prices)
    for variant in model.price_variants or ():
        active.append(variant.constraint is None or variant.constraint.active(at))
    return tuple(active)


# Compiled prices keyed by (resolution, price context, active constraints). Concurrent misses
# compute the same value, so the dict needs no lock.
_COMPILED: dict[tuple[Any, ...], CompiledPrice] = {}
_MAX_COMPILED = 8192


def _compiled_for(resolution: _Resolution, service_tier: str | None, at: datetime) -> CompiledPrice:
    context: tuple[tuple[str, str], ...] = ()
    if service_tier and service_tier.lower() not in ("auto", "standard"):
        context = (("service_tier", service_tier.lower()),)
    key = (resolution, context, _constraint_key(resolution.model, at))
    compiled = _COMPILED.get(key)
    if compiled is not None:
        return compiled

    model = resolution.model
    provider = resolution.provider
    # genai-prices applies request context only to a provider's own models, not to models it
    # borrows from a fallback provider.
    own_model = any(model is listed for listed in provider.models)
    price_context = dict(context) if context and own_model else None
    compiled = compile_model_price(provider, model, model.get_prices(at, price_context))
    if len(_COMPILED) >= _MAX_COMPILED:
        _COMPILED.clear()
    _COMPILED[key] = compiled
    return compiled


def price_from_table(usage: UsageRecord, at: datetime) -> PriceResult:
    """Price a call with genai-prices at the instant it started."""
    provider_id = price_table_provider(usage.vendor)
    if not usage.model:
        return unpriced("the call names no model", provider=provider_id)
    if not usage.has_usage:
        return unpriced("the call reported no usage", provider=provider_id, model=usage.model)

    resolution = _resolve(provider_id, usage.model)
    if isinstance(resolution, str):
        return unpriced(
            f"{resolution} in {PRICE_TABLE}; set a price override for this model",
            provider=provider_id,
            model=usage.model,
        )

    compiled = _compiled_for(resolution, usage.service_tier, at)
    try:
        amount = compiled.cost(usage_counts(usage))
    except ValueError as error:
        return unpriced(f"inconsistent usage: {error}", provider=compiled.provider_id, model=usage.model)
    if amount > MAX_COST_PER_CALL:
        return _too_expensive(amount, usage)
    return PriceResult(
        amount=round_cost(amount),
        status="priced",
        source="price_table",
        reference=PRICE_TABLE,
        provider=compiled.provider_id,
        model=resolution.model_ref,
        price_model_id=compiled.model_id,
    )


@dataclass(frozen=True)
class OverridePrice:
    """An operator's price for one model, USD per million tokens and per other unit."""

    id: str
    provider: str | None
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    per_image: Decimal | None = None
    per_audio_second: Decimal | None = None
    per_request: Decimal | None = None

    def cost(self, usage: UsageRecord) -> Decimal:
        """Price usage: cache tokens at their own price when set, else at the input price."""
        cached = usage.cache_read_tokens + usage.cache_write_tokens
        uncached_input = usage.input_tokens - cached
        if uncached_input < 0:
            raise ValueError(f"cache tokens ({cached}) exceed input tokens ({usage.input_tokens})")
        cache_read_price = self.cache_read_per_mtok if self.cache_read_per_mtok is not None else self.input_per_mtok
        cache_write_price = (
            self.cache_write_per_mtok if self.cache_write_per_mtok is not None else self.input_per_mtok
        )
        per_token = (
            uncached_input * self.input_per_mtok
            + usage.cache_read_tokens * cache_read_price
            + usage.cache_write_tokens * cache_write_price
            + usage.output_tokens * self.output_per_mtok
        ) / _PER_MILLION
        other = Decimal(0)
        if self.per_image is not None:
            other += usage.image_count * self.per_image
        if self.per_audio_second is not None and usage.audio_seconds:
            other += usage.audio_seconds * self.per_audio_second
        if self.per_request is not None:
            other += self.per_request
        return per_token + other


def find_override(
    overrides: list[OverridePrice], vendor: str | None, model: str | None
) -> OverridePrice | None:
    """Pick the override for a call: same provider first, then one for any provider.

    Models match case-insensitively, as sent or after the same cleanup as price lookups.
    """
    if not overrides or not model:
        return None
    provider_id = price_table_provider(vendor)
    names = {name.lower() for _, name in model_candidates(model)}
    for wanted_provider in (provider_id, None):
        for override in overrides:
            if override.model in names and override.provider == wanted_provider:
                return override
    return None


def price_usage(usage: UsageRecord, at: datetime, overrides: list[OverridePrice]) -> PriceResult:
    """Price a call with the organization's override for its model, else with the price table."""
    override = find_override(overrides, usage.vendor, usage.model)
    if override is None:
        return price_from_table(usage, at)
    if not usage.has_usage:
        return unpriced("the call reported no usage", model=usage.model)
    try:
        amount = override.cost(usage)
    except ValueError as error:
        return unpriced(f"inconsistent usage: {error}", model=usage.model)
    if amount > MAX_COST_PER_CALL:
        return _too_expensive(amount, usage)
    return PriceResult(
        amount=round_cost(amount),
        status="priced",
        source="override",
        reference=f"override {override.id}",
        provider=price_table_provider(usage.vendor),
        model=usage.model,
        price_model_id=override.model,
    )


def _too_expensive(amount: Decimal, usage: UsageRecord) -> PriceResult:
    return unpriced(
        f"computed cost {amount:.2f} USD exceeds {MAX_COST_PER_CALL} USD for one call; "
        "check the usage counts",
        model=usage.model,
    )
