"""Random sequences of grants, consumption, retries, expiries and holds keep the ledger invariants.

Consumption comes one at a time and in batches that mix two customers of one organization.
After every step, on SQLite and PostgreSQL, for both customers:
- sum(grants) - sum(consumption) - sum(expired) - sum(active holds) = available, recomputed from
  the ledger entries with SQL sums (when pending consumption is unsettled, both sides are 0);
- available >= 0, and each grant's cached remaining equals the sum of its entries;
- every credit consumed is either drawn from a grant or still pending, never lost or doubled;
- pending consumption settles in order: no row gets credits while an older one is unsettled.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from tallystick.server import clock
from tallystick.server.ids import new_id
from tallystick.server.ledger import service
from tallystick.server.models import LedgerEntry, PendingConsumption
from tests.ledger_factories import (
    Account,
    available,
    create_account,
    create_customer,
    grants_match_entries,
    ledger_totals,
)

START = datetime(2026, 1, 1, tzinfo=UTC)

credit_amounts = st.one_of(
    st.integers(min_value=1, max_value=10).map(Decimal),
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal(8), places=3),
    st.just(Decimal("0.000000001")),
)
# Small holds, so that most are allowed and some outlive the grants backing them.
hold_amounts = st.one_of(st.integers(min_value=1, max_value=3).map(Decimal), st.just(Decimal("0.5")))


class SimulatedFailure(Exception):
    """Raised inside a transaction to make it roll back, as a crash after the write would."""


def ledger_machine(store):  # type: ignore[no-untyped-def]
    class LedgerMachine(RuleBasedStateMachine):
        holds = Bundle("holds")

        def __init__(self) -> None:
            super().__init__()
            clock.freeze(START)
            self.account = create_account(store)
            with store.transaction() as session:
                neighbour = create_customer(
                    session, organization_id=self.account.organization_id, external_id="user-2"
                )
            self.neighbour = Account(self.account.organization_id, neighbour.id, self.account.currency_id)
            # Every credit amount passed to a committed consumption, by customer id.
            self.requested = {self.account.customer_id: Decimal(0), self.neighbour.customer_id: Decimal(0)}

        def teardown(self) -> None:
            clock.freeze(None)

        @rule(
            amount=credit_amounts,
            priority=st.integers(min_value=0, max_value=2),
            lifetime_minutes=st.sampled_from([None, None, 5, 30, 120]),
            delay_minutes=st.sampled_from([0, 0, 0, 30]),
        )
        def grant(self, amount, priority, lifetime_minutes, delay_minutes):  # type: ignore[no-untyped-def]
            starts_at = clock.now() + timedelta(minutes=delay_minutes)
            expires_at = None if lifetime_minutes is None else starts_at + timedelta(minutes=lifetime_minutes)
            with store.transaction() as session:
                service.grant(
                    session,
                    **self.account.keys,
                    amount=amount,
                    starts_at=starts_at,
                    expires_at=expires_at,
                    priority=priority,
                )

        @rule(amount=credit_amounts, lifetime_minutes=st.sampled_from([None, 30]))
        def grant_to_neighbour(self, amount, lifetime_minutes):  # type: ignore[no-untyped-def]
            expires_at = None if lifetime_minutes is None else clock.now() + timedelta(minutes=lifetime_minutes)
            with store.transaction() as session:
                service.grant(session, **self.neighbour.keys, amount=amount, expires_at=expires_at)

        @rule(
            items=st.lists(st.tuples(st.booleans(), credit_amounts), min_size=2, max_size=6),
            hold_id=st.one_of(st.none(), holds),
        )
        def consume_batch(self, items, hold_id):  # type: ignore[no-untyped-def]
            """Consume for both customers in one batch; the first request may settle a hold."""
            if hold_id == "hold_denied":
                hold_id = None
            requests = [
                service.ConsumptionRequest(
                    customer_id=(self.neighbour if to_neighbour else self.account).customer_id,
                    currency_id=self.account.currency_id,
                    amount=amount,
                    signal_id=new_id("signal"),
                    event_name="chat_message",
                    product_id=None,
                    occurred_at=clock.now(),
                    hold_id=hold_id if index == 0 and not to_neighbour else None,
                )
                for index, (to_neighbour, amount) in enumerate(items)
            ]
            # Without a hold, each request draws what the requests before it left, as if alone.
            free = {
                account.customer_id: available(store, account)
                for account in (self.account, self.neighbour)
                if not (hold_id and account is self.account)
            }
            with store.transaction() as session:
                results = service.consume_batch(
                    session, organization_id=self.account.organization_id, requests=requests
                )

            last_available = {}
            for request, result in zip(requests, results, strict=True):
                assert not isinstance(result, Exception)
                assert result.covered + result.pending == request.amount
                if request.customer_id in free:
                    assert result.covered == min(request.amount, free[request.customer_id])
                    free[request.customer_id] -= result.covered
                    assert result.available_after == free[request.customer_id]
                self.requested[request.customer_id] += request.amount
                last_available[request.customer_id] = result.available_after
            for account in (self.account, self.neighbour):
                if account.customer_id in last_available:
                    assert last_available[account.customer_id] == available(store, account)

        @rule(amount=credit_amounts, occurred_minutes_ago=st.integers(min_value=0, max_value=90))
        def consume(self, amount, occurred_minutes_ago):  # type: ignore[no-untyped-def]
            self._consume(amount, hold_id=None, occurred_minutes_ago=occurred_minutes_ago)

        @rule(hold_id=holds, amount=credit_amounts)
        def consume_with_hold(self, hold_id, amount):  # type: ignore[no-untyped-def]
            self._consume(amount, hold_id=hold_id, occurred_minutes_ago=0)

        @rule(amount=credit_amounts)
        def consume_rolled_back_then_retried(self, amount):  # type: ignore[no-untyped-def]
            before = available(store, self.account)
            signal_id = new_id("signal")
            try:
                with store.transaction() as session:
                    service.consume(
                        session,
                        **self.account.keys,
                        amount=amount,
                        signal_id=signal_id,
                        event_name="chat_message",
                        product_id=None,
                        occurred_at=clock.now(),
                    )
                    raise SimulatedFailure
            except SimulatedFailure:
                pass
            assert available(store, self.account) == before
            assert self._entries_of_signal(signal_id) == 0

            self._consume(amount, hold_id=None, occurred_minutes_ago=0, signal_id=signal_id)

        @rule(target=holds, amount=hold_amounts, ttl_seconds=st.sampled_from([60, 3600, 86_400]))
        def place_hold(self, amount, ttl_seconds):  # type: ignore[no-untyped-def]
            before = available(store, self.account)
            with store.transaction() as session:
                result = service.place_hold(session, **self.account.keys, amount=amount, ttl_seconds=ttl_seconds)
            assert result.allowed == (before >= amount)
            expected = before - amount if result.allowed else before
            assert result.available == expected
            return result.hold.id if result.hold else "hold_denied"

        @rule(hold_id=holds)
        def release_hold(self, hold_id):  # type: ignore[no-untyped-def]
            if hold_id == "hold_denied":
                return
            with store.transaction() as session:
                service.release_hold(session, organization_id=self.account.organization_id, hold_id=hold_id)

        @rule(minutes=st.sampled_from([1, 10, 45]))
        def advance_clock(self, minutes):  # type: ignore[no-untyped-def]
            clock.freeze(clock.now() + timedelta(minutes=minutes))
            # A read must show what the next write will store, before any write sweeps.
            read_before_sweep = available(store, self.account)
            with store.transaction() as session:
                swept = service.sweep_account(session, **self.account.keys)
            assert swept == read_before_sweep
            with store.transaction() as session:
                service.sweep_account(session, **self.neighbour.keys)

        def _consume(self, amount, *, hold_id, occurred_minutes_ago, signal_id=None):  # type: ignore[no-untyped-def]
            if hold_id == "hold_denied":
                hold_id = None
            with store.transaction() as session:
                result = service.consume(
                    session,
                    **self.account.keys,
                    amount=amount,
                    signal_id=signal_id or new_id("signal"),
                    event_name="chat_message",
                    product_id=None,
                    occurred_at=clock.now() - timedelta(minutes=occurred_minutes_ago),
                    hold_id=hold_id,
                )
            self.requested[self.account.customer_id] += amount
            assert result.covered + result.pending == amount
            assert result.available_after == available(store, self.account)

        def _entries_of_signal(self, signal_id: str) -> int:
            with store.read_sessions() as session:
                return session.scalar(select(func.count()).where(LedgerEntry.signal_id == signal_id))

        @invariant()
        def ledger_invariants_hold(self) -> None:
            for account in (self.account, self.neighbour):
                self._check_account(account)

        def _check_account(self, account: Account) -> None:
            totals = ledger_totals(store, account, clock.now())
            current = available(store, account)
            from_entries = totals.granted - totals.consumed - totals.expired - totals.held

            assert current >= 0
            assert totals.held >= 0
            if totals.pending > 0:
                assert current == 0
                assert from_entries == 0
            else:
                assert current == from_entries

            assert grants_match_entries(store, account) == []

            # Every consumed credit was drawn from a grant or is still pending.
            assert totals.spent + totals.pending == self.requested[account.customer_id]

            # Pending consumption settles first in, first out.
            with store.read_sessions() as session:
                rows = session.scalars(
                    select(PendingConsumption)
                    .where(
                        PendingConsumption.organization_id == account.organization_id,
                        PendingConsumption.customer_id == account.customer_id,
                    )
                    .order_by(PendingConsumption.sequence)
                ).all()
            waiting = False
            for row in rows:
                if waiting:
                    assert row.remaining == row.amount, "a newer pending row was settled before an older one"
                if row.remaining > 0:
                    waiting = True

    return LedgerMachine


def test_ledger_invariants_hold_for_random_sequences(store):
    machine = ledger_machine(store)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=30,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
