"""Server settings, read once from arguments and TALLYSTICK_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_FILE = "tallystick.db"


def default_database_url() -> str:
    """Return the SQLite URL of ``tallystick.db`` in the working directory."""
    return f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLYSTICK_", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    # Largest page a list endpoint returns, whatever `limit` the caller sends.
    max_page_size: int = 1000
    default_page_size: int = 50
    # OTLP trace intake: the largest export body accepted, in bytes, checked before and after
    # decompression (the OTLP specification recommends 64 MiB), and how many exports are
    # handled at once before further ones get 503 with Retry-After.
    otlp_max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    otlp_max_concurrent_exports: int = Field(default=8, ge=1)
    # Largest request body accepted by the REST API, in bytes; larger ones get 413.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Requests allowed per API key, in the `limits` package's notation ("1000/second",
    # "60000/minute"); "off" disables the limit. Counted per server process unless
    # rate_limit_storage_url names shared storage such as redis://127.0.0.1:6379.
    rate_limit: str = "1000/second"
    rate_limit_storage_url: str = "memory://"
    # How far past the server's clock a signal's timestamp may be, in seconds, to allow for
    # clock skew between the client and the server; later timestamps are rejected.
    signal_max_future_skew_seconds: int = Field(default=300, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
