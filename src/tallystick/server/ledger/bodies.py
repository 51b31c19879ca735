"""Request bodies of the ledger routes, parsed with exact decimal credit amounts."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from tallystick.server.errors import bad_request, validation_error_to_api_error
from tallystick.server.hardening import parse_strict_json

ModelT = TypeVar("ModelT", bound=BaseModel)


def exact_json_body(model: type[ModelT]) -> Callable[[Request], Coroutine[Any, Any, ModelT]]:
    """Build a dependency that parses the body with JSON numbers read as exact Decimals.

    FastAPI's own parsing turns 0.1 into a float first, which cannot hold every decimal credit
    amount exactly, so credit amounts are parsed here instead.
    """

    async def parse(request: Request) -> ModelT:
        raw = await request.body()
        # The route's own strict check runs only for a JSON content type, and curl -d sends a
        # form content type, so this parse rejects NaN and Infinity itself.
        document = parse_strict_json(raw or b"null", parse_float=Decimal)
        if not isinstance(document, dict):
            # The same 400 as FastAPI's routes give a body that is not an object.
            raise bad_request("body", "must be a JSON object", document if raw else None)
        try:
            return model.model_validate(document)
        except ValidationError as error:
            raise validation_error_to_api_error(list(error.errors()), "body", document, model) from None

    return parse


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Describe a body parsed by `exact_json_body` in the OpenAPI document."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema(by_alias=True)}},
        }
    }
