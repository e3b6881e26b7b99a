"""Build the configured gateway (``BILLING_GATEWAY=fake|stripe``).

An unset ``BILLING_GATEWAY`` means the fake gateway only outside production (demo, tests,
a local SQLite file): a production cron that silently "charged" through the fake would mark
invoices paid without charging anyone. See :meth:`Settings.check_production_safety`.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from billing_engine.errors import ConfigurationError
from billing_engine.gateway.protocol import PaymentGateway
from billing_engine.gateway.rate_limit import SharedTokenBucket, default_rate
from billing_engine.settings import UNSET_GATEWAY, Mode, Settings

log = logging.getLogger(__name__)

_fake_singleton: PaymentGateway | None = None


def fake_gateway_warning(settings: Settings) -> str | None:
    """The one-line warning for an explicit ``BILLING_GATEWAY=fake`` on PostgreSQL outside
    demo/test mode (it is allowed: the user chose it), else None."""
    if settings.gateway != "fake" or settings.mode in (Mode.DEMO, Mode.TEST):
        return None
    if not settings.database_url.startswith("postgresql"):
        return None
    return ("warning: BILLING_GATEWAY=fake on PostgreSQL: invoices are marked paid without charging anyone "
            "(set BILLING_GATEWAY=stripe to charge cards)")


def shared_limiter(settings: Settings, engine: Engine) -> SharedTokenBucket | None:
    """The account-wide rate limit every worker shares through the database: the
    configured ``BILLING_GATEWAY_RATE_PER_SECOND``, else Stripe's documented limit for
    the key; none for the fake gateway unless configured."""
    rate = settings.gateway_rate_per_second
    if rate is None and settings.gateway_name == "stripe" and settings.stripe_api_key is not None:
        rate = settings.stripe_max_ops_per_second or default_rate(settings.stripe_api_key.get_secret_value())
    if rate is None:
        return None
    return SharedTokenBucket(engine, f"gateway:{settings.gateway_name}", limit=rate)


def check_gateway(settings: Settings) -> None:
    """``ConfigurationError`` when :func:`build_gateway` could not build the configured
    gateway (no gateway chosen in production, stripe without a key); nothing is built."""
    if settings.gateway is None and settings.mode is Mode.PRODUCTION:
        raise ConfigurationError(UNSET_GATEWAY)
    if settings.gateway_name == "stripe" and settings.stripe_api_key is None:
        raise ConfigurationError("BILLING_STRIPE_API_KEY is required when BILLING_GATEWAY=stripe")


def build_gateway(settings: Settings, *, engine: Engine | None = None) -> PaymentGateway:
    """The configured gateway; with ``engine``, paced by the rate limit shared by all workers."""
    global _fake_singleton
    check_gateway(settings)
    limiter = shared_limiter(settings, engine) if engine is not None else None
    if settings.gateway_name == "stripe":
        assert settings.stripe_api_key is not None
        from billing_engine.gateway.stripe import StripeGateway

        kwargs: dict[str, object] = {"api_key": settings.stripe_api_key.get_secret_value()}
        if settings.stripe_api_base:
            kwargs["api_base"] = settings.stripe_api_base
        if settings.stripe_max_ops_per_second:
            kwargs["max_ops_per_second"] = settings.stripe_max_ops_per_second
        if limiter is not None:
            kwargs["rate_limiter"] = limiter
        return StripeGateway(**kwargs)  # type: ignore[arg-type]
    from billing_engine.gateway.fake import FakeGateway

    warning = fake_gateway_warning(settings)
    if warning:  # allowed (the user chose it), but said where money would move: run-cycle, refunds, API
        log.warning(warning)  # unconfigured logging (the CLI) prints this one line on stderr
    if limiter is not None:
        return FakeGateway(ledger_path=settings.fake_ledger, latency=settings.fake_latency_ms / 1000,
                           rate_limiter=limiter)
    if _fake_singleton is None:
        _fake_singleton = FakeGateway(ledger_path=settings.fake_ledger, latency=settings.fake_latency_ms / 1000)
    return _fake_singleton
