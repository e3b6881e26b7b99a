"""Settings from the environment (prefix ``BILLING_``) or a ``.env`` file.

A missing or invalid setting is reported as one clear line by the CLI / API start-up
(:class:`billing_engine.errors.ConfigurationError`), never a traceback.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from billing_engine.admin_tokens import AdminToken, parse_admin_tokens
from billing_engine.errors import ConfigurationError

DEFAULT_DUNNING_SCHEDULE = (1, 2, 3, 5, 7, 10, 14)  # days after the first failure
DEV_SECRET_KEY = "dev-insecure-change-me"  # public (it is in this file): never safe to sign with
MIN_SECRET_BYTES = 32
GENERATE_HINT = 'generate one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
UNSET_GATEWAY = ("BILLING_GATEWAY is not set (production: PostgreSQL, stripe or BILLING_ENV=production): "
                 "set BILLING_GATEWAY=stripe (with BILLING_STRIPE_API_KEY) to charge cards, or "
                 "BILLING_GATEWAY=fake to run without charging anyone")


class Mode(StrEnum):
    """Where the engine runs (``BILLING_ENV``). Production checks apply in ``production``."""

    PRODUCTION = "production"
    DEVELOPMENT = "development"
    DEMO = "demo"
    TEST = "test"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BILLING_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Mode | None = Field(
        default=None,
        description="production | development | demo | test. Unset: production when the database is "
        "PostgreSQL or the gateway is stripe, else development. A live Stripe key is always production.",
    )
    database_url: str = Field(
        default="sqlite:///billing.db",
        description="SQLAlchemy URL: sqlite:///billing.db or postgresql+psycopg://user@host/db",
    )
    db_pool_size: int = Field(
        default=15, ge=4, le=500,
        description="PostgreSQL connections each process keeps open (each `billing serve` worker, each "
        "run-cycle), and never more: what all of them add up to must stay below the server's "
        "max_connections (100 by default), e.g. 2 API workers + 2 run-cycles = 60. At least 4: a "
        "run-cycle's threads (batches, settle, heartbeat, rate limit) each use one.",
    )
    api_threads: int = Field(
        default=8, ge=1, le=200,
        description="Requests each API worker process (`billing serve`) runs at once; more wait, first "
        "come first served. Python runs one thread at a time: a few threads let requests wait for the "
        "database without holding up others, dozens fight over the interpreter lock (at 50 clients "
        "the default 40 of the server library doubled the list's p99). Long work (report exports, the "
        "dashboard, imports, POST /v1/run-cycle) runs in a pool of 4 of its own and never takes these. "
        "Above BILLING_DB_POOL_SIZE, threads wait for a connection.",
    )
    secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET_KEY),
        description="Signs customer cancel links and dashboard sessions; at least 32 bytes in production.",
        json_schema_extra={"readme_default": "dev value (refused in production)"},
    )
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Key rotation (comma separated): the first signs, every one (and BILLING_SECRET_KEY, "
        "if set) still verifies.",
    )
    admin_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Bearer tokens accepted by the admin API (comma separated or JSON list): each "
        "secret, name:secret or name:secret:role (role admin, the default, or read: reports and dashboard only).",
    )
    gateway: str | None = Field(
        default=None, description="fake | stripe. Unset means fake, but only outside production (see env)."
    )
    stripe_api_key: SecretStr | None = Field(default=None, description="sk_live_... / sk_test_... (or a restricted "
                                             "rk_ key); see docs/stripe.md.")
    stripe_webhook_secret: SecretStr | None = Field(default=None, description="whsec_... that signs the events "
                                                    "sent to POST /webhooks/stripe.")
    stripe_api_base: str | None = Field(default=None, description="Local Stripe mocks only (e.g. "
                                        "http://127.0.0.1:12111); never in production.")
    stripe_max_ops_per_second: float | None = Field(
        default=None, description="Client-side Stripe calls/s per process (default 25 for test keys, 100 for live "
        "keys); prefer BILLING_GATEWAY_RATE_PER_SECOND, shared by all workers.")

    public_base_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL used in e-mailed links."
    )
    cancel_link_max_age_days: int = Field(default=60, ge=1, le=400, description="How long a cancel link works.")

    dunning_schedule_days: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_DUNNING_SCHEDULE),
        description="Retry offsets in days after the first failed charge (strictly increasing, last within 60).")
    reminder_days_before: int = Field(default=7, ge=0, le=60, description="Renewal reminder lead time in days "
                                      "(a plan's reminder_days wins).")
    price_notice_days: int = Field(default=30, ge=7, le=365,
                                   description="Default notice before a new price applies to existing subscribers.")
    max_discount_percent: int = Field(default=30, ge=0, le=90,
                                      description="Largest coupon discount on a plan without its own cap (percent).")

    smtp_host: str = Field(default="127.0.0.1", description="SMTP server for customer e-mails.")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port (587 with STARTTLS, 465 with SSL).")
    smtp_username: str | None = Field(default=None, description="SMTP login, if the server wants one.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_starttls: bool = Field(default=False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_ssl: bool = Field(default=False, description="Connect to SMTP over TLS from the start (port 465).")
    smtp_timeout: float = Field(default=10.0, description="Seconds to wait for the SMTP server per operation.")
    mail_transport: str = Field(default="smtp", description="smtp | file | none (none keeps e-mails queued)")
    mail_dir: str = Field(default="outbox", description="Directory for the file transport (.eml files)")
    mail_max_attempts: int = Field(default=8, ge=1, le=50, description="Delivery tries per e-mail before it is "
                                   "marked failed (with back-off).")
    mail_from: str = Field(default="Billing <billing@localhost>", description="Branding: the From of every customer "
                           "e-mail.")
    support_email: str = Field(default="support@localhost", description="Branding: Reply-To of customer e-mails and "
                               "the address they name for help.")
    company_name: str = Field(default="Your Newsletter", description="Branding: the name on every e-mail, cancel "
                              "page and the dashboard.")
    # the seller on receipts (self-service page and PDF); the name defaults to company_name
    seller_name: str | None = Field(default=None, max_length=200, description="Seller's legal name on receipts "
                                    "(default: BILLING_COMPANY_NAME).")
    seller_address: str = Field(default="", max_length=1000, description="Seller's postal address on receipts, if it differs from "
                                "BILLING_COMPANY_ADDRESS (lines separated by newlines or ' | ').")
    seller_tax_id: str = Field(default="", max_length=100, description="Seller's tax id on receipts, if it differs from BILLING_COMPANY_TAX_ID.")
    invoice_number_prefix: str = Field(
        default="INV-", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_./-]+$",
        description="Prefix of the gapless invoice numbers (a new prefix starts a new series at 1).",
    )
    company_address: str = Field(default="", description="The seller's postal address (e-mail footers, receipts).")
    company_tax_id: str = Field(default="", description="The seller's tax id (VAT / EIN) on receipts.")
    signup_url: str = Field(default="", description="Where a customer subscribes again (involuntary-end e-mail).")
    default_locale: str = Field(default="en", description="Language of customers without their own locale.")

    # run-cycle: the batched charge pipeline (see docs/architecture.md)
    claim_lease_seconds: float = Field(
        default=60.0, ge=1.0, le=3600.0,
        description="How long a worker's claim on a batch lasts without a heartbeat (renewed while it runs).",
    )
    cycle_batch_size: int = Field(
        default=1000, ge=1, le=10_000,
        description="Subscriptions per claimed batch: each batch is one transaction before its gateway calls and one "
        "after. Larger batches make fewer round trips to the database (1,000 renewed 6-10 % faster than 500 "
        "on a 2-core machine, bench/README.md) and hold more in memory (about +10 MB per 500).")
    gateway_concurrency: int = Field(default=64, ge=1, le=1000, description=(
        "Gateway calls in flight per worker, at most: one at a time, from the run's own thread, while the "
        "gateway answers at once; this many as soon as calls wait on it (a network round trip, a rate limit)."))
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

    # outgoing webhooks (docs/webhooks.md)
    admin_email: str | None = Field(
        default=None, description="Where operational warnings go (e.g. a webhook endpoint disabled after failing).",
    )
    webhook_allow_insecure_urls: bool = Field(
        default=False,
        description="Allow http:// and private / loopback webhook URLs (always allowed when BILLING_ENV is demo or test).",
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60, description="Timeout of one webhook POST.")
    webhook_secret_grace_hours: float = Field(
        default=24.0, ge=0, le=24 * 30, description="How long a rotated-out webhook secret keeps signing.",
    )

    log_level: str | None = Field(
        default=None,
        description="critical | error | warning | info | debug. Unset: info when logs go to a pipe or file "
        "(cron, systemd, containers), warning on a terminal.",
    )
    log_format: str = Field(
        default="auto", description="auto | json | console. auto: JSON unless stderr is a terminal.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for GET /metrics (for a Prometheus scraper); admin tokens are accepted too. "
        "At least 32 bytes in production.",
    )

    metrics_textfile: str | None = Field(
        default=None,
        description="billing run-cycle writes its metrics to this file (node-exporter textfile collector, "
        "e.g. /var/lib/node_exporter/textfile/billing.prom); same as --metrics-textfile.",
    )
    metrics_pushgateway: str | None = Field(
        default=None,
        description="billing run-cycle pushes its metrics to this Prometheus Pushgateway (http://host:9091); "
        "same as --metrics-pushgateway.",
    )

    segment_thresholds_minor: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [10_000, 100_000],
        description="Lifetime-value bucket limits (minor units): small < t0 <= medium < t1 <= large",
    )

    @field_validator("admin_tokens", "secret_keys", "dunning_schedule_days", "segment_thresholds_minor", mode="before")
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

    @field_validator("admin_tokens")
    @classmethod
    def _check_admin_tokens(cls, v: list[str]) -> list[str]:
        parse_admin_tokens(v)  # ValueError names the entry, never its secret
        return v

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql", "postgres:")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg:// (postgres:// and postgresql:// mean psycopg too)")
        if v.startswith("postgres://"):
            v = "postgresql+psycopg://" + v[len("postgres://"):]
        elif v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://"):]
        return v

    @field_validator("stripe_api_key", "stripe_webhook_secret", "smtp_password", "metrics_token", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, v: object) -> object:
        """``BILLING_STRIPE_API_KEY=`` (a line of deploy/billing.env.example not filled in yet)
        is no key at all -- else an empty key reached Stripe's client and read as "the gateway
        refused the request" instead of naming the setting to fill in."""
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @field_validator("gateway")
    @classmethod
    def _check_gateway(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().lower()
        if v not in {"fake", "stripe"}:
            raise ValueError("must be 'fake' or 'stripe'")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _check_env(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip().lower() or None
            if v is not None and v not in {m.value for m in Mode}:
                raise ValueError("must be production, development, demo or test")
        return v

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip().lower()
        if v not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("must be critical, error, warning, info or debug")
        return v

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in {"auto", "json", "console"}:
            raise ValueError("must be auto, json or console")
        return v

    @field_validator("default_locale")
    @classmethod
    def _check_locale(cls, v: str) -> str:
        from billing_engine.i18n import normalize

        norm = normalize(v)
        if norm is None:
            raise ValueError("must be a locale such as en, ru, he or hu")
        return norm

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


    # ----------------------------------------------------------------- mode and safety

    @property
    def mode(self) -> Mode:
        """The one notion of "where are we running": explicit ``BILLING_ENV`` wins, except that
        a live Stripe key is always production; unset, PostgreSQL or the stripe gateway mean
        production and anything else (a local SQLite file) development."""
        if self.live_stripe_key:
            return Mode.PRODUCTION
        if self.env is not None:
            return self.env
        if self.database_url.startswith("postgresql") or self.gateway == "stripe":
            return Mode.PRODUCTION
        return Mode.DEVELOPMENT

    @property
    def live_stripe_key(self) -> bool:
        key = self.stripe_api_key.get_secret_value() if self.stripe_api_key else ""
        return key.startswith(("sk_live_", "rk_live_"))

    @property
    def gateway_name(self) -> str:
        """The gateway to build: the explicit ``BILLING_GATEWAY``, else ``fake`` (outside
        production; :meth:`check_production_safety` refuses an unset one in production)."""
        return self.gateway or "fake"

    def named_admin_tokens(self) -> list[AdminToken]:
        """``BILLING_ADMIN_TOKENS`` with their names and roles (see :mod:`billing_engine.admin_tokens`)."""
        return parse_admin_tokens(self.admin_tokens)

    def admin_secrets(self) -> list[str]:
        """Every admin token's secret (for checks, and for redacting logs)."""
        return [t.secret for t in self.named_admin_tokens()]

    def signing_keys(self) -> list[str]:
        """Cancel-link / session keys, newest first: the first signs, all verify."""
        keys = [k.get_secret_value() for k in self.secret_keys if k.get_secret_value()]
        if not keys or "secret_key" in self.model_fields_set:
            keys.append(self.secret_key.get_secret_value())
        return list(dict.fromkeys(keys))

    def check_production_safety(self, *, serving_api: bool = False) -> None:
        """Refuse to run in production with a public signing key, weak admin tokens or no
        gateway choice. No-op in development, demo and test mode. Raises
        :class:`ConfigurationError` (exit 78) with one line saying what to set."""
        if self.mode is not Mode.PRODUCTION:
            return
        why = "(production: PostgreSQL, stripe or BILLING_ENV=production)"
        for key in self.signing_keys():
            name = "BILLING_SECRET_KEYS" if self.secret_keys else "BILLING_SECRET_KEY"
            if key == DEV_SECRET_KEY:
                raise ConfigurationError(f"{name} is not set and the built-in key is public {why}: "
                                         f"anyone could forge cancel links; {GENERATE_HINT}")
            if len(key.encode()) < MIN_SECRET_BYTES:
                raise ConfigurationError(f"{name} is too short (a key needs at least {MIN_SECRET_BYTES} "
                                         f"bytes) {why}; {GENERATE_HINT}")
        tokens = self.admin_secrets()
        if serving_api and not tokens:
            raise ConfigurationError(f"BILLING_ADMIN_TOKENS is not set {why}; {GENERATE_HINT}")
        if any(len(t.encode()) < MIN_SECRET_BYTES for t in tokens):
            raise ConfigurationError(f"BILLING_ADMIN_TOKENS has a token shorter than {MIN_SECRET_BYTES} bytes "
                                     f"{why}; {GENERATE_HINT}")
        metrics = self.metrics_token.get_secret_value() if self.metrics_token else ""
        if metrics and len(metrics.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(f"BILLING_METRICS_TOKEN is shorter than {MIN_SECRET_BYTES} bytes {why}; "
                                     f"{GENERATE_HINT}")
        if self.gateway is None:
            raise ConfigurationError(UNSET_GATEWAY)


PLACEHOLDER_BRANDING = {"company_name": "Your Newsletter", "support_email": "support@localhost"}


def branding_warnings(settings: Settings) -> list[str]:
    """What a production start prints when the seller is not named: the placeholders
    would reach customers. Empty outside production or when everything is set."""
    if settings.mode is not Mode.PRODUCTION:
        return []
    out = []
    for name, placeholder in PLACEHOLDER_BRANDING.items():
        if not getattr(settings, name) or getattr(settings, name) == placeholder:
            out.append(f"BILLING_{name.upper()} is not set: customers would see {placeholder!r}")
    for name in ("company_address", "company_tax_id"):
        if not getattr(settings, name):
            out.append(f"BILLING_{name.upper()} is not set: receipts and e-mails will not show it")
    if "localhost" in settings.mail_from:
        out.append(f"BILLING_MAIL_FROM is a placeholder ({settings.mail_from!r})")
    return out


def load_settings(**overrides: object) -> Settings:
    """Read settings; turn pydantic's report into one readable line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "BILLING_" + "_".join(str(p) for p in err["loc"]).upper()
        msg = str(err["msg"]).removeprefix("Value error, ")  # pydantic's prefix for a validator's own words
        if err.get("input") == "" and err["type"] != "missing":
            msg = f"is empty ({msg})"
        raise ConfigurationError(f"invalid setting {name}: {msg}", field=None) from None
    except SettingsError as exc:
        raise ConfigurationError(f"invalid setting: {exc}", field=None) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
