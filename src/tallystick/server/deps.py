"""FastAPI dependencies: the request's database session and the authenticated organization."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tallystick.server.api_keys import (
    VerifiedKey,
    find_active_key_by_hash,
    hash_api_key,
    verified_keys,
)
from tallystick.server.db import Store
from tallystick.server.errors import ApiError
from tallystick.server.rate_limit import RateLimiter
from tallystick.server.settings import Settings


def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_session(request: Request) -> AsyncIterator[Session]:
    """Yield the request's write session; commit when the route returns, roll back if it raises.

    The request owns the transaction: services only flush.
    """
    # Made in the event loop: a new session does no I/O until the route's first query.
    store: Store = request.app.state.store
    session = store.sessions()
    try:
        yield session
    except BaseException:
        await _end(request, session, commit=False)
        raise
    await _end(request, session, commit=True)


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    """Yield a session for routes that only read; on SQLite it does not take the write lock."""
    store: Store = request.app.state.store
    session = store.read_sessions()
    try:
        yield session
    finally:
        await _end(request, session, commit=False)


# Worker threads that end sessions, beside the threads that run routes.
SESSION_END_THREADS = 16


async def _end(request: Request, session: Session, *, commit: bool) -> None:
    """Commit or roll back the session's transaction in a worker thread, and close it.

    The thread comes from a limiter of its own, because a session that holds a connection (and
    on SQLite the write lock) must always get a thread to give it back. Route threads can all
    be waiting for a connection or for the write lock. Then no request would finish until the
    pool or the lock timed out.
    """
    if not session.in_transaction():
        # No transaction, so no connection: closing does no I/O.
        session.close()
        return
    limiter = getattr(request.app.state, "session_end_limiter", None)
    if limiter is None:
        # Made in the event loop that uses it, which runs one coroutine at a time.
        limiter = request.app.state.session_end_limiter = anyio.CapacityLimiter(SESSION_END_THREADS)
    store: Store = request.app.state.store
    await anyio.to_thread.run_sync(_end_in_thread, store, session, commit, limiter=limiter)


def _end_in_thread(store: Store, session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()
    if commit:
        store.run_work_after_commit(session)


# scope="function" runs the commit before the response is sent, so a client never sees a
# success for a transaction that then failed to commit.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
ReadSession = Annotated[Session, Depends(get_read_session, scope="function")]
CurrentStore = Annotated[Store, Depends(get_store)]


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


async def authenticate(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)] = None
) -> Principal:
    """Return the caller's organization from the Bearer API key, or raise the API's 401 or 429.

    An async dependency: a key found in this process's cache of verified keys costs no
    database query and no worker thread. Only a lookup in the database runs in a thread.
    """
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Missing Authorization header; send 'Authorization: Bearer <API key>'")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise _unauthorized("Invalid Authorization header; expected 'Bearer <API key>'")

    store: Store = request.app.state.store
    settings: Settings = request.app.state.settings
    key_hash = hash_api_key(secret)
    ttl_seconds = settings.api_key_cache_seconds
    key = verified_keys.get(store.url, key_hash, ttl_seconds) if ttl_seconds > 0 else None
    if key is None:
        key = await run_in_threadpool(_look_up_key, store, key_hash, ttl_seconds)
    if key is None:
        raise _unauthorized("Invalid or revoked API key")

    limiter: RateLimiter = request.app.state.rate_limiter
    if limiter.in_process:
        limiter.check(key.api_key_id, key.organization_id)
    else:
        # Shared storage such as Redis is a network call, which must not block the event loop.
        await run_in_threadpool(limiter.check, key.api_key_id, key.organization_id)
    return Principal(organization_id=key.organization_id, api_key_id=key.api_key_id)


def _look_up_key(store: Store, key_hash: str, ttl_seconds: float) -> VerifiedKey | None:
    """Read the key from the database and, when it is active and caching is on, cache it."""
    generation = verified_keys.generation()
    looked_up_at = time.monotonic()
    with store.read_sessions() as session:
        api_key = find_active_key_by_hash(session, key_hash)
        if api_key is None:
            return None
        key = VerifiedKey(organization_id=api_key.organization_id, api_key_id=api_key.id)
    if ttl_seconds > 0:
        verified_keys.put(store.url, key_hash, key, looked_up_at=looked_up_at, generation=generation)
    return key


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
