"""Settings from the environment (prefix ``BILLING_``) or a ``.env`` file.

A missing or invalid setting is reported as one clear line by the CLI / API start-up
(:class:`billing_engine.errors.ConfigurationError`), never a traceback.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from billing_engine.errors import ConfigurationError

DEFAULT_DUNNING_SCHEDULE = (1, 2, 3, 5, 7, 10, 14)  # days after the first failure


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BILLING_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = Field(
        default="sqlite:///billing.db",
        description="SQLAlchemy URL: sqlite:///billing.db or postgresql+psycopg://user@host/db",
    )
    secret_key: SecretStr = Field(
        default=SecretStr("dev-insecure-change-me"),
        description="Signs customer cancel links. Set a long random value in production.",
    )
    admin_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Bearer tokens accepted by the admin API (comma separated or JSON list).",
    )
    gateway: str = Field(default="fake", description="fake | stripe")
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_max_ops_per_second: float | None = None

    public_base_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL used in e-mailed links."
    )
    cancel_link_max_age_days: int = Field(default=60, ge=1, le=3650)

    dunning_schedule_days: Annotated[list[int], NoDecode] = Field(default_factory=lambda: list(DEFAULT_DUNNING_SCHEDULE))
    reminder_days_before: int = Field(default=7, ge=0, le=60)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_timeout: float = 10.0
    mail_transport: str = Field(default="smtp", description="smtp | file | none (none keeps e-mails queued)")
    mail_dir: str = Field(default="outbox", description="Directory for the file transport (.eml files)")
    mail_max_attempts: int = Field(default=8, ge=1, le=50)
    mail_from: str = "Billing <billing@localhost>"
    support_email: str = "support@localhost"
    company_name: str = "Your Newsletter"

    # run-cycle: the batched charge pipeline (see docs/architecture.md)
    claim_lease_seconds: float = Field(
        default=60.0, ge=1.0, le=3600.0,
        description="How long a worker's claim on a batch lasts without a heartbeat (renewed while it runs).",
    )
    cycle_batch_size: int = Field(default=500, ge=1, le=10_000, description="Subscriptions per claimed batch.")
    gateway_concurrency: int = Field(default=64, ge=1, le=1000, description="Gateway calls in flight per worker.")
    gateway_rate_per_second: float | None = Field(
        default=None, gt=0,
        description="Account-wide gateway calls/s shared by every worker through the database "
        "(default: Stripe's documented limit for the key; unlimited for the fake gateway).",
    )
    gateway_breaker_failures: int = Field(
        default=10, ge=1, le=10_000,
        description="Consecutive unreachable-gateway answers after which a run stops (exit 75).",
    )
    fake_ledger: str | None = Field(
        default=None, description="Fake gateway only: a SQLite file keeping its charges across processes.",
    )
    fake_latency_ms: float = Field(default=0.0, ge=0, le=60_000, description="Fake gateway only: latency per call.")

    segment_thresholds_minor: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [10_000, 100_000],
        description="Lifetime-value bucket limits (minor units): small < t0 <= medium < t1 <= large",
    )

    @field_validator("admin_tokens", "dunning_schedule_days", "segment_thresholds_minor", mode="before")
    @classmethod
    def _split_csv(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                import json

                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError("is not a valid JSON list") from None
            return [p.strip() for p in text.split(",") if p.strip()]
        return v

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql", "postgres:")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        if v.startswith("postgres://"):
            v = "postgresql+psycopg://" + v[len("postgres://"):]
        elif v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://"):]
        return v

    @field_validator("gateway")
    @classmethod
    def _check_gateway(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in {"fake", "stripe"}:
            raise ValueError("must be 'fake' or 'stripe'")
        return v

    @field_validator("mail_transport")
    @classmethod
    def _check_transport(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in {"smtp", "file", "none"}:
            raise ValueError("must be 'smtp', 'file' or 'none'")
        return v

    @field_validator("dunning_schedule_days")
    @classmethod
    def _check_schedule(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one retry day")
        if any(d <= 0 for d in v) or sorted(v) != v or len(set(v)) != len(v):
            raise ValueError("must be strictly increasing positive day offsets, e.g. 1,2,3,5,7,10,14")
        if v[-1] > 60:
            raise ValueError("retries must end within 60 days")
        return v


def load_settings(**overrides: object) -> Settings:
    """Read settings; turn pydantic's report into one readable line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "BILLING_" + "_".join(str(p) for p in err["loc"]).upper()
        raise ConfigurationError(f"invalid setting {name}: {err['msg']}", field=None) from None
    except SettingsError as exc:
        raise ConfigurationError(f"invalid setting: {exc}", field=None) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
