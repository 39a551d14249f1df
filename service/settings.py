"""Service settings, read once from the environment (and an optional ``.env``).

Every field maps to an upper-case environment variable of the same name
(``queue_capacity`` <- ``QUEUE_CAPACITY``). ``Settings`` is built once in
``service.__main__`` (or by a test) and passed down; nothing reads the
environment anywhere else.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import httpx
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

ProviderName = Literal["console", "file", "postmark", "resend", "mailpit"]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How a consumer treats its claimed rows: the lease and the retries."""

    lease_seconds: float
    max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float


@dataclass(frozen=True, slots=True)
class ConsumerPolicy:
    """How many consumers run, how they form batches and how long they may drain."""

    concurrency: int
    batch_size: int
    linger: float
    drain_seconds: float


@dataclass(frozen=True, slots=True)
class HaltPolicy:
    """The pause after an account-level failure: ``base`` doubling up to ``max``."""

    base_seconds: float = 5.0
    max_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class SweepPolicy:
    """How often the sweeper looks, how much per page, and what it leaves to the fast path."""

    page_size: int
    interval: float
    grace: float


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long finished rows are kept, and how the pruner deletes them."""

    sent: timedelta
    dead: timedelta
    batch_size: int
    interval: float


# A guessable key is an open API: production takes none shorter than this.
PRODUCTION_MIN_KEY_LENGTH = 32

_CALLER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_api_keys(raw: str) -> dict[str, str]:
    """``"billing:k1,reports:k2"`` -> ``{"billing": "k1", "reports": "k2"}``.

    A name or a key may appear once: one key under two names would make the
    caller it identifies a matter of order. Errors name the position of the
    bad entry, never the key itself (tests/http/test_auth.py).
    """
    keys: dict[str, str] = {}
    positions: dict[str, int] = {}  # key -> the entry that gave it
    for position, entry in enumerate(filter(None, (e.strip() for e in raw.split(","))), 1):
        name, separator, key = entry.partition(":")
        if not separator or not _CALLER_NAME.match(name) or not key:
            raise ValueError(f"API_KEYS entry {position} is not name:key")
        if name in keys:
            raise ValueError(f"API_KEYS names {name!r} twice")
        if key in positions:
            raise ValueError(f"API_KEYS entries {positions[key]} and {position} have the same key")
        keys[name] = key
        positions[key] = position
    return keys


def new_api_key() -> str:
    """A key for API_KEYS: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


