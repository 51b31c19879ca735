"""Normalisation and pricing of LLM calls from every attribute convention.

Prices are those of the genai-prices 0.2.5 data, per million tokens:
- gpt-4o-mini: input $0.15, cached input $0.075, output $0.60
- gpt-4o: input $2.50, cached input $1.25, output $10
- o3-mini: input $1.10, cached input $0.55, output $4.40
- claude-sonnet-4-5 (below 200k input tokens): input $3, cache read $0.30, cache write $3.75,
  output $15; above 200k input tokens: input $6, cache read $0.60, cache write $7.50, output $22.50
- claude-3-5-haiku: input $0.80, cache read $0.08, cache write $1, output $4
- grok-3 (x-ai): input $3, cached input $0.75, output $15
- text-embedding-3-small: input $0.02
"""

from __future__ import annotations

import random
import warnings
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot

from tallystick.server.costs.normalization import UsageError, is_llm_span, normalize_span_usage
from tallystick.server.costs.pricing import (
    OverridePrice,
    compile_model_price,
    price_from_table,
    price_usage,
    usage_counts,
)

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
M = Decimal("0.000001")  # one millionth: prices below are per million tokens


def price(attributes, scope="", version=""):  # type: ignore[no-untyped-def]
    usage = normalize_span_usage(attributes, scope, version)
    return usage, price_from_table(usage, AT)


