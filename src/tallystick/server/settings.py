"""Server settings, read once from arguments and TALLYSTICK_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_FILE = "tallystick.db"

# Values of TALLYSTICK_RATE_LIMIT that turn the limit off, compared in lowercase.
RATE_LIMIT_OFF_VALUES = ("", "0", "off", "none")


def default_database_url() -> str:
    """Return the SQLite URL of ``tallystick.db`` in the working directory."""
    return f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"


class Settings(BaseSettings):
    # Errors leave the input out, since it contains secrets such as the encryption keys.
    model_config = SettingsConfigDict(env_prefix="TALLYSTICK_", extra="ignore", hide_input_in_errors=True)

    database_url: str = Field(default_factory=default_database_url)
    # Largest page a list endpoint returns, whatever `limit` the caller sends.
    max_page_size: int = 1000
    default_page_size: int = 50
    # Secret that signs the hosted pages' form tokens and public links. Every server process
    # sharing a database needs the same value; when it is unset, the first process generates
    # one and stores it in the database, where the others read it.
    secret_key: SecretStr | None = None
    # Fernet keys (urlsafe base64 of 32 bytes, comma-separated) that encrypt the secrets stored
    # in the database: Stripe keys, webhook signing secrets and the generated secret key. The
    # first key encrypts and every key decrypts, so a new key goes first during a rotation.
    # Unset: secrets are stored in clear. Generate one with `tallystick secrets generate-key`.
    encryption_keys: SecretStr | None = None
    # Root URL at which buyers reach this server, such as https://billing.example.com; hosted
    # page links start with it. Default: the root URL of the request that creates the link.
    public_url: str | None = None
    # OTLP trace intake: the largest export body accepted, in bytes, checked before and after
    # decompression (the OTLP specification recommends 64 MiB), and how many exports are
    # handled at once before further ones get 503 with Retry-After.
    otlp_max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    otlp_max_concurrent_exports: int = Field(default=8, ge=1)
    # Signal batches (POST /signals/bulk) that one server process writes at once. Further
    # batches wait in the event loop for a slot, holding no thread. A process runs Python on one
    # core at a time (the interpreter lock), so two let one batch compute while the other waits
    # for the database. More only contend for that lock and for the same accounts' row locks.
    ingestion_concurrency: int = Field(default=2, ge=1)
    # Largest request body accepted by the REST API, in bytes; larger ones get 413.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Requests allowed per API key, in the `limits` package's notation ("1000/second",
    # "60000/minute"); "off" disables the limit.
    rate_limit: str = "1000/second"
    # Storage URI, in the `limits` package's notation, of the counts of the rate limit and of
    # the dashboard's sign-in throttle. memory:// counts in each server process. A Redis URI
    # such as redis://127.0.0.1:6379/0 shares one count among all the processes that use it.
    # Secret, since the URI may contain the storage's password.
    rate_limit_storage_url: SecretStr = SecretStr("memory://")
    # Prefix of the keys written to Redis, so that installations sharing one Redis database
    # keep separate counts.
    rate_limit_key_prefix: str = Field(default="tallystick", min_length=1)
    # Seconds a server process trusts an API key that it found active, before it reads the key
    # from the database again; 0 reads it on every request. A key revoked from the dashboard is
    # rejected at once by the process that revoked it. Other processes (further workers, a key
    # revoked with the CLI) reject it within this many seconds.
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    # How far past the server's clock a signal's timestamp may be, in seconds, to allow for
    # clock skew between the client and the server; later timestamps are rejected.
    signal_max_future_skew_seconds: int = Field(default=300, ge=0)

    # Webhooks. Loopback, private-range and link-local targets are rejected unless this is true
    # (for development and tests, where receivers listen on 127.0.0.1).
    allow_private_webhook_targets: bool = False
    # Whether this process runs the background task that sends webhooks.
    webhook_delivery_enabled: bool = True
    # Seconds the delivery task sleeps when it finds no work.
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0)
    # Seconds one webhook request may take, from connecting to the response status.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Seconds a worker owns a claimed delivery; past this, another worker may send it again.
    webhook_claim_seconds: float = Field(default=60.0, gt=0)
    # Retry delays double from the base up to the maximum, for the length of the retry window.
    webhook_retry_base_seconds: float = Field(default=30.0, gt=0)
    webhook_retry_max_delay_seconds: float = Field(default=6 * 3600.0, gt=0)
    webhook_retry_window_seconds: float = Field(default=3 * 86400.0, gt=0)
    # Days an outbox event is kept after it was handed over and every delivery of it finished
    # (delivered, failed or canceled). After that, it is deleted with its deliveries and attempts.
    webhook_retention_days: float = Field(default=30.0, gt=0)

    # Mounts the floor endpoints under /api/v2/benchmark/, which authenticate and parse like the
    # real routes but store nothing, so that benchmarks can measure the server's own floor.
    benchmark_endpoints: bool = False

    # Billing. Whether this process runs the background task that renews orders, retries
    # declined renewal charges and expires checkouts, and how many seconds it sleeps when it
    # finds no work.
    billing_worker_enabled: bool = True
    billing_poll_interval_seconds: float = Field(default=30.0, gt=0)
    # Hours to wait before each retry of a declined renewal charge, as a JSON list; after the
    # last one the invoice is marked overdue.
    renewal_payment_retry_hours: list[float] = Field(default_factory=lambda: [24.0, 72.0, 120.0])
    # Stripe: the API root the stripe library calls (change it only to point at a local
    # stand-in in tests), and seconds one Stripe request may take.
    stripe_api_base: str = "https://api.stripe.com"
    stripe_timeout_seconds: float = Field(default=20.0, gt=0)

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        # Checked here, so that a bad value stops the server at start with one line. Each
        # worker process would otherwise fail while building its app, and be restarted.
        if value.strip().lower() in RATE_LIMIT_OFF_VALUES:
            return value
        from limits import parse

        try:
            item = parse(value)
        except ValueError:
            raise ValueError("must be a rate such as 1000/second or 60000/minute, or off") from None
        if item.amount < 1:
            raise ValueError("must allow at least 1 request; use off to turn the limit off")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _check_encryption_keys(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked at start-up, because a write that failed on a bad key would report the
        # statement's parameters, secrets included, in its error.
        if value is not None:
            from tallystick.server.encryption import key_list_problem

            problem = key_list_problem(value.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check_webhook_claim(self) -> Settings:
        if self.webhook_claim_seconds <= self.webhook_timeout_seconds:
            raise ValueError(
                "webhook_claim_seconds must be longer than webhook_timeout_seconds, or a slow "
                "request could be sent twice at once"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
