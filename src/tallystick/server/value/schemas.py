"""Wire models of delivered value: value model content, value metrics and value receipts.

Monetary amounts in value models and receipts are minor units (cents for USD) of the model
currency: fixed money parameters, `valuePerUnit`, conversion results and
`totalDeliveredValue` alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, Field

from tallystick.server.schemas import PaginationOut, RequestModel, ResponseModel, to_utc

# Slugs of value types: lowercase letters, digits, "_" and "-", starting with a letter or digit.
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Ids of formulas, overrides and segment tables.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

MAX_VALUE_TYPES = 200
MAX_FORMULAS = 500
MAX_SIGNAL_BINDINGS = 1000
MAX_VARIABLES = 50
MAX_OVERRIDES = 1000
MAX_SEGMENT_ROWS = 5000

# A fixed parameter value: a number, or a string (a duration such as "4 minutes", a string
# parameter, or a decimal number written as text), or a boolean.
FixedValue = bool | int | float | str

# Maximum length of the name or label of a value model part.
MAX_LABEL_LENGTH = 200
NAME = Field(min_length=1, max_length=MAX_LABEL_LENGTH)
TEXT = Field(default=None, max_length=2000)
LONG_TEXT = Field(default=None, max_length=20000)


def as_utc(value: datetime | None) -> datetime | None:
    """Read a naive date-time as UTC, and convert aware ones to UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return to_utc(value)


# A date-time read as UTC when it has no offset.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


# Value model content


class SourceIn(RequestModel):
    name: str = NAME
    url: str = Field(min_length=1, max_length=2048)


class UnitIn(RequestModel):
    """A value type's unit: monetary, duration (with durationUnit), count, percentage or custom."""

    type: str = Field(description="monetary, duration, count, percentage or custom.")
    duration_unit: str | None = Field(default=None, description="seconds, minutes, hours or days.")
    unit: str | None = Field(default=None, max_length=64, description="Machine name of a custom or count unit.")
    # The value model content spells this key in snake case, unlike the rest of the API.
    unit_display: str | None = Field(
        default=None,
        max_length=64,
        validation_alias=AliasChoices("unit_display", "unitDisplay"),
        serialization_alias="unit_display",
        description="Customer-facing label of a custom or count unit, such as 'tickets resolved'.",
    )


class ConditionResultIn(RequestModel):
    type: str = Field(description="constant or expression.")
    value: int | float | None = None
    expression: str | None = Field(default=None, max_length=2000)


class ConditionIn(RequestModel):
    field: str = Field(min_length=1, max_length=255, description="A variable id or a signal data field.")
    operator: str = Field(description="gte, gt, lt, lte, eq, neq, contains, eq_string or eq_bool.")
    value: FixedValue
    result: ConditionResultIn


class ConversionVariableIn(RequestModel):
    id: str = Field(min_length=1, max_length=64)
    label: str = NAME
    default: FixedValue


class MonetaryConversionIn(RequestModel):
    """Turns one signal's value into money: `expression` over `unit_value` and variables."""

    expression: str = Field(min_length=1, max_length=2000)
    variables: list[ConversionVariableIn] | None = Field(default=None, max_length=MAX_VARIABLES)
    conditions: list[ConditionIn] | None = Field(default=None, max_length=MAX_VARIABLES)


class CalculationIn(RequestModel):
    unit: UnitIn
    monetary_conversion: MonetaryConversionIn | None = None
    formula_ids: list[str] = Field(default_factory=list, max_length=MAX_FORMULAS)
    signal_event_names: list[str] = Field(default_factory=list, max_length=MAX_SIGNAL_BINDINGS)
    segment_table_ids: list[str] = Field(default_factory=list)
    override_ids: list[str] = Field(default_factory=list, max_length=MAX_OVERRIDES)


class CalculationEntryIn(RequestModel):
    effective_from: UtcDatetime
    calculation: CalculationIn


class ValueTypeIn(RequestModel):
    slug: str = Field(pattern=SLUG_PATTERN)
    name: str = NAME
    calculation_timeline: list[CalculationEntryIn] = Field(min_length=1, max_length=100)
    description: str | None = TEXT
    long_description: str | None = LONG_TEXT
    sources: list[SourceIn] | None = Field(default=None, max_length=10)
    display_order: int | None = None
    color: str | None = Field(default=None, max_length=32)
    icon: str | None = Field(default=None, max_length=64)
    category: str | None = Field(default=None, max_length=32)
    archived_at: UtcDatetime | None = None


class DerivedFromIn(RequestModel):
    source_field: str = Field(min_length=1, max_length=255)
    target_unit: str


class FormulaVariableIn(RequestModel):
    id: str = Field(min_length=1, max_length=64)
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    type: str | None = Field(default=None, description="number, money, duration, boolean or string.")
    description: str | None = TEXT
    format: str | None = Field(default=None, description="Display hint: percent or duration.")
    format_unit: str | None = Field(default=None, description="Unit of a duration: seconds, minutes, hours or days.")
    derived_from: DerivedFromIn | None = None