# (case, scope, scope version, attributes, expected USD cost, expected inclusive input tokens)
DIALECT_CASES = [
    (
        "openinference openai with cached input",
        "openinference.instrumentation.openai",
        "0.1.66",
        {
            "llm.system": "openai",
            "llm.model_name": "gpt-4o-mini-2024-07-18",
            "llm.token_count.prompt": 2000,
            "llm.token_count.completion": 300,
            "llm.token_count.total": 2300,
            "llm.token_count.prompt_details.cache_read": 1536,
            "openinference.span.kind": "LLM",
        },
        464 * Decimal("0.15") * M + 1536 * Decimal("0.075") * M + 300 * Decimal("0.6") * M,
        2000,
    ),
    (
        "openinference anthropic inclusive cache read and write",
        "openinference.instrumentation.anthropic",
        "0.1.20",
        {
            "llm.provider": "anthropic",
            "llm.model_name": "claude-sonnet-4-5-20250929",
            "llm.token_count.prompt": 4050,
            "llm.token_count.completion": 400,
            "llm.token_count.prompt_details.cache_read": 3000,
            "llm.token_count.prompt_details.cache_write": 1000,
            "openinference.span.kind": "LLM",
        },
        50 * 3 * M + 3000 * Decimal("0.3") * M + 1000 * Decimal("3.75") * M + 400 * 15 * M,
        4050,
    ),
    (
        "openinference anthropic before 0.1.14 is exclusive",
        "openinference.instrumentation.anthropic",
        "0.1.13",
        {
            "llm.provider": "anthropic",
            "llm.model_name": "claude-sonnet-4-5",
            "llm.token_count.prompt": 50,
            "llm.token_count.completion": 400,
            "llm.token_count.prompt_details.cache_read": 30,
            "llm.token_count.prompt_details.cache_write": 10,
            "openinference.span.kind": "LLM",
        },
        50 * 3 * M + 30 * Decimal("0.3") * M + 10 * Decimal("3.75") * M + 400 * 15 * M,
        90,
    ),
    (
        "paid wrapper anthropic raw input is exclusive",
        "paid.python",
        "",
        {
            "gen_ai.system": "anthropic",
            "gen_ai.operation.name": "messages",
            "gen_ai.response.model": "claude-3-5-haiku-20241022",
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.output_tokens": 400,
            "gen_ai.usage.cached_input_tokens": 30,
            "gen_ai.usage.cache_creation_input_tokens": 10,
        },
        50 * Decimal("0.8") * M + 30 * Decimal("0.08") * M + 10 * 1 * M + 400 * 4 * M,
        90,
    ),
    (
        "paid wrapper openai with reasoning",
        "paid.python",
        "",
        {
            "gen_ai.system": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.response.model": "o3-mini-2025-01-31",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 500,
            "gen_ai.usage.cached_input_tokens": 200,
            "gen_ai.usage.reasoning_output_tokens": 300,
        },
        800 * Decimal("1.1") * M + 200 * Decimal("0.55") * M + 500 * Decimal("4.4") * M,
        1000,
    ),
    (
        "gen_ai current names inclusive",
        "opentelemetry.instrumentation.genai.anthropic",
        "1.3b0",
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.usage.input_tokens": 4050,
            "gen_ai.usage.output_tokens": 400,
            "gen_ai.usage.cache_read.input_tokens": 3000,
            "gen_ai.usage.cache_write.input_tokens": 1000,
        },
        50 * 3 * M + 3000 * Decimal("0.3") * M + 1000 * Decimal("3.75") * M + 400 * 15 * M,
        4050,
    ),
    (
        "gen_ai total proves exclusive input",
        "some.custom.emitter",
        "",
        {
            "gen_ai.system": "anthropic",
            "gen_ai.operation.name": "chat",
            "gen_ai.response.model": "claude-sonnet-4-5",
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.output_tokens": 400,
            "gen_ai.usage.cache_creation.input_tokens": 1000,
            "gen_ai.usage.cache_read.input_tokens": 3000,
            "gen_ai.usage.total_tokens": 4450,
        },
        50 * 3 * M + 3000 * Decimal("0.3") * M + 1000 * Decimal("3.75") * M + 400 * 15 * M,
        4050,
    ),
    (
        "traceloop legacy names",
        "opentelemetry.instrumentation.openai.v1",
        "0.40.0",
        {
            "gen_ai.system": "OpenAI",
            "llm.request.type": "chat",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.prompt_tokens": 1000,
            "gen_ai.usage.completion_tokens": 100,
            "llm.usage.total_tokens": 1100,
            "gen_ai.usage.cache_read_input_tokens": 400,
        },
        600 * Decimal("2.5") * M + 400 * Decimal("1.25") * M + 100 * 10 * M,
        1000,
    ),
    (
        "pydantic-ai details",
        "pydantic-ai",
        "1.0.0",
        {
            "gen_ai.system": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.usage.details.cache_read_tokens": 500,
            "operation.cost": 0.000123,
        },
        500 * Decimal("0.15") * M + 500 * Decimal("0.075") * M + 10 * Decimal("0.6") * M,
        1000,
    ),
    (
        "x_ai provider name mapped",
        "opentelemetry.instrumentation.genai.openai",
        "1.3b0",
        {
            "gen_ai.provider.name": "x_ai",
            "gen_ai.operation.name": "chat",
            "gen_ai.response.model": "grok-3",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 100,
        },
        1000 * 3 * M + 100 * 15 * M,
        1000,
    ),
    (
        "prefixed model name",
        "litellm",
        "",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "openai/gpt-4o-mini",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 100,
        },
        1000 * Decimal("0.15") * M + 100 * Decimal("0.6") * M,
        1000,
    ),
    (
        "unknown snapshot date stripped",
        "openinference.instrumentation.openai",
        "0.1.66",
        {
            "llm.system": "openai",
            "llm.model_name": "gpt-4o-2031-01-01",
            "llm.token_count.prompt": 1000,
            "llm.token_count.completion": 100,
            "openinference.span.kind": "LLM",
        },
        1000 * Decimal("2.5") * M + 100 * 10 * M,
        1000,
    ),
    (
        "provider evicted, inferred from scope",
        "openinference.instrumentation.openai",
        "0.1.66",
        {
            "llm.model_name": "gpt-4o-mini-2024-07-18",
            "llm.token_count.prompt": 100,
            "llm.token_count.completion": 10,
        },
        100 * Decimal("0.15") * M + 10 * Decimal("0.6") * M,
        100,
    ),
    (
        "embedding span",
        "openinference.instrumentation.openai",
        "0.1.66",
        {
            "openinference.span.kind": "EMBEDDING",
            "embedding.model_name": "text-embedding-3-small",
            "llm.token_count.prompt": 5000,
            "llm.token_count.total": 5000,
        },
        5000 * Decimal("0.02") * M,
        5000,
    ),
    (
        "long context tier reprices every token",
        "openinference.instrumentation.anthropic",
        "0.1.20",
        {
            "llm.provider": "anthropic",
            "llm.model_name": "claude-sonnet-4-5",
            "llm.token_count.prompt": 250_000,
            "llm.token_count.completion": 1000,
            "openinference.span.kind": "LLM",
        },
        250_000 * 6 * M + 1000 * Decimal("22.5") * M,
        250_000,
    ),
]


