"""Operators who sign in to the dashboard with their sessions, and the customer portal links
given to customers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server import clock
from tallystick.server.models.base import Base, OrgScopedMixin, TimestampMixin


class Operator(OrgScopedMixin, TimestampMixin, Base):
    """A person who runs one organization's billing from the dashboard.

    `password_hash` is an Argon2id hash in the PHC string format (argon2-cffi); the password
    itself is never stored. Emails are unique across organizations because the sign-in
    form has no organization field.
    """

    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Stored lowercased, so sign-in ignores the case the operator types.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    last_login_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]


class OperatorSession(OrgScopedMixin, Base):
    """One dashboard sign-in. The session cookie names this row, and sign-out ends it, so a
    copied cookie stops working at sign-out and not only when it expires."""

    __tablename__ = "operator_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    operator_id: Mapped[str] = mapped_column(String(40), ForeignKey("operators.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class CustomerPortal(OrgScopedMixin, Base):
    """A short-lived link that opens one customer's portal, created by `POST /customer-portals/`.

    The link carries a token, signed with the server secret, that names this row and its expiry.
    The row stores the customer and the return URL.
    """

    __tablename__ = "customer_portals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    return_url: Mapped[str | None] = mapped_column(String(2048))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
