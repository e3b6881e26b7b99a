"""Build the configured gateway (``BILLING_GATEWAY=fake|stripe``).

An unset ``BILLING_GATEWAY`` means the fake gateway only outside production (demo, tests,
a local SQLite file): a production cron that silently "charged" through the fake would mark
invoices paid without charging anyone. See :meth:`Settings.check_production_safety`.
"""

from __future__ import annotations

import logging

from billing_engine.errors import ConfigurationError
from billing_engine.gateway.protocol import PaymentGateway
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


def build_gateway(settings: Settings) -> PaymentGateway:
    global _fake_singleton
    if settings.gateway is None and settings.mode is Mode.PRODUCTION:
        raise ConfigurationError(UNSET_GATEWAY)
    if settings.gateway_name == "stripe":
        if settings.stripe_api_key is None:
            raise ConfigurationError("BILLING_STRIPE_API_KEY is required when BILLING_GATEWAY=stripe")
        from billing_engine.gateway.stripe import StripeGateway

        kwargs: dict[str, object] = {"api_key": settings.stripe_api_key.get_secret_value()}
        if settings.stripe_api_base:
            kwargs["api_base"] = settings.stripe_api_base
        if settings.stripe_max_ops_per_second:
            kwargs["max_ops_per_second"] = settings.stripe_max_ops_per_second
        return StripeGateway(**kwargs)  # type: ignore[arg-type]
    from billing_engine.gateway.fake import FakeGateway

    warning = fake_gateway_warning(settings)
    if warning:  # allowed (the user chose it), but said where money would move: run-cycle, refunds, API
        log.warning(warning)  # unconfigured logging (the CLI) prints this one line on stderr
    if _fake_singleton is None:
        _fake_singleton = FakeGateway(ledger_path=settings.fake_ledger, latency=settings.fake_latency_ms / 1000)
    return _fake_singleton
