"""Value metrics: the value model seen as one value type per metric, edited one at a time.

A metric is a value type with one formula and one signal binding, plus an optional monetary
conversion at a flat rate (``unit_value * rate``). Every write edits the active content and
publishes it as a new value model version, as a whole upload would.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.errors import ApiError, bad_request, conflict_as_bad_request, not_found
from tallystick.server.models import ProductAttribute, Signal
from tallystick.server.schemas import decimal_to_number
from tallystick.server.value import service
from tallystick.server.value.calculations import to_decimal
from tallystick.server.value.content import prepare_content
from tallystick.server.value.definitions import ContentError
from tallystick.server.value.schemas import (
    ValueMetricCreate,
    ValueMetricMonetaryConversionIn,
    ValueMetricUnitIn,
    ValueMetricUpdate,
    ValueModelContentIn,
)
from tallystick.server.value.signal_values import active_version, lock_values

# Metrics made through this API apply to signals of any time.
EPOCH = "1970-01-01T00:00:00Z"
RATE_EXPRESSION = "unit_value * rate"
DEFAULT_CURRENCY = "USD"


def slug_from_name(name: str) -> str:
    """Derive a slug from a metric name, such as "Time saved" -> "time_saved"."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:64].strip("_")
    return slug or "metric"


def _empty_content() -> dict[str, Any]:
    return {"currency": DEFAULT_CURRENCY, "valueTypes": [], "formulas": [], "signals": []}


def _unit(unit: ValueMetricUnitIn) -> dict[str, Any]:
    body: dict[str, Any] = {"type": unit.type}
    if unit.duration_unit is not None:
        body["durationUnit"] = unit.duration_unit
    if unit.unit is not None:
        body["unit"] = unit.unit
    if unit.unit_display is not None:
        body["unit_display"] = unit.unit_display
    return body


def _rate_conversion(conversion: ValueMetricMonetaryConversionIn, path: str) -> dict[str, Any]:
    rate = to_decimal(conversion.value_per_unit)
    if rate is None:
        raise bad_request(f"{path}.valuePerUnit", "must be a number of minor units", conversion.value_per_unit)
    return {
        "expression": RATE_EXPRESSION,
        "variables": [{"id": "rate", "label": conversion.label or "rate", "default": decimal_to_number(rate)}],
    }


def _publish(
    session: Session, organization_id: str, content: dict[str, Any], paths: dict[str, str]
) -> service.BackfillResult:
    """Check edited content and publish it; error paths of the edited parts read as metric fields."""
    try:
        stored = prepare_content(ValueModelContentIn.model_validate(content))
    except ContentError as error:
        path = error.path
        for prefix, replacement in paths.items():
            if path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "["):
                path = replacement + path[len(prefix):]
                break
        raise bad_request(path, error.message, error.value) from None
    return service.publish_version(session, organization_id, stored)


def _event_name_known(session: Session, organization_id: str, event_name: str) -> bool:
    """Return whether the organization has sent this event or prices it on a product."""
    signal = session.scalar(
        select(Signal.id).where(Signal.organization_id == organization_id, Signal.event_name == event_name).limit(1)
    )
    if signal is not None:
        return True
    line = session.scalar(
        select(ProductAttribute.id)
        .where(ProductAttribute.organization_id == organization_id, ProductAttribute.event_name == event_name)
        .limit(1)
    )
    return line is not None


