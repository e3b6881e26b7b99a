"""The import verbs the CLI and the API call: validate everything, then write in one
transaction (CSV) or page by page with a persisted cursor (Stripe)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import stripe
from sqlalchemy import text
from sqlalchemy.engine import Engine

from billing_engine.db import transaction
from billing_engine.errors import ConfigurationError, GatewayUnavailable
from billing_engine.gateway.rate_limit import SharedTokenBucket, TokenBucket, default_rate
from billing_engine.imports import csv_source, stripe_source, writer
from billing_engine.imports.records import HOLD
from billing_engine.settings import Settings


@dataclass
class Report:
    source: str
    dry_run: bool
    result: writer.Result
    unsupported: list[dict[str, Any]] = field(default_factory=list)  # objects that cannot be mapped, with why
    resumed_from: str | None = None
    charge_from: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "dry_run": self.dry_run, **self.result.as_dict(),
                "unsupported": self.unsupported, "resumed_from": self.resumed_from, "charge_from": self.charge_from,
                "would_create" if self.dry_run else "subscriptions_created": self.result.planned}


def import_csv(engine: Engine, text: str, *, now: datetime, default_gateway: str, dry_run: bool = False,
               charge_from: datetime | None = None, actor: str = "admin:import") -> Report:
    """Validate every row (:class:`csv_source.ImportInvalid` lists the bad ones, nothing
    written), then create what is missing in ONE transaction: all or nothing."""
    with transaction(engine) as session:
        records = csv_source.parse(session, text, default_gateway=default_gateway, charge_from=charge_from)
        result = writer.write(session, records, now=now, dry_run=dry_run, actor=actor,
                              plan_details=len(records) <= 200)
        if dry_run:
            session.rollback()
    if not dry_run:
        analyze_after(engine, result)
    return Report(source="csv", dry_run=dry_run, result=result, charge_from=charge_from)


def analyze_after(engine: Engine, result: writer.Result) -> None:
    """PostgreSQL plans the next look-ups by external id (and the run-cycle's queries) from
    the tables' statistics: refresh them after a bulk load, not when autovacuum gets to it."""
    if engine.dialect.name != "postgresql" or result.created["subscriptions"] < 1000:
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE customers, payment_methods, consents, subscriptions, events"))


def stripe_limiter(settings: Settings, engine: Engine) -> SharedTokenBucket:
    """The account's rate limit, the SAME bucket the run-cycle's Stripe calls take from."""
    key = settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else ""
    rate = settings.gateway_rate_per_second or settings.stripe_max_ops_per_second or default_rate(key)
    return SharedTokenBucket(engine, "gateway:stripe", rate)


def import_stripe(engine: Engine, settings: Settings, *, now: datetime, dry_run: bool = False,
                  charge_from: datetime | None = HOLD, actor: str = "admin:import",
                  http_client: stripe.HTTPClient | None = None, limiter: TokenBucket | SharedTokenBucket | None = None,
                  page_size: int = stripe_source.PAGE_SIZE) -> Report:
    """Import the account's live subscriptions (resuming a crashed run). ``charge_from``
    defaults to "held until ``billing import cutover``"."""
    client = stripe_source.make_client(settings, limiter=limiter or stripe_limiter(settings, engine),
                                       http_client=http_client)
    try:
        result, unsupported, resumed = stripe_source.run(engine, client, now=now, dry_run=dry_run,
                                                         charge_from=charge_from, actor=actor, page_size=page_size)
    except stripe.AuthenticationError as exc:
        raise ConfigurationError(f"Stripe refused the API key: {exc.user_message or exc}") from None
    except stripe.APIConnectionError as exc:
        raise GatewayUnavailable(f"Stripe is unreachable: {exc.user_message or exc}") from None
    except stripe.StripeError as exc:
        raise ConfigurationError(f"Stripe refused a request of the import: {exc.user_message or exc}") from None
    if not dry_run:
        analyze_after(engine, result)
    return Report(source="stripe", dry_run=dry_run, result=result, unsupported=[u.as_dict() for u in unsupported],
                  resumed_from=resumed, charge_from=charge_from)


def stripe_client(engine: Engine, settings: Settings, *, http_client: stripe.HTTPClient | None = None,
                  limiter: TokenBucket | SharedTokenBucket | None = None) -> stripe.StripeClient:
    return stripe_source.make_client(settings, limiter=limiter or stripe_limiter(settings, engine),
                                     http_client=http_client)
