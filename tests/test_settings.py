"""Settings: a bad value is one readable line naming the BILLING_ variable."""

from __future__ import annotations

import pytest

from billing_engine.errors import ConfigurationError
from billing_engine.settings import load_settings


@pytest.mark.parametrize("env,needle", [
    ({"BILLING_DATABASE_URL": "mysql://x"}, "BILLING_DATABASE_URL"),
    ({"BILLING_GATEWAY": "paypal"}, "BILLING_GATEWAY"),
    ({"BILLING_DUNNING_SCHEDULE_DAYS": "3,1"}, "BILLING_DUNNING_SCHEDULE_DAYS"),
    ({"BILLING_SMTP_PORT": "http"}, "BILLING_SMTP_PORT"),
])
def test_invalid_setting_is_one_readable_line(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigurationError) as exc:
        load_settings()
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("env,says", [
    ({"BILLING_GATEWAY": ""}, "invalid setting BILLING_GATEWAY: is empty (must be 'fake' or 'stripe')"),
    ({"BILLING_GATEWAY": "paypal"}, "invalid setting BILLING_GATEWAY: must be 'fake' or 'stripe'"),
])
def test_a_validator_s_words_come_without_pydantic_s_prefix(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                           says: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigurationError) as exc:
        load_settings()
    assert str(exc.value) == says