class FormulaIn(RequestModel):
    id: str = Field(pattern=ID_PATTERN)
    value_type_slug: str
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    description: str | None = TEXT
    variables: list[FormulaVariableIn] = Field(default_factory=list, max_length=MAX_VARIABLES)
    expression: str | None = Field(default=None, max_length=2000)
    conditions: list[ConditionIn] | None = Field(default=None, max_length=MAX_VARIABLES)
    default_result: ConditionResultIn | None = None
    calculation: str | None = Field(
        default=None,
        description="A built-in calculation (time_saved, money_saved or direct_amount) that "
        "supplies the expression and variables.",
    )


class SignalBindingIn(RequestModel):
    event_name: str = Field(min_length=1, max_length=255)
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    formula_id: str | None = None
    variable_mapping: dict[str, str] | None = Field(
        default=None, description="Formula variable id -> signal data field it is read from."
    )
    defaults: dict[str, FixedValue] | None = Field(default=None, description="Fixed variable values.")
    segment_table_ids: list[str] | None = None
    description: str | None = TEXT
    labels: list[str] | None = None
    tags: list[str] | None = None


class SegmentColumnIn(RequestModel):
    variable_id: str = Field(min_length=1, max_length=64)
    label: str = NAME
    type: str = "number"


class SegmentRowIn(RequestModel):
    segment_values: dict[str, str]
    variables: dict[str, int | float]


class SegmentTableIn(RequestModel):
    id: str = Field(pattern=ID_PATTERN)
    label: str = NAME
    segment_keys: list[str] = Field(min_length=1, max_length=10)
    columns: list[SegmentColumnIn] = Field(max_length=MAX_VARIABLES)
    rows: list[SegmentRowIn] = Field(max_length=MAX_SEGMENT_ROWS)
    default_row: dict[str, int | float] | None = None


class OverrideScopeIn(RequestModel):
    customer_ids: list[str] | None = Field(default=None, description="Customer ids or external ids.")
    customer_group_ids: list[str] | None = None


class SignalOverrideIn(RequestModel):
    defaults: dict[str, FixedValue] | None = None


class ValueTypeOverrideIn(RequestModel):
    variables: dict[str, FixedValue] | None = None


class ConversionOverrideIn(RequestModel):
    variables: dict[str, int | float] | None = None


class OverrideIn(RequestModel):
    id: str = Field(pattern=ID_PATTERN)
    label: str = NAME
    scope: OverrideScopeIn
    currency: str | None = None
    signal_overrides: dict[str, SignalOverrideIn] | None = None
    value_type_overrides: dict[str, ValueTypeOverrideIn] | None = None
    additional_signals: list[SignalBindingIn] | None = None
    monetary_conversion_overrides: dict[str, ConversionOverrideIn] | None = None


class ValueModelContentIn(RequestModel):
    currency: str = Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code of monetary values.")
    value_types: list[ValueTypeIn] = Field(max_length=MAX_VALUE_TYPES)
    formulas: list[FormulaIn] = Field(max_length=MAX_FORMULAS)
    signals: list[SignalBindingIn] = Field(max_length=MAX_SIGNAL_BINDINGS)
    segment_tables: list[SegmentTableIn] | None = Field(default=None, max_length=100)
    overrides: list[OverrideIn] | None = Field(default=None, max_length=MAX_OVERRIDES)


class ValueModelUpdate(RequestModel):
    content: ValueModelContentIn
    effective_from: UtcDatetime | None = None
    effective_to: UtcDatetime | None = None


class ValueModelDetailOut(ResponseModel):
    id: str
    version: int
    content: dict[str, Any]
    created_at: datetime
    activated_at: datetime | None = None
    effective_from: datetime | None = None
    effective_to: datetime | None = None
    status: str


class ValueModelSummaryOut(ResponseModel):
    id: str
    version: int
    status: str
    created_at: datetime
    activated_at: datetime | None = None
    archived_at: datetime | None = None
    effective_from: datetime | None = None
    effective_to: datetime | None = None


class ValueModelVersionListOut(ResponseModel):
    data: list[ValueModelSummaryOut]
    pagination: PaginationOut


class BackfillOut(ResponseModel):
    value_model_id: str
    version: int
    signals_evaluated: int = Field(description="Signals whose delivered value was computed again.")
    receipts_refreshed: int = Field(description="Draft value receipts repopulated.")


# Value metrics: one value type with one formula and one signal binding


class ValueMetricUnitIn(RequestModel):
    type: str = Field(description="monetary, duration, count, percentage or custom.")
    duration_unit: str | None = None
    unit: str | None = Field(default=None, max_length=64)
    unit_display: str | None = Field(default=None, max_length=64)


class ValueMetricMonetaryConversionIn(RequestModel):
    value_per_unit: int | float | str = Field(
        description="Money per one unit of the metric, in minor units (cents for USD)."
    )
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)


