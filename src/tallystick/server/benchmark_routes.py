"""Floor endpoints for benchmarks: the real routes' authentication and parsing, no storage.

A benchmark reports each figure as a ratio to what the same server does when it only
authenticates and parses the same body, measured in the same run. The routes are mounted only
when the benchmark_endpoints setting (TALLYSTICK_BENCHMARK_ENDPOINTS=true) is on, which it is
not by default, and are left out of the OpenAPI document.
"""

from __future__ import annotations

import os

from fastapi import Depends, Request
from fastapi.responses import Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.concurrency import run_in_threadpool

from tallystick.server.costs.otlp_decoding import BodyError, decode_spans, parse_protobuf
from tallystick.server.deps import CurrentPrincipal, authenticate
from tallystick.server.errors import bad_request
from tallystick.server.routing import Router
from tallystick.server.signals.schemas import BulkSignalsIn, BulkSignalsOut, SignalError, parse_signal

router = Router(tags=["benchmark"], dependencies=[Depends(authenticate)], include_in_schema=False)


@router.post("/benchmark/signals/bulk", response_model=BulkSignalsOut)
def parse_signals(body: BulkSignalsIn, principal: CurrentPrincipal) -> BulkSignalsOut:
    """Authenticate and validate a signals batch as POST /signals/bulk does, and store nothing."""
    items = [parse_signal(raw, index) for index, raw in enumerate(body.signals)]
    failed = sum(isinstance(item, SignalError) for item in items)
    return BulkSignalsOut(ingested=0, duplicates=0, failed=failed, errors=[])


@router.get("/benchmark/ping")
def ping(principal: CurrentPrincipal) -> dict[str, str | int]:
    """Authenticate and return the caller's organization id and this server process's id.

    The load generator uses the process id to spread its connections over worker processes.
    """
    return {"organizationId": principal.organization_id, "process": os.getpid()}


@router.post("/benchmark/traces")
async def decode_traces(request: Request, principal: CurrentPrincipal) -> Response:
    """Decode an OTLP protobuf export into span views as /v1/traces does, and store nothing."""
    body = await request.body()
    try:
        decoded = await run_in_threadpool(lambda: decode_spans(parse_protobuf(body)))
    except BodyError as error:
        raise bad_request("body", str(error), None) from None
    response = ExportTraceServiceResponse()
    if decoded.rejected:
        response.partial_success.rejected_spans = decoded.rejected
    return Response(response.SerializeToString(), media_type="application/x-protobuf")
