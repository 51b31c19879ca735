"""Wire models of USD amounts that signal items and cost reports share."""

from __future__ import annotations

from pydantic import Field

from tallystick.server.schemas import ResponseModel


class MoneyOut(ResponseModel):
    amount: str = Field(description="USD decimal string in major units, such as 0.000364800000.")
    currency: str = "USD"


class CostSummaryOut(MoneyOut):
    status: str = Field(
        description=(
            "priced (every attributed cost is priced), partial (some are unpriced), "
            "unpriced (none is priced) or none (no attributed costs)."
        )
    )
