"""Signed cancel links: bound to one subscription, expiring, unforgeable."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from billing_engine import links
from billing_engine.settings import Settings, load_settings


@pytest.fixture
def settings() -> Settings:
    return load_settings(secret_key="k" * 40, public_base_url="https://news.example/", cancel_link_max_age_days=60)


def test_a_link_opens_the_subscription_it_was_made_for(settings: Settings, now: datetime) -> None:
    url = links.make_cancel_url(settings, "sub_A", now)
    assert url.startswith("https://news.example/cancel/")
    token = url.removeprefix("https://news.example/cancel/")
    assert "/" not in token and "?" not in token
    assert links.verify_cancel_token(settings, token, now + timedelta(days=59)) == "sub_A"


def test_links_for_different_subscriptions_differ(settings: Settings, now: datetime) -> None:
    assert links.make_cancel_token(settings, "sub_A", now) != links.make_cancel_token(settings, "sub_B", now)


def test_a_link_expires_after_the_configured_days(settings: Settings, now: datetime) -> None:
    token = links.make_cancel_token(settings, "sub_A", now)
    with pytest.raises(links.ExpiredCancelLink) as info:
        links.verify_cancel_token(settings, token, now + timedelta(days=60, seconds=1))
    assert info.value.subscription_id == "sub_A"
    assert info.value.http_status == 400
    assert links.expires_at(settings, now) == now + timedelta(days=60)


def test_a_link_issued_by_a_run_simulated_ahead_still_works(settings: Settings, now: datetime) -> None:
    token = links.make_cancel_token(settings, "sub_A", now + timedelta(days=30))
    assert links.verify_cancel_token(settings, token, now) == "sub_A"


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
    lambda t: t[:-10],  # truncated when copied
    lambda t: "x" + t,  # payload changed
    lambda t: t.replace(".", "", 1),
    lambda t: "",
    lambda t: "not-a-token",
    lambda t: "é" * 20,
    lambda t: t * 5,  # absurdly long
])
def test_a_tampered_link_is_invalid(settings: Settings, now: datetime, mangle: object) -> None:
    token = links.make_cancel_token(settings, "sub_A", now)
    with pytest.raises(links.InvalidCancelLink) as info:
        links.verify_cancel_token(settings, mangle(token), now)  # type: ignore[operator]
    assert not isinstance(info.value, links.ExpiredCancelLink)
    assert info.value.http_status == 404


def test_a_link_signed_with_another_key_is_invalid(settings: Settings, now: datetime) -> None:
    other = load_settings(secret_key="z" * 40)
    token = links.make_cancel_token(other, "sub_A", now)
    with pytest.raises(links.InvalidCancelLink):
        links.verify_cancel_token(settings, token, now)


def test_a_token_signed_for_another_purpose_is_invalid(settings: Settings, now: datetime) -> None:
    from itsdangerous import URLSafeTimedSerializer

    foreign = URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt="password-reset").dumps("sub_A")
    with pytest.raises(links.InvalidCancelLink):
        links.verify_cancel_token(settings, foreign, now)


def test_a_naive_now_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError):
        links.make_cancel_token(settings, "sub_A", datetime(2026, 1, 1))


def test_a_link_minted_centuries_ahead_does_not_verify(settings: Settings, now: datetime) -> None:
    """`billing cancel-link --at 2999-...` must not mint a 1,000-year capability."""
    token = links.make_cancel_token(settings, "sub_A", now.replace(year=2999))
    with pytest.raises(links.InvalidCancelLink):
        links.verify_cancel_token(settings, token, now)


def test_no_link_works_longer_than_the_maximum_lifetime(settings: Settings, now: datetime) -> None:
    ahead = links.MAX_LIFETIME - links.max_age(settings)
    token = links.make_cancel_token(settings, "sub_A", now + ahead)
    assert links.verify_cancel_token(settings, token, now) == "sub_A"
    token = links.make_cancel_token(settings, "sub_A", now + ahead + timedelta(seconds=1))
    with pytest.raises(links.InvalidCancelLink):
        links.verify_cancel_token(settings, token, now)
