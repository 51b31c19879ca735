"""The API's router: routes under /api/v2, served with and without the trailing slash."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tallystick.server.hardening import StrictJsonRoute

API_PREFIX = "/api/v2"


class Router(APIRouter):
    """Register every path ending in "/" a second time without it (and the reverse).

    paid-python calls collection routes with a trailing slash (``/customers/``) while other
    clients often omit it. A redirect would lose POST bodies on some clients, so both spellings
    are served directly; only the spelling given in code appears in the OpenAPI document.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("route_class", StrictJsonRoute)
        # Set here instead of in include_router, because FastAPI (0.165) puts the route as the
        # router declared it in the request scope. Metrics and logs label a request with that
        # route's path, which then includes /api/v2.
        kwargs.setdefault("prefix", API_PREFIX)
        super().__init__(**kwargs)

    def add_api_route(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().add_api_route(path, endpoint, **kwargs)
        full_path = self.prefix + path
        if full_path.endswith("/") and len(full_path) > 1:
            twin = path[:-1]
        elif path != "":
            twin = path + "/"
        else:
            return
        twin_kwargs = dict(kwargs, include_in_schema=False)
        # The OpenAPI operation id must stay unique, so the twin gets its own name.
        if twin_kwargs.get("operation_id"):
            twin_kwargs["operation_id"] = twin_kwargs["operation_id"] + "_slash"
        declared = self.routes[-1]
        super().add_api_route(twin, endpoint, **twin_kwargs)
        # Metrics and logs label both spellings with the path given in code.
        self.routes[-1].metrics_path = declared.path  # type: ignore[attr-defined]
