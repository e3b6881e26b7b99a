"""The API refuses to start in production with a public signing key or no admin token."""

from __future__ import annotations

import pytest

from api.app import create_app
from billing_engine.db import make_engine
from billing_engine.errors import ConfigurationError
from billing_engine.gateway.fake import FakeGateway
from billing_engine.settings import load_settings

STRONG = "s" * 43


def test_the_app_factory_refuses_the_built_in_key_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_ENV", "production")
    settings = load_settings(admin_tokens=[STRONG], gateway="fake")
    with pytest.raises(ConfigurationError, match="BILLING_SECRET_KEY") as info:
        create_app(settings=settings, engine=make_engine("sqlite://"), gateway=FakeGateway())
    assert info.value.exit_code == 78


def test_the_app_factory_refuses_production_without_admin_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_ENV", "production")
    settings = load_settings(secret_key=STRONG, gateway="fake")
    with pytest.raises(ConfigurationError, match="BILLING_ADMIN_TOKENS"):
        create_app(settings=settings, engine=make_engine("sqlite://"), gateway=FakeGateway())


def test_the_app_starts_in_production_when_everything_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_ENV", "production")
    settings = load_settings(secret_keys=f"{STRONG},{'o' * 40}", admin_tokens=[STRONG], gateway="stripe",
                             stripe_api_key="sk_test_x")
    create_app(settings=settings, engine=make_engine("sqlite://"), gateway=FakeGateway())


def test_an_unset_gateway_is_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    from billing_engine.gateway.factory import build_gateway

    monkeypatch.setenv("BILLING_ENV", "production")
    with pytest.raises(ConfigurationError, match="BILLING_GATEWAY is not set"):
        build_gateway(load_settings(secret_key=STRONG))
