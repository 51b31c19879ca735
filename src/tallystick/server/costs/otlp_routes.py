"""OTLP/HTTP trace intake at POST /v1/traces (protobuf or JSON, optionally gzip or deflate).

Responses follow the OTLP/HTTP specification: 200 with an `ExportTraceServiceResponse` in the
request's encoding, carrying `partial_success.rejected_spans` when some spans were rejected, and
failures carry a `google.rpc.Status` body. Overload answers 503 with `Retry-After`, which every
OTLP/HTTP exporter retries (Python exporters before 1.45 do not retry 429). Authentication
uses the same API keys as the REST API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from google.protobuf.json_format import MessageToJson
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from tallystick.server.costs.otlp_decoding import (
    BodyError,
    decode_spans,
    decompress,
    parse_json,
    parse_protobuf,
)
from tallystick.server.costs.span_ingest import RetryableIngestError, ingest_spans
from tallystick.server.db import Store
from tallystick.server.deps import Principal, authenticate
from tallystick.server.errors import ApiError

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# Seconds a client is asked to wait before retrying an export refused for overload.
RETRY_AFTER_SECONDS = 1
# Maximum length of the error message returned in partial_success, in characters.
_MAX_ERROR_MESSAGE = 2000

_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    503: code_pb2.UNAVAILABLE,
}


@dataclass
class TraceIntakeLimits:
    """Bounds of the intake: body size (before and after decompression) and concurrent exports.

    `in_flight` is only read and changed on the event loop thread, so it needs no lock.
    """

    max_body_bytes: int
    max_in_flight: int
    in_flight: int = 0


def install_trace_intake(app: FastAPI, *, max_body_bytes: int, max_in_flight: int) -> None:
    """Mount POST /v1/traces on `app` (at the root, beside /api/v2)."""
    app.state.trace_intake_limits = TraceIntakeLimits(max_body_bytes, max_in_flight)
    app.include_router(router)


router = APIRouter(tags=["traces"])


@router.post(
    TRACES_PATH,
    summary="Export traces (OTLP/HTTP)",
    response_class=Response,
    responses={
        200: {"description": "ExportTraceServiceResponse, with partial_success when spans were rejected."},
        400: {"description": "The body is not a valid export; a google.rpc.Status says why."},
        401: {"description": "Missing, unknown or revoked API key."},
        413: {"description": "The body, or its decompressed form, exceeds the size limit."},
        415: {"description": "Unsupported Content-Type or Content-Encoding."},
        503: {"description": "Too many exports at once; retry after Retry-After seconds."},
    },
)
async def export_traces(request: Request) -> Response:
    """Receive spans from any OTLP/HTTP exporter, such as paid-python's `initialize_tracing`.

    Send `Content-Type: application/x-protobuf` (or `application/json`, with hex trace and
    span ids), `Authorization: Bearer <API key>`, and optionally `Content-Encoding: gzip` or
    `deflate`. LLM spans become cost records, deduplicated by (trace id, span id); paid-python
    `signal` spans become signals. Spans with invalid ids or values are counted in
    `partial_success.rejected_spans`; the rest of the export is kept.
    """
    encoding = _encoding(request.headers.get("content-type"))
    if encoding is None:
        return _status_response(
            415,
            f"Unsupported Content-Type {request.headers.get('content-type')!r}; "
            f"send {PROTOBUF} or {JSON}",
            JSON,
        )

    limits: TraceIntakeLimits = request.app.state.trace_intake_limits
    if limits.in_flight >= limits.max_in_flight:
        log.warning("otlp.export_throttled", extra={"in_flight": limits.in_flight})
        return _status_response(
            503,
            "Too many trace exports in progress; retry later",
            encoding,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    limits.in_flight += 1
    try:
        return await _handle_export(request, encoding, limits)
    finally:
        limits.in_flight -= 1


async def _handle_export(request: Request, encoding: str, limits: TraceIntakeLimits) -> Response:
    try:
        principal: Principal = await authenticate(request)
    except ApiError as error:
        if error.status == 429:
            # Rate limited: answered as 503, which OTLP exporters before 1.45 retry and 429 not.
            headers = dict(error.headers or {})
            headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
            return _status_response(503, error.message, encoding, headers=headers)
        return _status_response(error.status, error.message, encoding, headers=error.headers)

    try:
        body = await _read_body(request, limits.max_body_bytes)
    except BodyError as error:
        return _status_response(error.status, str(error), encoding)

    store: Store = request.app.state.store
    try:
        response = await run_in_threadpool(
            _process,
            store,
            principal.organization_id,
            body,
            encoding,
            request.headers.get("content-encoding"),
            limits.max_body_bytes,
        )
    except BodyError as error:
        return _status_response(error.status, str(error), encoding)
    except (OperationalError, RetryableIngestError):
        # Deadlocks, serialization failures and lost connections: nothing was committed, and
        # the same export can succeed on retry.
        log.warning(
            "otlp.export_retryable_failure",
            extra={"organization_id": principal.organization_id},
            exc_info=True,
        )
        return _status_response(
            503,
            "The trace store is busy; retry later",
            encoding,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return _message_response(response, encoding)


def _process(
    store: Store,
    organization_id: str,
    body: bytes,
    encoding: str,
    content_encoding: str | None,
    max_bytes: int,
) -> ExportTraceServiceResponse:
    raw = decompress(body, content_encoding, max_bytes)
    request = parse_protobuf(raw) if encoding == PROTOBUF else parse_json(raw)
    decoded = decode_spans(request)

    with store.transaction() as session:
        result = ingest_spans(session, organization_id, decoded.spans)

    response = ExportTraceServiceResponse()
    rejected = decoded.rejected + result.rejected
    if rejected:
        reasons = decoded.rejection_reasons + result.errors
        message = f"{rejected} span(s) rejected: " + "; ".join(reasons)
        if len(message) > _MAX_ERROR_MESSAGE:
            message = message[: _MAX_ERROR_MESSAGE - 3] + "..."
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
        log.warning(
            "otlp.spans_rejected",
            extra={"organization_id": organization_id, "rejected": rejected},
        )
    return response


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyError(f"Body of {declared} bytes exceeds the limit of {max_bytes} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyError(f"Body exceeds the limit of {max_bytes} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _encoding(content_type: str | None) -> str | None:
    """Match the content type loosely, as collectors do: parameters and vendor prefixes vary."""
    lowered = (content_type or "").lower()
    if "protobuf" in lowered:
        return PROTOBUF
    if "json" in lowered:
        return JSON
    return None


def _message_response(message: Any, encoding: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if encoding == PROTOBUF:
        content = message.SerializeToString()
    else:
        content = MessageToJson(message, indent=None).encode("utf-8")
    return Response(content=content, status_code=status, media_type=encoding, headers=headers)


def _status_response(
    status: int, message: str, encoding: str, headers: dict[str, str] | None = None
) -> Response:
    body = status_pb2.Status(code=_GRPC_CODES.get(status, code_pb2.UNKNOWN), message=message)
    return _message_response(body, encoding, status, headers)
