"""Wire models of customer portal links."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from tallystick.server.checkout.schemas import check_web_url
from tallystick.server.schemas import RequestModel, ResponseModel


class CustomerPortalCreate(RequestModel):
    customer_id: str | None = Field(default=None, min_length=1, max_length=40)
    external_customer_id: str | None = Field(default=None, min_length=1, max_length=255)
    return_url: str | None = Field(
        default=None, max_length=2048, description="Where the portal's back link and the upgrade's checkout lead."
    )
    expires_at: datetime | None = Field(default=None, description="Default: one hour from now; at most 7 days.")

    @field_validator("return_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        return check_web_url(value)


class CustomerPortalOut(ResponseModel):
    id: str
    customer_id: str
    url: str
    status: str = Field(description="active, or expired once expiresAt has passed.")
    return_url: str | None = None
    expires_at: datetime
    created_at: datetime
