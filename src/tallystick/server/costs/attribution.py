"""Attribution of cost records to the signals that caused them.

Two rules, from paid-python's two ways of sending a cost-attributed signal:

- trace: a `paid.trace.signal` span whose data has ``paid.enable_cost_tracing`` takes every
  cost of its trace (all processes that share a tracing token share the trace id);
- scope: a REST signal whose data has ``paid.paid_scope_id`` takes the costs whose spans carry
  the same `paid_scope_id` attribute, for the same customer.

Costs and signals arrive in any order, minutes apart. Each signal records a claim
(`CostAttributionClaim`) and each side links whatever the other side already stored, so the link
is made by whichever arrives last. The claim's primary key gives a trace or scope one owner, and
links only fill `cost_records.signal_id` where it is NULL, so a cost is attributed to at most one
signal.

Concurrency: on PostgreSQL a cost batch and a signal for the same key can commit at the same time,
each missing the other's uncommitted rows. Both sides therefore take a transaction-scoped advisory
lock per key, in sorted order, before they look: the second to lock sees the first's committed
rows. SQLite runs one writer at a time, so it needs no lock. Callers take these locks after any
credit-account locks of the same transaction, never before, which keeps the lock order acyclic.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.models.cost import CostAttributionClaim, CostRecord

log = logging.getLogger(__name__)

TRACE = "trace"
SCOPE = "scope"


@dataclass(frozen=True, order=True)
class ClaimKey:
    """The scope of a claim: a trace id, or a customer id with a paid_scope_id."""

    kind: str
    key: str


def trace_key(trace_id: str) -> ClaimKey:
    return ClaimKey(TRACE, trace_id)


def scope_key(customer_id: str, paid_scope_id: int) -> ClaimKey:
    return ClaimKey(SCOPE, f"{customer_id}:{paid_scope_id}")


@dataclass(frozen=True)
class Claim:
    """A signal's request to own the costs of one key."""

    key: ClaimKey
    signal_id: str


def cost_keys(records: Iterable[CostKeyFields]) -> set[ClaimKey]:
    """Return the keys under which new cost records may already be claimed."""
    keys: set[ClaimKey] = set()
    for record in records:
        if record.trace_id:
            keys.add(trace_key(record.trace_id))
        if record.customer_id and record.paid_scope_id is not None:
            keys.add(scope_key(record.customer_id, record.paid_scope_id))
    return keys


@dataclass(frozen=True)
class CostKeyFields:
    """The fields of a cost record that attribution matches on."""

    trace_id: str | None
    customer_id: str | None
    paid_scope_id: int | None


def attribute(
    session: Session, organization_id: str, claims: list[Claim], cost_key_set: set[ClaimKey]
) -> int:
    """Record `claims`, then link unattributed costs under every key to the key's owner.

    `cost_key_set` contains the keys of cost records written in this transaction. Returns the
    number of cost records linked. Flushes only.
    """
    keys = sorted({claim.key for claim in claims} | cost_key_set)
    if not keys:
        return 0
    _lock_keys(session, organization_id, keys)

    for claim in claims:
        _insert_claim(session, organization_id, claim)

    owners = _owners(session, organization_id, keys)
    linked = 0
    for key in keys:
        signal_id = owners.get(key)
        if signal_id is not None:
            linked += _link(session, organization_id, key, signal_id)
    if linked:
        log.info(
            "costs.attributed",
            extra={"organization_id": organization_id, "cost_records": linked, "keys": len(keys)},
        )
    return linked


def _lock_keys(session: Session, organization_id: str, keys: list[ClaimKey]) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    lock_ids = sorted({_lock_id(organization_id, key) for key in keys})
    if not lock_ids:
        return
    # One statement for all the keys, one lock per key, in the sorted order of the array:
    # unnest returns the elements in array order, and each row takes its lock as it is read.
    session.execute(_LOCK_ALL, {"lock_ids": lock_ids})


_LOCK_ALL = text("SELECT pg_advisory_xact_lock(lock_id) FROM unnest(CAST(:lock_ids AS bigint[])) AS lock_id")


def _lock_id(organization_id: str, key: ClaimKey) -> int:
    """Map a key to the signed 64-bit number that PostgreSQL advisory locks take."""
    digest = hashlib.blake2b(
        f"cost-attribution|{organization_id}|{key.kind}|{key.key}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _insert_claim(session: Session, organization_id: str, claim: Claim) -> None:
    values = {
        "organization_id": organization_id,
        "kind": claim.key.kind,
        "claim_key": claim.key.key,
        "signal_id": claim.signal_id,
        "created_at": clock.now(),
    }
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql.insert(CostAttributionClaim).values(values).on_conflict_do_nothing()
    else:
        statement = sqlite.insert(CostAttributionClaim).values(values).on_conflict_do_nothing()
    result = session.execute(statement)
    if result.rowcount == 0:
        log.warning(
            "costs.claim_taken",
            extra={
                "organization_id": organization_id,
                "kind": claim.key.kind,
                "signal_id": claim.signal_id,
            },
        )


def _owners(session: Session, organization_id: str, keys: list[ClaimKey]) -> dict[ClaimKey, str]:
    owners: dict[ClaimKey, str] = {}
    for kind in (TRACE, SCOPE):
        wanted = [key.key for key in keys if key.kind == kind]
        if not wanted:
            continue
        rows = session.execute(
            select(CostAttributionClaim.claim_key, CostAttributionClaim.signal_id).where(
                CostAttributionClaim.organization_id == organization_id,
                CostAttributionClaim.kind == kind,
                CostAttributionClaim.claim_key.in_(wanted),
            )
        )
        for claim_key, signal_id in rows:
            owners[ClaimKey(kind, claim_key)] = signal_id
    return owners


def _link(session: Session, organization_id: str, key: ClaimKey, signal_id: str) -> int:
    statement = update(CostRecord).where(
        CostRecord.organization_id == organization_id, CostRecord.signal_id.is_(None)
    )
    if key.kind == TRACE:
        statement = statement.where(CostRecord.trace_id == key.key)
    else:
        customer_id, _, scope = key.key.rpartition(":")
        statement = statement.where(
            CostRecord.customer_id == customer_id, CostRecord.paid_scope_id == int(scope)
        )
    result = session.execute(
        statement.values(signal_id=signal_id).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)
