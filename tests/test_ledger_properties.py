"""Random sequences of grants, consumption, retries, expiries and holds keep the ledger invariants.

After every step, on SQLite and PostgreSQL:
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
    available,
    create_account,
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
            # Every credit amount passed to a committed consume() call.
            self.requested = Decimal(0)

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
            self.requested += amount
            assert result.covered + result.pending == amount
            assert result.available_after == available(store, self.account)

        def _entries_of_signal(self, signal_id: str) -> int:
            with store.read_sessions() as session:
                return session.scalar(select(func.count()).where(LedgerEntry.signal_id == signal_id))

        @invariant()
        def ledger_invariants_hold(self) -> None:
            totals = ledger_totals(store, self.account, clock.now())
            current = available(store, self.account)
            from_entries = totals.granted - totals.consumed - totals.expired - totals.held

            assert current >= 0
            assert totals.held >= 0
            if totals.pending > 0:
                assert current == 0
                assert from_entries == 0
            else:
                assert current == from_entries

            assert grants_match_entries(store, self.account) == []

            # Every consumed credit was drawn from a grant or is still pending.
            assert totals.spent + totals.pending == self.requested

            # Pending consumption settles first in, first out.
            with store.read_sessions() as session:
                rows = session.scalars(
                    select(PendingConsumption)
                    .where(PendingConsumption.organization_id == self.account.organization_id)
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
