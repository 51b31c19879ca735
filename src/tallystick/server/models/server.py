"""State of the installation itself, shared by every server process of one database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server import clock
from tallystick.server.encryption import EncryptedString
from tallystick.server.models.base import Base


class ServerSecret(Base):
    """A secret generated once and shared by every process, such as the key that signs forms."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Encrypted at rest when TALLYSTICK_ENCRYPTION_KEYS is set.
    value: Mapped[str] = mapped_column(EncryptedString())
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
