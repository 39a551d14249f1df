"""Service settings, read once from the environment (and an optional ``.env``).

Every field maps to an upper-case environment variable of the same name
(``queue_capacity`` <- ``QUEUE_CAPACITY``). ``Settings`` is built once in
``service.__main__`` (or by a test) and passed down; nothing reads the
environment anywhere else.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderName = Literal["console", "file", "postmark", "resend", "mailpit"]


class Settings(BaseSettings):
    """All configuration of the service; see the README's settings table."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # --- server -----------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    environment: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- database ---------------------------------------------------------
    # Unset: an embedded PostgreSQL is started with its data under DATA_DIR.
    database_url: str | None = None
    data_dir: Path = Path(".data")
    db_pool_min_size: int = Field(default=2, ge=1)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_command_timeout: float = Field(default=10.0, gt=0)

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
    worker_concurrency: int = Field(default=1, ge=1)
    batch_size: int = Field(default=100, ge=1)
    # A consumer waits this long after the first id for more to fill a batch.
    batch_linger: float = Field(default=0.005, ge=0)
    sweep_interval: float = Field(default=1.0, gt=0)
    # Pending rows younger than this are assumed to be in the stream already;
    # the sweeper leaves them to the fast path.
    sweep_grace: float = Field(default=2.0, ge=0)
    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
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
