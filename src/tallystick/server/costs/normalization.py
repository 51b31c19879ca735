"""Normalisation of LLM span attributes from every emitter into one usage record.

Emitters disagree on names and on meaning. The names come from OpenTelemetry GenAI (current and
pre-1.27 names), OpenInference (`llm.*`), Traceloop's older `llm.usage.*` names, pydantic-ai's
`gen_ai.usage.details.*` and the Paid SDK's manual wrappers. The meaning that matters most is
whether the input count includes cached tokens: OpenAI's prompt count always does, Anthropic's
raw `input_tokens` never does, and instrumentations differ in what they forward. `UsageRecord`
always contains cache-inclusive input, so cache tokens are counted once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

# OpenInference span kinds and GenAI operations that aggregate or describe other work rather
# than one model call. Billing them too would count their children's usage twice.
_NON_BILLABLE_KINDS = frozenset({"CHAIN", "TOOL", "AGENT", "RETRIEVER", "GUARDRAIL", "EVALUATOR"})
_BILLABLE_KINDS = frozenset({"LLM", "EMBEDDING"})
_NON_BILLABLE_OPERATIONS = frozenset(
    {"invoke_agent", "create_agent", "invoke_workflow", "execute_tool", "retrieval", "plan"}
)

# Attribute names per usage bucket, most specific convention first; the first present wins.
INPUT_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
)
OUTPUT_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
)
CACHE_READ_KEYS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.details.cache_read_tokens",
    "gen_ai.usage.cached_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.details.cache_write_tokens",
    "llm.token_count.prompt_details.cache_write",
)
REASONING_KEYS = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "gen_ai.usage.details.reasoning_tokens",
    "gen_ai.usage.reasoning_output_tokens",
    "llm.token_count.completion_details.reasoning",
)
INPUT_AUDIO_KEYS = (
    "gen_ai.usage.audio.input_tokens",
    "gen_ai.usage.details.input_audio_tokens",
    "llm.token_count.prompt_details.audio",
)
OUTPUT_AUDIO_KEYS = (
    "gen_ai.usage.audio.output_tokens",
    "gen_ai.usage.details.output_audio_tokens",
    "llm.token_count.completion_details.audio",
)
INPUT_IMAGE_KEYS = ("gen_ai.usage.image.input_tokens",)
TOTAL_KEYS = ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total")
# Costs some emitters compute themselves, in USD.
REPORTED_COST_KEYS = ("llm.cost.total", "operation.cost", "gen_ai.usage.cost")

PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
MODEL_KEYS = (
    "gen_ai.response.model",
    "llm.response.model_name",
    "llm.model_name",
    "gen_ai.request.model",
    "llm.request.model_name",
    "embedding.model_name",
)
SERVICE_TIER_KEYS = (
    "openai.response.service_tier",
    "gen_ai.openai.response.service_tier",
    "openai.request.service_tier",
    "gen_ai.openai.request.service_tier",
)

_USAGE_KEYS = frozenset(
    INPUT_KEYS + OUTPUT_KEYS + CACHE_READ_KEYS + CACHE_WRITE_KEYS + INPUT_AUDIO_KEYS
    + OUTPUT_AUDIO_KEYS + INPUT_IMAGE_KEYS
)
# Attributes that only the Paid SDK's manual wrappers use.
_PAID_WRAPPER_KEYS = ("gen_ai.usage.cached_input_tokens", "gen_ai.usage.reasoning_output_tokens")

# Instrumentation scope name fragments that name the provider, checked in order.
_SCOPE_PROVIDERS = (
    ("anthropic", "anthropic"),
    ("openai", "openai"),
    ("bedrock", "aws.bedrock"),
    ("google_genai", "gcp.gen_ai"),
    ("google-genai", "gcp.gen_ai"),
    ("vertexai", "gcp.vertex_ai"),
    ("gemini", "gcp.gemini"),
    ("mistral", "mistral_ai"),
    ("groq", "groq"),
    ("cohere", "cohere"),
)

# openinference-instrumentation-anthropic counts cache tokens in the prompt from 0.1.14 on.
_OPENINFERENCE_ANTHROPIC_INCLUSIVE_SINCE = (0, 1, 14)

# Providers whose own API reports input tokens without cache reads and writes. Emitters that
# forward the raw number (the Paid wrappers; Bedrock translators) send cache-exclusive input.
_CACHE_EXCLUSIVE_APIS = frozenset({"anthropic", "aws", "aws.bedrock", "amazon", "bedrock"})


# Largest count accepted in one usage bucket of one call. Far above any real call, and small
# enough that counts and their costs fit the 64-bit columns that store them.
MAX_TOKENS_PER_CALL = 10**12
# Largest cost an emitter may report for one call, in USD; larger values are not kept.
MAX_REPORTED_COST = Decimal(1_000_000)


class UsageError(ValueError):
    """A usage attribute has a value that cannot be a count, such as -3 or "many"."""


@dataclass(slots=True)
class UsageRecord:
    """The usage of one model call, in one meaning whatever the emitter.

    `input_tokens` includes cache reads and writes and audio and image input; `output_tokens`
    includes reasoning and audio output. `vendor` is the provider as the emitter named it, or
    as inferred from the instrumentation scope when no attribute names it.
    """

    emitter: str
    vendor: str | None
    model: str | None
    operation: str | None
    service_tier: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    input_image_tokens: int = 0
    image_count: int = 0
    audio_seconds: Decimal | None = None
    input_tokens_reported: int | None = None
    input_tokens_mode: str | None = None
    # False when the span carried no usage at all (a streamed call without usage, say).
    has_usage: bool = False
    reported_cost: Decimal | None = None
    reported_cost_attribute: str | None = None


def is_llm_span(attributes: dict[str, Any]) -> bool:
    """Tell whether a span describes one billable model call.

    Attribute caps can evict `openinference.span.kind` from long chat spans, leaving only the
    model and token counts, so a span with a model and usage counts as a call too.

    When two instrumentations trace the same call (a framework's LLM span around a provider
    SDK's span, such as LangChain over OpenAI), both spans pass this test. The intake then bills
    only the inner one (`span_ingest`).
    """
    kind = attributes.get("openinference.span.kind")
    if isinstance(kind, str):
        kind = kind.upper()
        if kind in _NON_BILLABLE_KINDS:
            return False
        if kind in _BILLABLE_KINDS:
            return True

    operation = attributes.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation:
        return operation not in _NON_BILLABLE_OPERATIONS

    has_model = any(key in attributes for key in MODEL_KEYS)
    return has_model and any(key in attributes for key in _USAGE_KEYS)


def normalize_span_usage(
    attributes: dict[str, Any], scope_name: str = "", scope_version: str = ""
) -> UsageRecord:
    """Read the usage of an LLM span into a `UsageRecord`.

    Raises:
        UsageError: a usage attribute is negative, fractional or not a number.
    """
    emitter = _detect_emitter(attributes, scope_name)
    vendor = _first_text(attributes, PROVIDER_KEYS) or _provider_from_scope(scope_name)
    record = UsageRecord(
        emitter=emitter,
        vendor=vendor,
        model=_first_text(attributes, MODEL_KEYS),
        operation=_first_text(attributes, ("gen_ai.operation.name",)),
        service_tier=_first_text(attributes, SERVICE_TIER_KEYS),
    )

    raw_input = _first_count(attributes, INPUT_KEYS)
    raw_output = _first_count(attributes, OUTPUT_KEYS)
    cache_read = _first_count(attributes, CACHE_READ_KEYS) or 0
    cache_write = _first_count(attributes, CACHE_WRITE_KEYS) or 0
    reasoning = _first_count(attributes, REASONING_KEYS) or 0
    total = _first_count(attributes, TOTAL_KEYS)
    image_count = _count(attributes.get("gen_ai.image.count"), "gen_ai.image.count")
    audio_seconds = _seconds(attributes.get("gen_ai.audio.input_duration_seconds"))

    record.has_usage = (
        raw_input is not None
        or raw_output is not None
        or cache_read > 0
        or cache_write > 0
        or bool(image_count)
        or audio_seconds is not None
    )
    input_default = _emitter_input_mode(emitter, vendor, scope_name, scope_version)
    record.input_tokens_reported = raw_input
    apply_token_counts(
        record,
        raw_input=raw_input or 0,
        raw_output=raw_output or 0,
        cache_read=cache_read,
        cache_write=cache_write,
        reasoning=reasoning,
        total=total,
        input_default=input_default,
    )
    record.input_audio_tokens = _first_count(attributes, INPUT_AUDIO_KEYS) or 0
    record.output_audio_tokens = _first_count(attributes, OUTPUT_AUDIO_KEYS) or 0
    record.input_image_tokens = _first_count(attributes, INPUT_IMAGE_KEYS) or 0
    record.image_count = image_count or 0
    record.audio_seconds = audio_seconds

    for key in REPORTED_COST_KEYS:
        cost = _money(attributes.get(key))
        if cost is not None:
            record.reported_cost = cost
            record.reported_cost_attribute = key
            break
    return record


def apply_token_counts(
    record: UsageRecord,
    *,
    raw_input: int,
    raw_output: int,
    cache_read: int,
    cache_write: int,
    reasoning: int,
    total: int | None,
    input_default: str,
) -> None:
    """Set the record's token buckets, making input cache-inclusive and output reasoning-inclusive.

    When the emitter sent a total, the arithmetic decides: total = input + output means input
    already held the cache tokens, total = input + cache + output means it did not. Without a
    total, cache counts larger than the input prove an exclusive input; otherwise the emitter's
    known convention (`input_default`) decides.
    """
    cached = cache_read + cache_write
    input_mode = input_default if cached else "inclusive"
    output_includes_reasoning = True

    if total is not None and (cached or reasoning):
        for input_inclusive, output_inclusive in (
            (True, True),
            (False, True),
            (True, False),
            (False, False),
        ):
            expected = raw_input + raw_output
            if not input_inclusive:
                expected += cached
            if not output_inclusive:
                expected += reasoning
            if expected == total:
                input_mode = "inclusive" if input_inclusive else "exclusive"
                output_includes_reasoning = output_inclusive
                break
    elif cached > raw_input:
        input_mode = "exclusive"

    record.input_tokens_mode = input_mode if cached else None
    record.input_tokens = raw_input + cached if input_mode == "exclusive" else raw_input
    record.output_tokens = raw_output if output_includes_reasoning else raw_output + reasoning
    record.cache_read_tokens = cache_read
    record.cache_write_tokens = cache_write
    record.reasoning_tokens = reasoning


def _detect_emitter(attributes: dict[str, Any], scope_name: str) -> str:
    """Name the attribute convention that carries the span's usage."""
    if any(key in attributes for key in _PAID_WRAPPER_KEYS):
        return "paid_wrapper"
    if scope_name == "paid.python" and "gen_ai.system" in attributes:
        return "paid_wrapper"
    if any(key.startswith("llm.token_count.") for key in attributes) or (
        "openinference.span.kind" in attributes
    ):
        return "openinference"
    if "llm.usage.prompt_tokens" in attributes or "gen_ai.usage.prompt_tokens" in attributes:
        return "traceloop_legacy"
    if any(key.startswith("gen_ai.usage.details.") for key in attributes):
        return "pydantic_ai"
    return "gen_ai"


def _emitter_input_mode(emitter: str, vendor: str | None, scope_name: str, scope_version: str) -> str:
    """Return whether this emitter's input count includes cached tokens, when no total decides it.

    Paid's wrappers forward the provider's raw number, which excludes cache tokens for
    Anthropic and Bedrock. openinference-instrumentation-anthropic folds them in since 0.1.14.
    Bedrock-hosted calls traced through OpenInference or LangChain were reported without them.
    Every other emitter follows the GenAI convention (semantic conventions 1.40): inclusive.
    """
    provider = (vendor or "").lower()
    if emitter == "paid_wrapper":
        return "exclusive" if provider in _CACHE_EXCLUSIVE_APIS else "inclusive"
    if scope_name == "openinference.instrumentation.anthropic":
        version = _version_tuple(scope_version)
        if version is not None and version < _OPENINFERENCE_ANTHROPIC_INCLUSIVE_SINCE:
            return "exclusive"
        return "inclusive"
    if emitter == "openinference" and provider in ("aws", "aws.bedrock", "amazon", "bedrock"):
        return "exclusive"
    return "inclusive"


def _provider_from_scope(scope_name: str) -> str | None:
    lowered = scope_name.lower()
    for fragment, provider in _SCOPE_PROVIDERS:
        if fragment in lowered:
            return provider
    return None


_VERSION_PART = re.compile(r"\d+")


def _version_tuple(version: str) -> tuple[int, ...] | None:
    parts = version.split(".")[:3]
    numbers: list[int] = []
    for part in parts:
        match = _VERSION_PART.match(part)
        if match is None:
            return None
        numbers.append(int(match.group()))
    return tuple(numbers) if numbers else None


def _first_text(attributes: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _first_count(attributes: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if key in attributes:
            value = _count(attributes[key], key)
            if value is not None:
                return value
    return None


def _count(value: Any, key: str) -> int | None:
    """Coerce a token count sent as int, integral double or numeric string (OTLP allows all)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise UsageError(f"{key} must be a number of tokens, not {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise UsageError(f"{key} must be a whole number of tokens, not {value!r}")
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise UsageError(f"{key} must be a number of tokens, not {value!r}") from None
    else:
        raise UsageError(f"{key} must be a number of tokens, not {value!r}")
    if number < 0:
        raise UsageError(f"{key} must not be negative, got {number}")
    if number > MAX_TOKENS_PER_CALL:
        raise UsageError(f"{key} must be at most {MAX_TOKENS_PER_CALL}, got {number}")
    return number


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        # str() first: Decimal(0.1) would carry the float's binary error into the amount.
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _seconds(value: Any) -> Decimal | None:
    number = _decimal(value)
    if number is None:
        return None
    if number < 0 or number > MAX_TOKENS_PER_CALL:
        raise UsageError(
            f"gen_ai.audio.input_duration_seconds must be between 0 and {MAX_TOKENS_PER_CALL}, got {number}"
        )
    return number


def _money(value: Any) -> Decimal | None:
    number = _decimal(value)
    if number is None or number < 0 or number > MAX_REPORTED_COST:
        return None
    return number


def metadata_attributes(attributes: dict[str, Any]) -> dict[str, Any] | None:
    """Return the `metadata.*` attributes that paid_tracing(metadata=...) flattens, unprefixed."""
    metadata = {key[9:]: value for key, value in attributes.items() if key.startswith("metadata.")}
    return metadata or None
