"""Secret-key rotation: the first of BILLING_SECRET_KEYS signs, every key still verifies,
so links already e-mailed keep working until the old key is dropped."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from billing_engine import links
from billing_engine.settings import load_settings

OLD, NEW = "o" * 40, "n" * 40


def test_links_signed_with_the_old_key_still_open_after_rotation(now: datetime) -> None:
    before = load_settings(secret_key=OLD)
    token = links.make_cancel_token(before, "sub_A", now)
    rotated = load_settings(secret_keys=f"{NEW},{OLD}")
    assert links.verify_cancel_token(rotated, token, now + timedelta(days=1)) == "sub_A"


def test_new_links_are_signed_with_the_first_key(now: datetime) -> None:
    rotated = load_settings(secret_keys=f"{NEW},{OLD}")
    token = links.make_cancel_token(rotated, "sub_A", now)
    assert links.verify_cancel_token(load_settings(secret_key=NEW), token, now) == "sub_A"
    with pytest.raises(links.InvalidCancelLink):
        links.verify_cancel_token(load_settings(secret_key=OLD), token, now)


def test_a_dropped_key_no_longer_verifies(now: datetime) -> None:
    token = links.make_cancel_token(load_settings(secret_key=OLD), "sub_A", now)
    with pytest.raises(links.InvalidCancelLink):
        links.verify_cancel_token(load_settings(secret_keys=NEW), token, now)


def test_the_single_secret_key_keeps_verifying_next_to_the_new_list(
    now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = links.make_cancel_token(load_settings(secret_key=OLD), "sub_A", now)
    monkeypatch.setenv("BILLING_SECRET_KEY", OLD)
    monkeypatch.setenv("BILLING_SECRET_KEYS", NEW)
    settings = load_settings()
    assert settings.signing_keys() == [NEW, OLD]
    assert links.verify_cancel_token(settings, token, now) == "sub_A"