class ValueMetricFormulaIn(RequestModel):
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    expression: str | None = Field(default=None, max_length=2000)
    variables: list[FormulaVariableIn] = Field(default_factory=list, max_length=MAX_VARIABLES)
    calculation: str | None = None


class ValueMetricSignalIn(RequestModel):
    event_name: str = Field(min_length=1, max_length=255)
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    defaults: dict[str, FixedValue] | None = None
    variable_mapping: dict[str, str] | None = None
    description: str | None = TEXT
    labels: list[str] | None = None
    tags: list[str] | None = None


class ValueMetricCreate(RequestModel):
    name: str = NAME
    slug: str | None = Field(default=None, pattern=SLUG_PATTERN)
    unit: ValueMetricUnitIn
    monetary_conversion: ValueMetricMonetaryConversionIn | None = None
    formula: ValueMetricFormulaIn
    signal: ValueMetricSignalIn
    category: str | None = Field(default=None, max_length=32)
    description: str | None = TEXT
    long_description: str | None = LONG_TEXT
    sources: list[SourceIn] | None = Field(default=None, max_length=3)
    expected_active_version: int | None = None


class ValueMetricVariableEdit(RequestModel):
    value: int | float | str | None = None
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    format: str | None = None
    format_unit: str | None = None


class ValueMetricUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    unit: ValueMetricUnitIn | None = None
    monetary_conversion: ValueMetricMonetaryConversionIn | None = None
    variables: dict[str, ValueMetricVariableEdit] | None = None
    archived_at: UtcDatetime | None = None
    category: str | None = Field(default=None, max_length=32)
    description: str | None = TEXT
    long_description: str | None = LONG_TEXT
    sources: list[SourceIn] | None = Field(default=None, max_length=3)
    expected_active_version: int | None = None


class ValueMetricWriteAckOut(ResponseModel):
    slug: str
    name: str
    version: int = Field(description="The value model version this write produced.")


class ValueMetricListOut(ResponseModel):
    data: list[dict[str, Any]]
    pagination: PaginationOut


# Value receipts


class ReceiptProductIn(RequestModel):
    product_id: str = Field(min_length=1, max_length=255, description="Product id or external id.")
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")


class ValueReceiptRequest(RequestModel):
    customer_id: str | None = Field(default=None, min_length=1, max_length=255)
    external_customer_id: str | None = Field(default=None, min_length=1, max_length=255)
    start_date: UtcDatetime = Field(description="Start of the period, inclusive.")
    end_date: UtcDatetime = Field(description="End of the period, exclusive.")
    product: ReceiptProductIn | None = None
    order_id: str | None = Field(default=None, min_length=1, max_length=255)


class PublishRequest(RequestModel):
    publish_expires_at: UtcDatetime | None = None


class ReceiptLinkRequest(RequestModel):
    expires_in_seconds: int | None = Field(
        default=None, description="Lifetime of the link in seconds; default 3600, at most 30 days."
    )


class ValueReceiptSyncOut(ResponseModel):
    id: str
    status: str = Field(description="draft, or posted once sealed.")
    public_url_token: str
    public_url: str
    generated_at: datetime | None = None


class ValueReceiptLineOut(ResponseModel):
    value_type_slug: str
    name: str
    description: str | None = None
    unit: dict[str, Any]
    aggregation: str = Field(description="sum, or mean for percentages.")
    quantity: str = Field(description="Total (or mean) of the known values, as an exact decimal string.")
    money: int | None = Field(default=None, description="Monetary value in minor units of the receipt currency.")
    signal_count: int
    unknown_count: int
    unknown_reasons: dict[str, Any]
    inputs: list[Any]


class ValueReceiptSummaryOut(ResponseModel):
    id: str
    status: str
    public_url_token: str
    public_url: str
    is_published: bool
    customer_id: str | None = None
    customer_name: str | None = None
    customer_external_id: str | None = None
    order_id: str | None = None
    product_id: str | None = None
    currency: str
    start_date: datetime | None = None
    end_date: datetime | None = None
    total_delivered_value: int | None = Field(
        default=None, description="Sum of the lines' monetary values, in minor units of `currency`."
    )
    archived_at: datetime | None = None
    created_at: datetime


class ValueReceiptDetailOut(ValueReceiptSummaryOut):
    published_at: datetime | None = None
    publish_expires_at: datetime | None = None
    allow_embed: bool = False
    sealed_at: datetime | None = None
    generated_at: datetime | None = None
    value_model_version: int | None = None
    lines: list[ValueReceiptLineOut] = Field(default_factory=list)


class ValueReceiptListOut(ResponseModel):
    data: list[ValueReceiptSummaryOut]
    total: int


class SuccessOut(ResponseModel):
    success: bool


class ReceiptLinkOut(ResponseModel):
    url: str
    expires_at: datetime
