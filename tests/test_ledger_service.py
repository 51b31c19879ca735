"""Ledger service scenarios on SQLite and PostgreSQL, with a frozen clock and exact amounts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from tallystick.server import clock
from tallystick.server.errors import ApiError
from tallystick.server.ledger import service
from tallystick.server.models import (
    CreditGrant,
    CreditHold,
    LedgerEntry,
    OutboxEvent,
    PendingConsumption,
)
from tests.ledger_factories import (
    Account,
    available,
    consume,
    create_account,
    create_customer,
    grant,
    grants_match_entries,
    ledger_totals,
)

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def frozen():
    clock.freeze(START)
    yield
    clock.freeze(None)


@pytest.fixture
def account(store, frozen):  # type: ignore[no-untyped-def]
    return create_account(store)


def advance(**delta: float) -> None:
    clock.freeze(clock.now() + timedelta(**delta))


def entries(store, account, **conditions):  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        statement = select(LedgerEntry).where(
            LedgerEntry.organization_id == account.organization_id
        ).order_by(LedgerEntry.sequence)
        for name, value in conditions.items():
            statement = statement.where(getattr(LedgerEntry, name) == value)
        return session.scalars(statement).all()


def pending_rows(store, account):  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return session.scalars(
            select(PendingConsumption)
            .where(PendingConsumption.organization_id == account.organization_id)
            .order_by(PendingConsumption.sequence)
        ).all()


def depleted_events(store, account):  # type: ignore[no-untyped-def]
    return outbox_events(store, account, "billing-credits-depleted")


def outbox_events(store, account, event_type: str):  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.organization_id == account.organization_id, OutboxEvent.event_type == event_type)
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
        ).all()


def test_consume_draws_priority_then_expiry_then_oldest(store, account):
    late = grant(store, account, "5", expires_at=START + timedelta(days=30))
    advance(seconds=1)
    never = grant(store, account, "5")
    advance(seconds=1)
    soon = grant(store, account, "5", expires_at=START + timedelta(days=10))
    advance(seconds=1)
    first = grant(store, account, "2", priority=-1)
    advance(seconds=1)
    older_never = never
    newer_never = grant(store, account, "5")

    result = consume(store, account, "18.5", signal_id="sig_a")

    assert result.covered == Decimal("18.5")
    assert result.pending == 0
    spends = entries(store, account, entry_type="spend")
    assert [(entry.grant_id, entry.amount) for entry in spends] == [
        (first.id, Decimal(-2)),
        (soon.id, Decimal(-5)),
        (late.id, Decimal(-5)),
        (older_never.id, Decimal(-5)),
        (newer_never.id, Decimal("-1.5")),
    ]
    assert all(entry.signal_id == "sig_a" for entry in spends)
    assert available(store, account) == Decimal("3.5")


def test_uncovered_consumption_becomes_pending(store, account):
    grant(store, account, "3")

    result = consume(store, account, "5", signal_id="sig_1", event_name="chat_message")

    assert (result.covered, result.pending, result.available_after) == (Decimal(3), Decimal(2), 0)
    [row] = pending_rows(store, account)
    assert row.remaining == Decimal(2)
    assert row.signal_id == "sig_1"
    assert available(store, account) == 0


def test_next_grant_settles_pending_oldest_first(store, account):
    consume(store, account, "3", signal_id="sig_first")
    advance(seconds=1)
    # Recorded later, so settled later, even though it happened earlier.
    consume(store, account, "2", signal_id="sig_backdated", occurred_at=START - timedelta(hours=1))
    assert available(store, account) == 0

    grant(store, account, "4")

    first, backdated = pending_rows(store, account)
    assert first.signal_id == "sig_first"
    assert first.remaining == 0
    assert first.settled_at is not None
    assert backdated.signal_id == "sig_backdated"
    assert backdated.remaining == Decimal(1)
    assert backdated.settled_at is None
    settled = entries(store, account, entry_type="spend")
    assert [(entry.signal_id, entry.amount) for entry in settled] == [
        ("sig_first", Decimal(-3)),
        ("sig_backdated", Decimal(-1)),
    ]
    assert all(entry.pending_consumption_id is not None for entry in settled)
    assert available(store, account) == 0

    grant(store, account, "10")

    assert all(row.settled_at is not None for row in pending_rows(store, account))
    assert available(store, account) == Decimal(9)


def test_expired_grant_stops_counting_at_expiry(store, account):
    expires = START + timedelta(hours=1)
    grant(store, account, "10", expires_at=expires)
    consume(store, account, "4")

    assert available(store, account, at=expires - timedelta(microseconds=1)) == Decimal(6)
    assert available(store, account, at=expires) == 0

    advance(hours=2)
    result = consume(store, account, "1")

    assert result.pending == Decimal(1)
    [expiry] = entries(store, account, entry_type="expiry")
    assert expiry.amount == Decimal(-6)
    assert expiry.effective_at == expires
    totals = ledger_totals(store, account, clock.now())
    assert (totals.granted, totals.consumed, totals.expired) == (Decimal(10), Decimal(4), Decimal(6))


def test_swept_grant_stores_expiry(store, account):
    expires = START + timedelta(hours=1)
    expiring = grant(store, account, "10", expires_at=expires)
    lasting = grant(store, account, "5")
    consume(store, account, "4")

    advance(hours=2)
    result = consume(store, account, "1")

    assert result.covered == Decimal(1)
    with store.read_sessions() as session:
        swept = session.get(CreditGrant, expiring.id)
        unexpired = session.get(CreditGrant, lasting.id)
    assert swept.expired_at == expires
    assert swept.remaining == 0
    assert unexpired.expired_at is None
    assert unexpired.remaining == Decimal(4)
    assert grants_match_entries(store, account) == []


def test_future_grant_counts_from_its_start(store, account):
    starts = START + timedelta(days=1)
    grant(store, account, "5", starts_at=starts)
    consume(store, account, "2")

    assert available(store, account) == 0
    assert available(store, account, at=starts) == Decimal(3)

    advance(days=1)
    grant(store, account, "1")

    assert available(store, account) == Decimal(4)
    assert all(row.settled_at is not None for row in pending_rows(store, account))


def test_fractional_credits_stay_exact(store, account):
    grant(store, account, "0.3")
    for _ in range(3):
        consume(store, account, "0.1")

    assert available(store, account) == 0
    assert pending_rows(store, account) == []
    assert grants_match_entries(store, account) == []


def test_too_many_decimal_places_rejected(store, account):
    with pytest.raises(ApiError) as raised:
        consume(store, account, "0.0000000001")
    assert raised.value.status == 400
    assert "amount" in raised.value.message
    assert "9 decimal places" in raised.value.message


def test_depleted_event_when_available_reaches_zero(store, account):
    grant(store, account, "2")
    consume(store, account, "1")
    assert depleted_events(store, account) == []

    consume(store, account, "1", signal_id="sig_last")
    consume(store, account, "1", signal_id="sig_pending")

    [event] = depleted_events(store, account)
    assert event.payload["customerId"] == account.customer_id
    assert event.payload["externalCustomerId"] == "user-1"
    assert event.payload["signalId"] == "sig_last"
    # delivered_at is not checked: the shared test server's webhook task may already have
    # dispatched the event.


def test_overage_event_when_consumption_goes_pending(store, account):
    grant(store, account, "2")
    consume(store, account, "1")
    assert outbox_events(store, account, "billing-overage-incurred") == []

    consume(store, account, "2.5", signal_id="sig_over")

    [event] = outbox_events(store, account, "billing-overage-incurred")
    assert event.payload == {
        "customerId": account.customer_id,
        "creditsCurrencyId": account.currency_id,
        "overage": "1.5",
        "signalCount": 1,
        "signalIds": ["sig_over"],
        "eventNames": ["chat_message"],
    }


def test_overage_event_once_per_batch(store, account):
    grant(store, account, "1")
    requests = [
        service.ConsumptionRequest(
            customer_id=account.customer_id,
            currency_id=account.currency_id,
            amount=Decimal(1),
            signal_id=f"sig_{index}",
            event_name="chat_message",
            product_id=None,
            occurred_at=clock.now(),
        )
        for index in range(4)
    ]

    with store.transaction() as session:
        results = service.consume_batch(session, organization_id=account.organization_id, requests=requests)

    assert [result.pending for result in results] == [0, 1, 1, 1]
    [event] = outbox_events(store, account, "billing-overage-incurred")
    assert event.payload["overage"] == "3"
    assert event.payload["signalCount"] == 3
    assert event.payload["signalIds"] == ["sig_1", "sig_2", "sig_3"]
    assert grants_match_entries(store, account) == []


def test_hold_reserves_credits_and_denies_beyond(store, account):
    grant(store, account, "10")

    with store.transaction() as session:
        first = service.place_hold(session, **account.keys, amount=Decimal(8))
    with store.transaction() as session:
        second = service.place_hold(session, **account.keys, amount=Decimal(3))

    assert first.allowed
    assert first.available == Decimal(2)
    assert not second.allowed
    assert second.hold is None
    assert second.available == Decimal(2)
    assert available(store, account) == Decimal(2)
    assert consume(store, account, "3").pending == Decimal(1)


def test_consume_with_hold_settles_it(store, account):
    grant(store, account, "10")
    with store.transaction() as session:
        hold = service.place_hold(session, **account.keys, amount=Decimal(5)).hold

    result = consume(store, account, "3", hold_id=hold.id, signal_id="sig_h")

    assert (result.covered, result.pending, result.available_after) == (Decimal(3), 0, Decimal(7))
    with store.read_sessions() as session:
        stored = session.get(CreditHold, hold.id)
    assert stored.status == "settled"
    assert stored.settled_signal_id == "sig_h"
    [spend] = entries(store, account, entry_type="spend")
    assert spend.hold_id == hold.id


def test_hold_settlement_may_exceed_hold(store, account):
    grant(store, account, "10")
    with store.transaction() as session:
        hold = service.place_hold(session, **account.keys, amount=Decimal(2)).hold

    result = consume(store, account, "12", hold_id=hold.id)

    assert (result.covered, result.pending) == (Decimal(10), Decimal(2))


def test_released_and_expired_holds_free_credits(store, account):
    grant(store, account, "10")
    with store.transaction() as session:
        released = service.place_hold(session, **account.keys, amount=Decimal(4)).hold
        expiring = service.place_hold(session, **account.keys, amount=Decimal(6), ttl_seconds=60).hold
    assert available(store, account) == 0

    with store.transaction() as session:
        service.release_hold(session, organization_id=account.organization_id, hold_id=released.id)
    assert available(store, account) == Decimal(4)

    advance(seconds=60)
    assert available(store, account) == Decimal(10)
    result = consume(store, account, "1", hold_id=expiring.id)
    assert result.available_after == Decimal(9)
    with store.read_sessions() as session:
        assert session.get(CreditHold, expiring.id).status == "expired"


def test_released_hold_settles_pending_first(store, account):
    grant(store, account, "5")
    with store.transaction() as session:
        hold = service.place_hold(session, **account.keys, amount=Decimal(4)).hold
    # One free credit: the rest of this consumption waits while the hold keeps its credits.
    consume(store, account, "3", signal_id="sig_waiting")
    [waiting] = pending_rows(store, account)
    assert waiting.remaining == Decimal(2)

    with store.transaction() as session:
        service.release_hold(session, organization_id=account.organization_id, hold_id=hold.id)
        later = service.place_hold(session, **account.keys, amount=Decimal(2))

    assert pending_rows(store, account)[0].remaining == 0
    assert later.allowed is True
    assert later.available == 0
    assert available(store, account) == 0


def test_batch_ends_expired_holds(store, account):
    # Ten accounts: more than the few rows that update_rows writes one by one.
    accounts = [account]
    with store.transaction() as session:
        for number in range(9):
            customer = create_customer(session, organization_id=account.organization_id, external_id=f"user-{number + 2}")
            accounts.append(Account(account.organization_id, customer.id, account.currency_id))
    hold_ids = []
    for member in accounts:
        grant(store, member, "5")
        with store.transaction() as session:
            hold_ids.append(service.place_hold(session, **member.keys, amount=Decimal(2), ttl_seconds=60).hold.id)

    advance(seconds=90)
    requests = [
        service.ConsumptionRequest(
            customer_id=member.customer_id,
            currency_id=member.currency_id,
            amount=Decimal(1),
            signal_id=None,
            event_name="chat_message",
            product_id=None,
            occurred_at=clock.now(),
        )
        for member in accounts
    ]
    with store.transaction() as session:
        results = service.consume_batch(session, organization_id=account.organization_id, requests=requests)

    assert [result.available_after for result in results] == [Decimal(4)] * 10
    with store.read_sessions() as session:
        stored_holds = session.scalars(select(CreditHold).where(CreditHold.id.in_(hold_ids))).all()
    assert {hold.status for hold in stored_holds} == {"expired"}
    assert {hold.ended_at for hold in stored_holds} == {START + timedelta(seconds=60)}
    assert {hold.reserved for hold in stored_holds} == {Decimal(2)}


def test_hold_shrinks_when_backing_grant_expires(store, account):
    grant(store, account, "10", expires_at=START + timedelta(minutes=1))
    grant(store, account, "3")
    with store.transaction() as session:
        hold = service.place_hold(session, **account.keys, amount=Decimal(12), ttl_seconds=600).hold

    advance(minutes=2)
    assert available(store, account) == 0
    result = consume(store, account, "1")

    assert result.pending == Decimal(1)
    with store.read_sessions() as session:
        assert session.get(CreditHold, hold.id).reserved == Decimal(3)
    totals = ledger_totals(store, account, clock.now())
    assert totals.granted - totals.consumed - totals.expired - totals.held == 0


def test_hold_of_other_customer_rejected(store, account):
    other = create_account(store)
    grant(store, other, "5")
    with store.transaction() as session:
        hold = service.place_hold(session, **other.keys, amount=Decimal(1)).hold

    with pytest.raises(ApiError) as raised:
        consume(store, account, "1", hold_id=hold.id)
    assert raised.value.status == 400
    assert "holdId" in raised.value.message


def test_debit_adjustment_limited_to_free_credits(store, account):
    grant(store, account, "5")
    with store.transaction() as session:
        assert service.debit(session, **account.keys, amount=Decimal(2)) == Decimal(3)
    with pytest.raises(ApiError) as raised, store.transaction() as session:
        service.debit(session, **account.keys, amount=Decimal(4))
    assert raised.value.status == 400
    [adjustment] = entries(store, account, entry_type="adjustment")
    assert adjustment.amount == Decimal(-2)


def run_in_parallel(count: int, action) -> list:  # type: ignore[no-untyped-def]
    """Run `action` in `count` threads released together; return results, raise the first error."""
    results: list = []
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run() -> None:
        start.wait()
        try:
            results.append(action())
        except BaseException as error:  # noqa: BLE001 - re-raised below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def test_parallel_consumption_covers_exactly_balance(store, account):
    grant(store, account, "5")

    results = run_in_parallel(12, lambda: consume(store, account, "1"))

    assert sum(result.covered for result in results) == 5
    assert sum(result.pending for result in results) == 7
    assert max(result.available_after for result in results) == 4
    assert available(store, account) == 0
    assert grants_match_entries(store, account) == []


def test_parallel_first_consumption_creates_one_account(store, account):
    results = run_in_parallel(12, lambda: consume(store, account, "1"))

    assert sum(result.pending for result in results) == 12
    assert len(pending_rows(store, account)) == 12