def create_metric(session: Session, organization_id: str, body: ValueMetricCreate) -> tuple[str, str, int]:
    """Add a metric to the value model; return its slug, name and the new version number.

    Raises:
        ApiError: 400 for invalid or duplicate fields, 404 when the signal's event name was
            never sent nor priced, 409 when `expectedActiveVersion` is not the active version.
    """
    lock_values(session, organization_id)
    current = active_version(session, organization_id)
    service.check_expected_version(current, body.expected_active_version)
    content = copy.deepcopy(current.content) if current is not None else _empty_content()

    slug = body.slug or slug_from_name(body.name)
    if any(value_type["slug"] == slug for value_type in content["valueTypes"]):
        raise conflict_as_bad_request("slug", slug, "A value metric with this slug")
    if not _event_name_known(session, organization_id, body.signal.event_name):
        raise ApiError(
            404,
            "not_found",
            f"Invalid signal.eventName {body.signal.event_name!r}: no signal with this event name was sent, and "
            "no product prices it; send a signal first or add a usage pricing line",
        )

    formula_ids = {formula["id"] for formula in content["formulas"]}
    formula_id = slug if slug not in formula_ids else f"{slug}_metric"
    calculation: dict[str, Any] = {
        "unit": _unit(body.unit),
        "formulaIds": [formula_id],
        "signalEventNames": [body.signal.event_name],
        "segmentTableIds": [],
        "overrideIds": [],
    }
    if body.monetary_conversion is not None:
        calculation["monetaryConversion"] = _rate_conversion(body.monetary_conversion, "monetaryConversion")

    value_type = _without_none(
        {
            "slug": slug,
            "name": body.name,
            "calculationTimeline": [{"effectiveFrom": EPOCH, "calculation": calculation}],
            "category": body.category,
            "description": body.description,
            "longDescription": body.long_description,
            "sources": [source.model_dump() for source in body.sources] if body.sources else None,
        }
    )
    formula = _without_none(
        {
            "id": formula_id,
            "valueTypeSlug": slug,
            "label": body.formula.label or body.name,
            "variables": [variable.model_dump(by_alias=True, exclude_none=True) for variable in body.formula.variables],
            "expression": body.formula.expression,
            "calculation": body.formula.calculation,
        }
    )
    signal = body.signal
    binding = _without_none(
        {
            "eventName": signal.event_name,
            "label": signal.label or signal.event_name,
            "formulaId": formula_id,
            "defaults": signal.defaults,
            "variableMapping": signal.variable_mapping,
            "description": signal.description,
            "labels": signal.labels,
            "tags": signal.tags,
        }
    )
    content["valueTypes"].append(value_type)
    content["formulas"].append(formula)
    content["signals"].append(binding)

    paths = {
        f"content.valueTypes[{len(content['valueTypes']) - 1}].calculationTimeline[0].calculation.unit": "unit",
        f"content.valueTypes[{len(content['valueTypes']) - 1}]": "metric",
        f"content.formulas[{len(content['formulas']) - 1}]": "formula",
        f"content.signals[{len(content['signals']) - 1}]": "signal",
        "content.signals": "signal",
    }
    result = _publish(session, organization_id, content, paths)
    return slug, body.name, result.version.version


def update_metric(session: Session, organization_id: str, slug: str, body: ValueMetricUpdate) -> tuple[str, str, int]:
    """Edit one metric; fields not sent are left alone. Return slug, name and new version."""
    lock_values(session, organization_id)
    current = active_version(session, organization_id)
    content, index = _metric_content(current, slug)
    service.check_expected_version(current, body.expected_active_version)
    value_type = content["valueTypes"][index]
    latest = _latest_entry(value_type)["calculation"]
    sent = body.provided()

    if "name" in sent and body.name is not None:
        value_type["name"] = body.name
    if "unit" in sent:
        if body.unit is None:
            raise bad_request("unit", "a metric always has a unit; send a new unit instead of null")
        latest["unit"] = _unit(body.unit)
    if "monetary_conversion" in sent:
        if body.monetary_conversion is None:
            latest.pop("monetaryConversion", None)
        else:
            latest["monetaryConversion"] = _rate_conversion(body.monetary_conversion, "monetaryConversion")
    if "archived_at" in sent:
        _set(value_type, "archivedAt", body.archived_at.isoformat().replace("+00:00", "Z") if body.archived_at else None)
    for field_name, key in (("category", "category"), ("description", "description"), ("long_description", "longDescription")):
        if field_name in sent:
            _set(value_type, key, getattr(body, field_name))
    if "sources" in sent:
        _set(value_type, "sources", [source.model_dump() for source in body.sources] if body.sources else None)
    if body.variables:
        _edit_variables(content, value_type, body)

    paths = {
        f"content.valueTypes[{index}].calculationTimeline": "unit",
        f"content.valueTypes[{index}]": "metric",
        "content.signals": "variables",
    }
    result = _publish(session, organization_id, content, paths)
    return slug, value_type["name"], result.version.version


def archive_metric(session: Session, organization_id: str, slug: str, expected: int | None) -> tuple[str, str, int]:
    """Archive a metric: hidden from lists, still evaluated, so sealed receipts still resolve."""
    lock_values(session, organization_id)
    current = active_version(session, organization_id)
    content, index = _metric_content(current, slug)
    service.check_expected_version(current, expected)
    value_type = content["valueTypes"][index]
    value_type.setdefault("archivedAt", clock.now().isoformat().replace("+00:00", "Z"))
    result = _publish(session, organization_id, content, {})
    return slug, value_type["name"], result.version.version


def _metric_content(current: Any, slug: str) -> tuple[dict[str, Any], int]:
    if current is None:
        raise not_found("Value metric", "slug", slug)
    content = copy.deepcopy(current.content)
    for index, value_type in enumerate(content["valueTypes"]):
        if value_type["slug"] == slug:
            return content, index
    raise not_found("Value metric", "slug", slug)