class Settings(BaseSettings):
    """All configuration of the service; see the README's settings table."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # --- server -----------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    environment: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Unset: text for a person at a terminal, JSON lines for a log collector.
    log_format: Literal["json", "text"] | None = None

    # --- API ----------------------------------------------------------------
    # Comma-separated name:key pairs. Unset: the API is open (refused in production).
    api_keys: SecretStr | None = None
    metrics_require_auth: bool = False
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    update_max_items: int = Field(default=1000, ge=1)
    idempotency_ttl: timedelta = timedelta(hours=24)
    # Signs the cursors of GET /notifications. Unset: a random secret per
    # process, so a cursor is refused (422) after a restart and by other replicas.
    cursor_secret: SecretStr | None = None
    # Refuse addresses on special-use domains (a@b.test, a@b.invalid, a@localhost).
    email_refuse_special_use_domains: bool = False

    # --- database ---------------------------------------------------------
    # Unset: an embedded PostgreSQL is started with its data under DATA_DIR.
    database_url: str | None = None
    data_dir: Path = Path(".data")
    db_pool_min_size: int = Field(default=2, ge=1)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_command_timeout: float = Field(default=10.0, gt=0)
    # Start-up waits this long for a database that does not accept connections
    # yet (containers start in any order); 0: fail at once. service/startup.py.
    database_wait_seconds: float = Field(default=30.0, ge=0)

    # --- e-mail provider --------------------------------------------------
    email_provider: ProviderName = "console"
    email_provider_url: str | None = None
    email_api_token: SecretStr | None = None
    email_from: str = "Task Service <tasks@example.com>"
    email_file_dir: Path = Path(".data/mail")
    email_connect_timeout: float = Field(default=5.0, gt=0)
    email_read_timeout: float = Field(default=15.0, gt=0)
    email_write_timeout: float = Field(default=15.0, gt=0)
    email_pool_timeout: float = Field(default=5.0, gt=0)
    email_max_connections: int = Field(default=10, ge=1)
    # Messages per second for this process; unset means no limit of our own.
    email_rate_limit: float | None = Field(default=None, gt=0)

    # --- background delivery ----------------------------------------------
    queue_capacity: int = Field(default=1000, ge=1)
    # How long a request may wait for room in a full stream before it leaves
    # the rows to the sweeper. The rows are already committed either way.
    queue_send_timeout: float = Field(default=0.01, ge=0)
    # Consumer tasks in this process. 0 makes an API-only process: it delivers
    # nothing itself and announces new rows to the delivering replicas.
    worker_concurrency: int = Field(default=1, ge=0)
    # One claim per batch, sent in calls of at most the provider's limit, each
    # recorded as it answers: a crash re-sends at most one call's messages per
    # consumer (docs/RELIABILITY.md; tests/e2e/test_reliability.py::
    # test_a_kill_mid_batch_resends_at_most_one_provider_call_per_consumer).
    batch_size: int = Field(default=250, ge=1)
    # After taking every id already waiting, a consumer may wait this long for
    # more to fill a batch. 0: batches form from whatever queued up while the
    # consumer was busy, which under load is plenty and when idle costs no latency.
    batch_linger: float = Field(default=0.0, ge=0)
    # While more requests are in flight than DB_POOL_MAX_SIZE, a consumer waits
    # up to this long before its next batch: requests first
    # (service/delivery/pressure.py). 0: delivery never gives way.
    delivery_max_defer: float = Field(default=5.0, ge=0)
    sweep_interval: float = Field(default=1.0, gt=0)
    # Pending rows younger than this are assumed to be in the stream already;
    # the sweeper leaves them to the fast path.
    sweep_grace: float = Field(default=2.0, ge=0)
    lease_seconds: float = Field(default=30.0, gt=0)
    # With the default backoff, 15 attempts span 17 to 34 minutes of outage.
    max_attempts: int = Field(default=15, ge=1)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    # Account-level failures (bad token, quota) pause sending for this long,
    # doubling while they persist, up to the maximum.
    halt_base_seconds: float = Field(default=5.0, gt=0)
    halt_max_seconds: float = Field(default=300.0, gt=0)
    # Shutdown: consumers may finish in-flight batches for this long. Keep it
    # below hypercorn's shutdown timeout (derived from it in __main__).
    drain_seconds: float = Field(default=10.0, ge=0)
    # Minimum gap between two "my stream is full" NOTIFYs from one process.
    backlog_notify_interval: float = Field(default=0.1, ge=0)

    # --- retention --------------------------------------------------------
    # Durations: seconds, or ISO 8601 such as P7D.
    retention: timedelta = timedelta(days=7)
    dead_retention: timedelta = timedelta(days=30)
    prune_interval: float = Field(default=60.0, gt=0)
    prune_batch_size: int = Field(default=1000, ge=1)

    # --- dashboard (service/dashboard/) -------------------------------------
    # People sign in with an API key or this password. With neither API_KEYS
    # nor a password the dashboard is open, like the API (development only).
    dashboard_password: SecretStr | None = None
    # Signs the session cookie. Unset: a random secret per process, so sessions
    # end on restart and do not carry across replicas behind a load balancer.
    session_secret: SecretStr | None = None
    # A session ends after this long without a visit (an open page keeps it alive).
    dashboard_session_seconds: int = Field(default=12 * 3600, ge=60)
    dashboard_refresh_seconds: float = Field(default=5.0, ge=1)
    # Unset: Secure cookies in production only (TLS is assumed there).
    dashboard_secure_cookie: bool | None = None

    # What signs cursors when CURSOR_SECRET is unset: made once per Settings,
    # which the process builds once.
    _random_cursor_key: bytes = PrivateAttr(default_factory=lambda: secrets.token_bytes(32))

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgresql(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            # Never echo the value: it may hold a password.
            raise ValueError("must be a postgresql:// URL (postgresql://user:password@host/db)")
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys_are_pairs(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_keys(value.get_secret_value())  # raises ValueError naming the problem
        return value

    @field_validator("dashboard_password", "session_secret", "cursor_secret")
    @classmethod
    def _secrets_are_long(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        shortest = {"dashboard_password": 12, "session_secret": 32, "cursor_secret": 32}[
            info.field_name or ""
        ]
        if value is not None and len(value.get_secret_value()) < shortest:
            raise ValueError(f"must be at least {shortest} characters")
        return value

    @model_validator(mode="after")
    def _provider_has_its_token(self) -> Settings:
        if self.email_provider in ("postmark", "resend") and self.email_api_token is None:
            raise ValueError(f"EMAIL_PROVIDER={self.email_provider} requires EMAIL_API_TOKEN")
        return self

    @model_validator(mode="after")
    def _production_is_locked_down(self) -> Settings:
        if self.environment == "production":
            if not self.api_key_map:
                raise ValueError("ENVIRONMENT=production requires API_KEYS")
            short = [n for n, k in self.api_key_map.items() if len(k) < PRODUCTION_MIN_KEY_LENGTH]
            if short:
                raise ValueError(
                    f"ENVIRONMENT=production requires API_KEYS of at least "
                    f"{PRODUCTION_MIN_KEY_LENGTH} characters; too short: {', '.join(short)} "
                    "(python -m service new-api-key makes one)"
                )
            if self.email_provider in ("console", "file"):
                raise ValueError(
                    f"ENVIRONMENT=production refuses EMAIL_PROVIDER={self.email_provider}: "
                    "it does not deliver e-mail"
                )
            if self.cursor_secret is None:
                logger.warning(
                    "CURSOR_SECRET is not set: notification page cursors are refused after "
                    "this process restarts and by other replicas"
                )
        return self

    @property
    def api_key_map(self) -> dict[str, str]:
        """Caller name -> key; empty when the API is open."""
        if self.api_keys is None:
            return {}
        return parse_api_keys(self.api_keys.get_secret_value())

    @property
    def cursor_key(self) -> bytes:
        """The key that signs page cursors: CURSOR_SECRET, else this process's own."""
        if self.cursor_secret is None:
            return self._random_cursor_key
        return self.cursor_secret.get_secret_value().encode()

    @property
    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            lease_seconds=self.lease_seconds,
            max_attempts=self.max_attempts,
            retry_base_seconds=self.retry_base_seconds,
            retry_max_seconds=self.retry_max_seconds,
        )

    @property
    def consumer_policy(self) -> ConsumerPolicy:
        return ConsumerPolicy(
            concurrency=self.worker_concurrency,
            batch_size=self.batch_size,
            linger=self.batch_linger,
            drain_seconds=self.drain_seconds,
        )

    @property
    def halt_policy(self) -> HaltPolicy:
        return HaltPolicy(base_seconds=self.halt_base_seconds, max_seconds=self.halt_max_seconds)

    @property
    def sweep_policy(self) -> SweepPolicy:
        # A page is one batch: the sweeper hands the consumers a batch at a time.
        return SweepPolicy(
            page_size=self.batch_size, interval=self.sweep_interval, grace=self.sweep_grace
        )

    @property
    def retention_policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            sent=self.retention,
            dead=self.dead_retention,
            batch_size=self.prune_batch_size,
            interval=self.prune_interval,
        )

    @property
    def email_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.email_connect_timeout,
            read=self.email_read_timeout,
            write=self.email_write_timeout,
            pool=self.email_pool_timeout,
        )

    @property
    def email_limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.email_max_connections,
            max_keepalive_connections=self.email_max_connections,
        )
