"""FastAPI dependencies: the request's database session and the authenticated organization."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from tallystick.server.api_keys import find_active_key
from tallystick.server.db import Store
from tallystick.server.errors import ApiError


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_session(request: Request) -> Iterator[Session]:
    """Yield the request's write session; commit when the route returns, roll back if it raises.

    The request owns the transaction: services only flush.
    """
    store: Store = request.app.state.store
    with store.sessions() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def get_read_session(request: Request) -> Iterator[Session]:
    """Yield a session for routes that only read; on SQLite it does not take the write lock."""
    store: Store = request.app.state.store
    with store.read_sessions() as session:
        try:
            yield session
        finally:
            session.rollback()


# scope="function" runs the commit before the response is sent, so a client never sees a
# success for a transaction that then failed to commit.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
ReadSession = Annotated[Session, Depends(get_read_session, scope="function")]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the organization that owns the API key, and the key's id."""

    organization_id: str
    api_key_id: str


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


# Declares the Bearer scheme in the OpenAPI document (and the Authorize button of /docs); the
# header itself is checked below, so that every failure gets the API's error shape.
_bearer_scheme = HTTPBearer(auto_error=False, description="An API key from `tallystick api-keys create`.")


def authenticate(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)] = None
) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Missing Authorization header; send 'Authorization: Bearer <API key>'")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise _unauthorized("Invalid Authorization header; expected 'Bearer <API key>'")

    store: Store = request.app.state.store
    with store.read_sessions() as session:
        api_key = find_active_key(session, secret)
        if api_key is None:
            raise _unauthorized("Invalid or revoked API key")
        principal = Principal(organization_id=api_key.organization_id, api_key_id=api_key.id)
    request.app.state.rate_limiter.check(principal.api_key_id)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