def _edit_variables(content: dict[str, Any], value_type: dict[str, Any], body: ValueMetricUpdate) -> None:
    formula_ids = _formula_ids(value_type)
    formulas = [formula for formula in content["formulas"] if formula["id"] in formula_ids]
    for variable_id, edit in (body.variables or {}).items():
        declaring = [formula for formula in formulas if any(v["id"] == variable_id for v in formula["variables"])]
        if not declaring:
            raise bad_request(f"variables.{variable_id}", "the metric's formula declares no such variable", variable_id)
        edited = edit.provided()
        for formula in declaring:
            variable = next(v for v in formula["variables"] if v["id"] == variable_id)
            if "label" in edited and edit.label is not None:
                variable["label"] = edit.label
            if "format" in edited:
                _set(variable, "format", edit.format)
            if "format_unit" in edited:
                _set(variable, "formatUnit", edit.format_unit)
        if "value" in edited and edit.value is not None:
            declaring_ids = {formula["id"] for formula in declaring}
            for binding in content["signals"]:
                if binding.get("formulaId") in declaring_ids:
                    binding.setdefault("defaults", {})[variable_id] = edit.value
                    (binding.get("variableMapping") or {}).pop(variable_id, None)


def _formula_ids(value_type: dict[str, Any]) -> set[str]:
    return {
        formula_id
        for entry in value_type["calculationTimeline"]
        for formula_id in entry["calculation"].get("formulaIds", [])
    }


def _latest_entry(value_type: dict[str, Any]) -> dict[str, Any]:
    return max(value_type["calculationTimeline"], key=lambda entry: entry["effectiveFrom"])


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}


# Reads


def list_metrics(session: Session, organization_id: str, *, include_archived: bool) -> list[dict[str, Any]]:
    """Return the metrics of the active value model as wire summaries, in content order."""
    current = active_version(session, organization_id)
    if current is None:
        return []
    return [
        metric_summary(value_type)
        for value_type in current.content["valueTypes"]
        if include_archived or value_type.get("archivedAt") is None
    ]


def get_metric(session: Session, organization_id: str, slug: str) -> dict[str, Any]:
    content, index = _metric_content(active_version(session, organization_id), slug)
    return metric_detail(content, content["valueTypes"][index])


def metric_summary(value_type: dict[str, Any]) -> dict[str, Any]:
    calculation = _latest_entry(value_type)["calculation"]
    return {
        "slug": value_type["slug"],
        "name": value_type["name"],
        "category": value_type.get("category"),
        "unit": _metric_unit(calculation["unit"]),
        "description": value_type.get("description"),
        "archivedAt": value_type.get("archivedAt"),
        "monetaryConversion": _metric_conversion(calculation.get("monetaryConversion")),
    }


def metric_detail(content: dict[str, Any], value_type: dict[str, Any]) -> dict[str, Any]:
    calculation = _latest_entry(value_type)["calculation"]
    formula_ids = calculation.get("formulaIds", [])
    formulas = {formula["id"]: formula for formula in content["formulas"]}
    formula = formulas.get(formula_ids[0]) if formula_ids else None
    sole = formula_ids[0] if len(formula_ids) == 1 else None
    bindings = [
        binding
        for binding in content["signals"]
        if (binding.get("formulaId") or sole) in formula_ids and binding["eventName"] in calculation["signalEventNames"]
    ]
    detail = metric_summary(value_type)
    detail.update(
        {
            "longDescription": value_type.get("longDescription"),
            "sources": value_type.get("sources"),
            "formula": None
            if formula is None
            else {
                "id": formula["id"],
                "label": formula["label"],
                "expression": formula["expression"],
                "variables": formula["variables"],
            },
            "signals": [_metric_binding(binding) for binding in bindings],
        }
    )
    return detail


def _metric_unit(unit: dict[str, Any]) -> dict[str, Any]:
    body = {"type": unit["type"]}
    for source, target in (("durationUnit", "durationUnit"), ("unit", "unit"), ("unit_display", "unitDisplay")):
        if unit.get(source) is not None:
            body[target] = unit[source]
    return body


def _metric_conversion(conversion: dict[str, Any] | None) -> dict[str, Any] | None:
    if conversion is None:
        return None
    variables = conversion.get("variables") or []
    flat_rate = conversion["expression"].strip() == RATE_EXPRESSION and [v["id"] for v in variables] == ["rate"]
    return {
        "valuePerUnit": _number(variables[0]["default"]) if flat_rate else None,
        "label": variables[0]["label"] if flat_rate else None,
        "expression": conversion["expression"],
        "variables": [{"id": v["id"], "label": v["label"], "default": _number(v["default"])} for v in variables],
    }


def _metric_binding(binding: dict[str, Any]) -> dict[str, Any]:
    # The wire binding's defaults are numbers; durations written as text and strings are left out.
    defaults = {
        key: _number(value)
        for key, value in (binding.get("defaults") or {}).items()
        if not isinstance(value, bool) and to_decimal(value) is not None
    }
    body = {
        "eventName": binding["eventName"],
        "label": binding.get("label") or binding["eventName"],
        "defaults": defaults,
        "description": binding.get("description"),
        "labels": binding.get("labels"),
        "tags": binding.get("tags"),
    }
    if binding.get("variableMapping"):
        body["variableMapping"] = binding["variableMapping"]
    return body


def _number(raw: Any) -> int | float | None:
    return decimal_to_number(to_decimal(raw))
