"""Build the configured gateway (``BILLING_GATEWAY=fake|stripe``)."""

from __future__ import annotations

from billing_engine.errors import ConfigurationError
from billing_engine.gateway.protocol import PaymentGateway
from billing_engine.settings import Settings

_fake_singleton: PaymentGateway | None = None


def build_gateway(settings: Settings) -> PaymentGateway:
    global _fake_singleton
    if settings.gateway == "stripe":
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

    if _fake_singleton is None:
        _fake_singleton = FakeGateway(ledger_path=settings.fake_ledger, latency=settings.fake_latency_ms / 1000)
    return _fake_singleton
