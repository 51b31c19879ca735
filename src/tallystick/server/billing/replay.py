"""Replay of unrated signals when an order is activated with a start date in the past.

Signals that arrived for the order's products before it was active, and that no pricing line
rated then, are rated once now by the order's lines. They consume credits in time order, each
as of the instant it happened, so they draw from the grants of the period they fall in.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.ledger import service as ledger
from tallystick.server.models import Order, Signal
from tallystick.server.signals.lines import LineLookup, match_lines
from tallystick.server.signals.rating import RatingError, credits_for

log = logging.getLogger(__name__)


class SignalReplay:
    """The unrated signals of one customer and the order's products, oldest first."""

    def __init__(self, session: Session, order: Order, until: datetime) -> None:
        self.session = session
        self.order = order
        product_ids = {line.product_id for line in order.lines}
        self.pending = list(
            session.scalars(
                select(Signal)
                .where(
                    Signal.organization_id == order.organization_id,
                    Signal.customer_id == order.customer_id,
                    Signal.product_id.in_(product_ids),
                    Signal.product_attribute_id.is_(None),
                    Signal.occurred_at >= order.start_date,
                    Signal.occurred_at <= until,
                )
                .order_by(Signal.occurred_at, Signal.id)
            )
        )
        self.replayed = 0

    def run_until(self, moment: datetime, *, inclusive: bool = False) -> None:
        """Rate the signals that happened before `moment` (or at it, when `inclusive`)."""
        while self.pending and (
            self.pending[0].occurred_at < moment or (inclusive and self.pending[0].occurred_at == moment)
        ):
            signal = self.pending.pop(0)
            with clock.at(signal.occurred_at):
                self._rate(signal)

    def _rate(self, signal: Signal) -> None:
        [match] = match_lines(
            self.session, signal.organization_id, [LineLookup(signal.event_name, signal.customer_id, signal.product_id)]
        )
        line = match.line
        if line is None or line.currency_id is None:
            return
        try:
            credits = credits_for(line, signal.data)
        except RatingError as error:
            log.warning(
                "signal.replay_unrated",
                extra={"organization_id": signal.organization_id, "signal_id": signal.id, "reason": error.code},
            )
            return

        result = ledger.consume(
            self.session,
            organization_id=signal.organization_id,
            customer_id=signal.customer_id,
            currency_id=line.currency_id,
            amount=credits,
            signal_id=signal.id,
            event_name=signal.event_name,
            product_id=signal.product_id,
            occurred_at=signal.occurred_at,
            order_id=match.order_id,
        )
        signal.product_attribute_id = line.product_attribute_id
        signal.plan_attribute_id = line.plan_attribute_id
        signal.credit_currency_id = line.currency_id
        signal.credits_consumed = result.covered
        signal.credits_pending = result.pending
        self.session.flush()
        self.replayed += 1
