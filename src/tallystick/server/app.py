"""The ASGI application: REST API under /api/v2, OTLP trace intake at /v1/traces, health check
and OpenAPI document."""

from __future__ import annotations

import gc
import logging
import secrets
import sys
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from tallystick import __version__
from tallystick.server.db import Store
from tallystick.server.api_docs import install_api_docs
from tallystick.server.errors import install_error_handlers
from tallystick.server.hardening import BodySizeLimitMiddleware, UnstorableTextMiddleware
from tallystick.server.observability import RequestContextMiddleware, metrics_response_body
from tallystick.server.rate_limit import RateLimiter, build_storage
from tallystick.server.settings import Settings, get_settings

log = logging.getLogger(__name__)

API_DESCRIPTION = """\
Self-hostable billing for AI products, wire-compatible with the Paid v2 API.

Authenticate every `/api/v2` request with `Authorization: Bearer <API key>`.
Errors are JSON objects `{"error", "code", "details"}`; lists are
`{"data", "pagination": {"limit", "offset", "total", "hasMore"}}`.
External ids must not contain `/`.
"""


class HealthOut(BaseModel):
    status: str = Field(description="ok")
    version: str = Field(description="The tallystick version of this server.")


class NotReadyOut(BaseModel):
    status: str = Field(description="unavailable")
    error: str
    code: str = Field(description="not_ready")


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """Build the application for `settings`, or share an already open `store`."""
    settings = settings or get_settings()
    owns_store = store is None
    store = store or Store.open(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        log.info("server.started", extra={"database": store.engine.url.get_backend_name()})
        tune_garbage_collector()
        sys.setswitchinterval(THREAD_SWITCH_INTERVAL_S)
        from tallystick.server.billing.worker import start_billing_worker
        from tallystick.server.webhooks.worker import start_webhook_worker

        if settings.secret_key is None:
            # A database that is down at start must not stop the server: /readyz reports it and
            # loads the shared key once the database answers.
            _load_shared_secret_key(app, store)
        webhook_worker = start_webhook_worker(store, settings)
        app.state.webhook_worker = webhook_worker
        billing_worker = start_billing_worker(store, settings)
        yield
        if billing_worker is not None:
            await billing_worker.stop()
        if webhook_worker is not None:
            await webhook_worker.stop()
        if owns_store:
            store.dispose()
        log.info("server.stopped")

    app = FastAPI(
        title="tallystick",
        version=__version__,
        description=API_DESCRIPTION,
        # /docs is served by install_api_docs, from bundled files instead of a CDN.
        docs_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.store = store
    app.state.settings = settings
    # Set by the lifespan while the server runs; None when this process sends no webhooks.
    app.state.webhook_worker = None
    # Shared by the API rate limit and the dashboard's sign-in throttle. An invalid storage URL
    # raises RateLimitStorageError here, before the server accepts requests.
    storage_url = settings.rate_limit_storage_url.get_secret_value()
    app.state.rate_limit_storage = build_storage(storage_url, settings.rate_limit_key_prefix)
    app.state.rate_limiter = RateLimiter(settings.rate_limit, app.state.rate_limit_storage, storage_url)
    # Added before the size limit, so it runs inside it and reads only bodies within the limit.
    app.add_middleware(UnstorableTextMiddleware)
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, exempt_prefixes=("/v1/traces",)
    )
    # Added last, so it runs first and sees every response, including 413s.
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    install_api_docs(app, "/openapi.json")

    @app.get("/healthz", tags=["health"], response_model=HealthOut)
    def healthz() -> dict[str, Any]:
        """Report that the process is up (liveness); it does not touch the database."""
        return {"status": "ok", "version": __version__}

    @app.get(
        "/readyz",
        tags=["health"],
        responses={
            200: {"model": HealthOut, "description": "The database answered."},
            503: {"model": NotReadyOut, "description": "Database unreachable."},
        },
    )
    def readyz() -> Response:
        """Report whether the server can reach its database (readiness)."""
        try:
            with store.read_sessions() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            log.error("readiness.failed", extra={"error": str(error).splitlines()[0]})
            return JSONResponse(
                {"status": "unavailable", "error": "database unreachable", "code": "not_ready"}, status_code=503
            )
        if not app.state.secret_key_loaded and not _load_shared_secret_key(app, store):
            return JSONResponse(
                {"status": "unavailable", "error": "shared secret key not loaded", "code": "not_ready"},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def metrics() -> Response:
        """Prometheus metrics of this server process, in the text exposition format."""
        body, content_type = metrics_response_body()
        return Response(body, media_type=content_type)


    if settings.benchmark_endpoints:
        from tallystick.server.benchmark_routes import router as benchmark_router

        # Mounted first, like the busiest API routes (see routers.all_routers). Mounted last, a
        # floor route would pay for matching every other route, which no busy route does.
        app.include_router(benchmark_router)
    for router in _api_routers():
        app.include_router(router)
    _install_pages(app, settings)
    _install_trace_intake(app, settings)
    return app


# The interpreter's switch interval in seconds: the time a thread keeps the interpreter lock
# while another thread waits for it (CPython's default is 0.005). A 1,000-signal batch runs
# Python for about 100 ms in a worker thread. A short request of the same process, such as a
# balance read, waits for the lock at each of its steps (in the event loop, in its worker
# thread, after each round trip), up to this long each time. In three benchmark runs of
# balance reads at 500/s during ingestion of 5,000 signals/s, the p99 was 27 to 56 ms with
# 1 ms, and 49 to 51 ms in two runs with 5 ms.
THREAD_SWITCH_INTERVAL_S = 0.001


def tune_garbage_collector() -> None:
    """Make the cyclic garbage collector run less often and skip the objects made at start-up.

    A 1,000-signal request allocates far more than the default 700 objects between young
    collections, and each older collection walks every module, route and model class again.
    Frozen start-up objects are never collected, which is right since they live as long as
    the process. docs/benchmarks.md has the measured effect.
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _api_routers() -> list[Any]:
    from tallystick.server.routers import all_routers

    return all_routers()


def _install_pages(app: FastAPI, settings: Settings) -> None:
    """Mount the server-rendered pages (such as /checkout/{id}) and their static files."""
    from fastapi.staticfiles import StaticFiles

    from tallystick.server.routers import page_routers
    from tallystick.server.web import STATIC_DIR, install_page_errors

    app.state.secret_key_loaded = settings.secret_key is not None
    if settings.secret_key is not None:
        app.state.secret_key = settings.secret_key.get_secret_value()
    else:
        # Replaced at startup by the key shared through the database (see server_secrets).
        app.state.secret_key = secrets.token_urlsafe(32)
    install_page_errors(app)
    for router in page_routers():
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _load_shared_secret_key(app: FastAPI, store: Store) -> bool:
    """Replace the process's provisional secret key with the one shared through the database.

    Returns False, and keeps the provisional key, when the database cannot be read; until
    then forms and links signed by this process do not verify on other processes.
    """
    from tallystick.server.server_secrets import SECRET_KEY_NAME, shared_secret

    try:
        app.state.secret_key = shared_secret(store, SECRET_KEY_NAME)
    except SQLAlchemyError as error:
        log.error("server_secret.load_failed", extra={"error": str(error).splitlines()[0]})
        return False
    app.state.secret_key_loaded = True
    return True


def _install_trace_intake(app: FastAPI, settings: Settings) -> None:
    from tallystick.server.costs.otlp_routes import install_trace_intake

    install_trace_intake(
        app,
        max_body_bytes=settings.otlp_max_body_bytes,
        max_in_flight=settings.otlp_max_concurrent_exports,
    )


def create_app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory`: settings come from TALLYSTICK_* variables."""
    return create_app(Settings())