@pytest.mark.parametrize(
    ("scope", "version", "attributes", "expected", "input_tokens"),
    [case[1:] for case in DIALECT_CASES],
    ids=[case[0] for case in DIALECT_CASES],
)
def test_dialect_priced_exactly(scope, version, attributes, expected, input_tokens):
    assert is_llm_span(attributes)

    usage, result = price(attributes, scope, version)

    assert result.status == "priced", result.reason
    assert result.amount == expected
    assert usage.input_tokens == input_tokens


def test_cache_tokens_counted_once():
    usage, _ = price(DIALECT_CASES[1][3], "openinference.instrumentation.anthropic", "0.1.20")

    assert usage.input_tokens == 4050
    assert usage.cache_read_tokens + usage.cache_write_tokens == 4000
    assert usage_counts(usage)["input_tokens"] == 4050


def test_unknown_model_is_unpriced():
    usage, result = price(
        {"gen_ai.system": "openai", "gen_ai.operation.name": "chat", "gen_ai.response.model": "gpt-99-turbo",
         "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}
    )

    assert result.status == "unpriced"
    assert result.amount is None
    assert "gpt-99-turbo" in result.reason
    assert "price override" in result.reason
    assert usage.input_tokens == 10


def test_call_without_usage_is_unpriced():
    _, result = price({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.system": "openai"})

    assert result.status == "unpriced"
    assert result.reason == "the call reported no usage"


def test_precomputed_cost_kept_beside_ours():
    usage, result = price(DIALECT_CASES[8][3], "pydantic-ai")

    assert usage.reported_cost == Decimal("0.000123")
    assert usage.reported_cost_attribute == "operation.cost"
    assert result.amount != usage.reported_cost


@pytest.mark.parametrize("value", [-1, 1.5, "many", True])
def test_bad_token_count_raises(value):
    with pytest.raises(UsageError):
        normalize_span_usage({"llm.model_name": "gpt-4o", "llm.token_count.prompt": value})


def test_counts_as_numeric_strings_accepted():
    usage = normalize_span_usage({"llm.model_name": "gpt-4o", "llm.token_count.prompt": "12", "llm.token_count.completion": 3.0})
    assert usage.input_tokens == 12
    assert usage.output_tokens == 3


def test_agent_spans_are_not_billed():
    assert not is_llm_span({"openinference.span.kind": "AGENT", "llm.token_count.prompt": 5, "llm.model_name": "x"})
    assert not is_llm_span({"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 5})
    assert not is_llm_span({"external_customer_id": "u1"})


def test_price_at_span_time_uses_dated_prices():
    # genai-prices lists o3 at $10/$40 per MTok, cut to $2/$8 from 2025-06-10.
    usage = normalize_span_usage(
        {"gen_ai.system": "openai", "gen_ai.operation.name": "chat", "gen_ai.response.model": "o3",
         "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 0}
    )

    before = price_from_table(usage, datetime(2025, 6, 1, tzinfo=UTC))
    after = price_from_table(usage, datetime(2025, 6, 11, tzinfo=UTC))

    assert before.amount == Decimal(10)
    assert after.amount == Decimal(2)


def test_service_tier_selects_variant():
    attributes = {"gen_ai.system": "openai", "gen_ai.operation.name": "chat", "gen_ai.response.model": "gpt-4o-mini",
                  "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 0}
    standard = price_from_table(normalize_span_usage(attributes), AT)
    flex = price_from_table(normalize_span_usage(attributes | {"openai.response.service_tier": "flex"}), AT)
    expected_flex = calc_price(
        Usage(input_tokens=1_000_000), "gpt-4o-mini", provider_id="openai",
        genai_request_timestamp=AT, price_context={"service_tier": "flex"},
    ).total_price

    assert standard.amount == Decimal("0.15")
    assert flex.amount == expected_flex


def test_override_wins_and_prices_unknown_model():
    override = OverridePrice(
        id="cpo_1", provider=None, model="my-finetune", input_per_mtok=Decimal("2"),
        output_per_mtok=Decimal("8"), cache_read_per_mtok=Decimal("0.5"), per_request=Decimal("0.001"),
    )
    usage = normalize_span_usage(
        {"gen_ai.system": "openai", "gen_ai.operation.name": "chat", "gen_ai.response.model": "openai/My-Finetune",
         "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100, "gen_ai.usage.cache_read.input_tokens": 400}
    )

    result = price_usage(usage, AT, [override])

    assert result.status == "priced"
    assert result.source == "override"
    assert result.amount == 600 * 2 * M + 400 * Decimal("0.5") * M + 100 * 8 * M + Decimal("0.001")


def test_compiled_prices_match_calc_price_for_every_model():
    """The compiled price gives genai-prices' own total for every model and usage shape."""
    shapes = [
        {"input_tokens": 1000, "output_tokens": 200},
        {"input_tokens": 5000, "cache_read_tokens": 3000, "cache_write_tokens": 1000, "output_tokens": 400},
        {"input_tokens": 300_000, "cache_read_tokens": 3000, "output_tokens": 400, "output_reasoning_tokens": 100},
        {"input_tokens": 2000, "input_audio_tokens": 500, "output_tokens": 100, "output_audio_tokens": 50},
        {"input_tokens": 900, "input_image_tokens": 300, "output_tokens": 7},
        {"audio_seconds": Decimal("12.5"), "input_audio_seconds": Decimal("12.5")},
    ]
    generator = random.Random(7)
    checked = 0
    for provider in get_snapshot().providers:
        for model in provider.models:
            model_price = model.get_prices(AT)
            compiled = compile_model_price(provider, model, model_price)
            for shape in shapes + [{"input_tokens": generator.randint(1, 10**6), "output_tokens": generator.randint(0, 10**5)}]:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        expected = model_price.calc_price(Usage(**shape))["total_price"]
                    except ValueError:
                        with pytest.raises(ValueError):
                            compiled.cost(shape)
                        continue
                assert compiled.cost(shape) == expected, (provider.id, model.id, shape)
                checked += 1
    assert checked > 5000


def test_time_of_day_prices_follow_the_clock():
    """DeepSeek bills off-peak hours less; each half hour of a day gets calc_price's amount."""
    usage = normalize_span_usage(
        {"gen_ai.system": "deepseek", "gen_ai.operation.name": "chat", "gen_ai.response.model": "deepseek-chat",
         "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 1_000_000}
    )
    amounts = set()
    for half_hour in range(48):
        at = datetime(2025, 3, 1, half_hour // 2, 30 * (half_hour % 2), tzinfo=UTC)
        expected = calc_price(
            Usage(input_tokens=1_000_000, output_tokens=1_000_000), "deepseek-chat",
            provider_id="deepseek", genai_request_timestamp=at,
        ).total_price

        assert price_from_table(usage, at).amount == expected, at
        amounts.add(expected)
    assert len(amounts) > 1
