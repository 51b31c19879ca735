"""Decoding of OTLP/HTTP trace export bodies into plain span views.

Both encodings decode into opentelemetry-proto's `ExportTraceServiceRequest`. OTLP/JSON differs
from the proto3 JSON mapping in one way that matters here: trace and span ids are hex strings,
not base64, so they are converted before `ParseDict`. Left as they are, a 32-digit hex id would
silently decode as base64 into 24 wrong bytes. Attribute values are read field by field, because
`MessageToDict` is several times slower per span.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

# Trace and span ids are 16 and 8 bytes; all-zero ids are invalid per the OTLP specification.
TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
_ZERO_TRACE_ID = bytes(TRACE_ID_BYTES)
_ZERO_SPAN_ID = bytes(SPAN_ID_BYTES)

# Keys of OTLP/JSON objects whose values are ids, with their size in bytes.
_ID_FIELDS = {"traceId": TRACE_ID_BYTES, "spanId": SPAN_ID_BYTES, "parentSpanId": SPAN_ID_BYTES}


class BodyError(ValueError):
    """The body cannot be read: bad encoding, bad protobuf or JSON, or too large."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class SpanView:
    """The parts of one span that cost tracking reads, with ids as lowercase hex."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    scope_name: str
    scope_version: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo `Content-Encoding` gzip or deflate, refusing output larger than `max_bytes`."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise BodyError(
            f"Unsupported Content-Encoding {content_encoding!r}; send gzip, deflate or identity",
            status=415,
        )

    decompressor = zlib.decompressobj(wbits)
    try:
        output = decompressor.decompress(body, max_bytes + 1)
        if len(output) <= max_bytes and not decompressor.unconsumed_tail:
            output += decompressor.flush()
    except zlib.error as error:
        raise BodyError(f"Body is not valid {encoding} data: {error}") from None
    if len(output) > max_bytes or decompressor.unconsumed_tail:
        raise BodyError(
            f"Decompressed body is larger than the limit of {max_bytes} bytes", status=413
        )
    return output


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    try:
        return ExportTraceServiceRequest.FromString(body)
    except DecodeError as error:
        raise BodyError(f"Body is not a valid ExportTraceServiceRequest protobuf: {error}") from None


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON body, converting hex ids to the bytes protobuf expects."""
    try:
        document = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as error:
        raise BodyError(f"Body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BodyError("Body must be a JSON object with a resourceSpans array")

    for resource_spans in _json_list(document, "resourceSpans"):
        for scope_spans in _json_list(resource_spans, "scopeSpans"):
            for span in _json_list(scope_spans, "spans"):
                _convert_json_ids(span)
                for link in _json_list(span, "links"):
                    _convert_json_ids(link)

    request = ExportTraceServiceRequest()
    try:
        ParseDict(document, request, ignore_unknown_fields=True)
    except (ParseError, TypeError, ValueError) as error:
        raise BodyError(f"Body is not a valid OTLP/JSON trace export: {error}") from None
    return request


def _json_list(parent: Any, key: str) -> list[Any]:
    if not isinstance(parent, dict):
        return []
    value = parent.get(key)
    return value if isinstance(value, list) else []


def _convert_json_ids(span: Any) -> None:
    if not isinstance(span, dict):
        return
    for key, size in _ID_FIELDS.items():
        value = span.get(key)
        if isinstance(value, str):
            span[key] = base64.b64encode(_id_bytes(value, size)).decode("ascii")


def _id_bytes(value: str, size: int) -> bytes:
    """Decode an id sent as hex (the OTLP/JSON rule) or, from some senders, as base64.

    An id that fits neither form is passed on as its raw text, so the span is later rejected
    for its id length instead of failing the whole request.
    """
    if value == "":
        return b""
    if len(value) == 2 * size:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value.encode("utf-8", "replace")
    return decoded


def text(value: str) -> str:
    """Return `value` with NUL characters replaced by U+FFFD, which PostgreSQL can store.

    Span text (model output, names, ids) may contain NUL; rejecting the export would lose the
    span's cost, so the character is replaced instead.
    """
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _array(value: AnyValue) -> list[Any]:
    return [any_value(item) for item in value.array_value.values]


def _kvlist(value: AnyValue) -> dict[str, Any]:
    return {text(item.key): any_value(item.value) for item in value.kvlist_value.values}


# Readers of each AnyValue kind; a dict lookup is faster than a chain of comparisons, and this
# runs for every attribute of every span.
_READERS = {
    "string_value": lambda value: text(value.string_value),
    "int_value": lambda value: value.int_value,
    "double_value": lambda value: value.double_value,
    "bool_value": lambda value: value.bool_value,
    "array_value": _array,
    "kvlist_value": _kvlist,
    "bytes_value": lambda value: value.bytes_value.hex(),
}


def any_value(value: AnyValue) -> Any:
    """Return the Python value of an OTLP AnyValue; arrays become lists, kvlists dicts."""
    reader = _READERS.get(value.WhichOneof("value"))  # type: ignore[arg-type]
    return reader(value) if reader is not None else None


@dataclass(slots=True)
class DecodedSpans:
    """The valid spans of a request and the number of spans rejected for invalid ids."""

    spans: list[SpanView]
    rejected: int
    rejection_reasons: list[str]


def iterate_spans(request: ExportTraceServiceRequest) -> Iterator[tuple[SpanView | None, str | None]]:
    """Yield each span as a view, or (None, reason) for a span with invalid ids."""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            scope_name = text(scope_spans.scope.name)
            scope_version = text(scope_spans.scope.version)
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                if len(trace_id) != TRACE_ID_BYTES or trace_id == _ZERO_TRACE_ID:
                    yield None, f"span {span.name!r} has an invalid trace id"
                    continue
                if len(span_id) != SPAN_ID_BYTES or span_id == _ZERO_SPAN_ID:
                    yield None, f"span {span.name!r} has an invalid span id"
                    continue
                parent = span.parent_span_id
                yield (
                    SpanView(
                        trace_id=trace_id.hex(),
                        span_id=span_id.hex(),
                        parent_span_id=parent.hex() if len(parent) == SPAN_ID_BYTES else None,
                        name=text(span.name),
                        scope_name=scope_name,
                        scope_version=scope_version,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        attributes={text(item.key): any_value(item.value) for item in span.attributes},
                    ),
                    None,
                )


def decode_spans(request: ExportTraceServiceRequest) -> DecodedSpans:
    spans: list[SpanView] = []
    reasons: list[str] = []
    rejected = 0
    for view, reason in iterate_spans(request):
        if view is None:
            rejected += 1
            if reason is not None:
                reasons.append(reason)
            continue
        spans.append(view)
    return DecodedSpans(spans=spans, rejected=rejected, rejection_reasons=reasons)
