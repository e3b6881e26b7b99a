"""``billing import stripe``: a Stripe account's customers, default cards, prices and
live subscriptions, through the official SDK.

* Paginated (``auto_paging_iter``) and paced by the rate limit every worker shares
  (:class:`SharedTokenBucket`): every request of the SDK takes a token first.
* Resumable: the subscriptions of each status are read in id order; each page is written
  in ONE transaction together with its cursor (``import_progress``), so a crash loses at
  most the page in flight and a rerun continues after the last committed one. Objects
  are found again by external id, so a page written twice creates nothing twice.
* :func:`map_subscription` is the one pure mapping of a Stripe subscription onto an
  import record, or the reason it cannot be imported (metered or tiered prices, several
  items, intervals or currencies the engine does not bill, no card, discounts...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_engine.db import transaction
from billing_engine.errors import BillingError, ConfigurationError
from billing_engine.gateway.rate_limit import SharedTokenBucket, TokenBucket
from billing_engine.imports import writer
from billing_engine.imports.records import CardSpec, CustomerSpec, PlanSpec, Record, engine_schedule
from billing_engine.models import ImportProgress
from billing_engine.money import normalize_currency
from billing_engine.periods import validate_interval
from billing_engine.settings import Settings

STATUSES = ("active", "trialing", "past_due")
EXPAND = ["data.customer", "data.default_payment_method", "data.customer.invoice_settings.default_payment_method",
          "data.latest_invoice"]
PAGE_SIZE = 100


class Paced(stripe.HTTPClient):
    """The SDK's HTTP client, taking a token of the shared rate limit before each request."""

    name = "paced"

    def __init__(self, inner: stripe.HTTPClient, limiter: TokenBucket | SharedTokenBucket) -> None:
        super().__init__()
        self.inner, self.limiter = inner, limiter

    def request(self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None,
                *, _usage: list[str] | None = None) -> tuple[str, int, Mapping[str, str]]:
        self.limiter.acquire()
        return self.inner.request(method, url, headers, post_data)

    def close(self) -> None:
        self.inner.close()  # type: ignore[no-untyped-call]


def make_client(settings: Settings, *, limiter: TokenBucket | SharedTokenBucket,
                http_client: stripe.HTTPClient | None = None) -> stripe.StripeClient:
    """A client of the account to import from: ``BILLING_STRIPE_API_KEY``, and
    ``BILLING_STRIPE_API_BASE`` for a local Stripe-compatible server."""
    if settings.stripe_api_key is None:
        raise ConfigurationError("BILLING_STRIPE_API_KEY is required to import from Stripe")
    base = settings.stripe_api_base
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(), base_addresses={"api": base} if base else None,
        http_client=Paced(http_client or stripe.RequestsClient(timeout=30.0), limiter), max_network_retries=3)


@dataclass(frozen=True, kw_only=True)
class Unsupported:
    object: str  # subscription | price | customer
    id: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"object": self.object, "id": self.id, "reason": self.reason}


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value is not None else None


def _id(value: Any) -> str | None:
    return value.get("id") if isinstance(value, dict) else value


def map_subscription(sub: dict[str, Any], *, products: Mapping[str, str], charge_from: datetime | None
                     ) -> Record | Unsupported:
    """A Stripe subscription (with customer, payment methods and latest invoice expanded)
    as an import record, or why it cannot be imported."""
    sid = sub["id"]

    def no(reason: str) -> Unsupported:
        return Unsupported(object="subscription", id=sid, reason=reason)

    items = (sub.get("items") or {}).get("data") or []
    if len(items) != 1:
        return no(f"{len(items)} items per subscription (the engine bills one plan per subscription)")
    item = items[0]
    price = item.get("price") or {}
    recurring = price.get("recurring") or {}
    if not recurring:
        return no(f"price {price.get('id')} is not recurring")
    if recurring.get("usage_type") == "metered" or recurring.get("meter"):
        return no(f"price {price.get('id')} is metered (usage-based); the engine bills fixed amounts")
    if price.get("billing_scheme") == "tiered":
        return no(f"price {price.get('id')} is tiered; the engine bills fixed amounts")
    if price.get("unit_amount") is None:
        return no(f"price {price.get('id')} has no whole unit_amount")
    try:
        iv, count = validate_interval(str(recurring.get("interval")), int(recurring.get("interval_count") or 1))
    except BillingError as exc:
        return no(f"unsupported interval: every {recurring.get('interval_count')} {recurring.get('interval')} "
                  f"({exc.message})")
    try:
        currency = normalize_currency(str(price.get("currency") or "").upper())
    except BillingError:
        return no(f"unsupported currency {price.get('currency')!r}")
    if sub.get("collection_method") != "charge_automatically":
        return no(f"collection_method is {sub.get('collection_method')} (invoices paid by hand)")
    if sub.get("discounts") or sub.get("discount"):
        return no("has a discount (the amounts charged would differ)")
    if sub.get("pause_collection"):
        return no("collection is paused in Stripe")
    customer = sub.get("customer")
    if not isinstance(customer, dict) or customer.get("deleted"):
        return no("its customer is deleted or was not expanded")
    if not customer.get("email"):
        return no(f"customer {customer['id']} has no e-mail address (the engine e-mails every customer)")
    pm = sub.get("default_payment_method") or (customer.get("invoice_settings") or {}).get("default_payment_method")
    if not isinstance(pm, dict):
        return no("no default payment method (the customer would have to be asked for a card)")
    if pm.get("type") != "card":
        return no(f"default payment method {pm.get('id')} is a {pm.get('type')}, not a card")
    quantity = int(item.get("quantity") or 1)
    cps = _ts(item.get("current_period_start", sub.get("current_period_start")))
    cpe = _ts(item.get("current_period_end", sub.get("current_period_end")))
    anchor = _ts(sub.get("billing_cycle_anchor"))
    if cps is None or cpe is None or anchor is None:
        return no("no current period")
    cancel_at = _ts(sub.get("cancel_at"))
    at_period_end = bool(sub.get("cancel_at_period_end")) or cancel_at == cpe
    if cancel_at is not None and not at_period_end:
        return no(f"cancels at {cancel_at.isoformat()}, which is not a period end")
    invoice = sub.get("latest_invoice")
    retry = _ts(invoice.get("next_payment_attempt")) if isinstance(invoice, dict) else None
    trial_end = _ts(sub.get("trial_end")) if sub.get("status") == "trialing" else None
    price_id = str(price["id"])
    suffix = f"-x{quantity}" if quantity != 1 else ""
    plan = PlanSpec(code=f"stripe-{price_id.lower()}{suffix}"[:64],
                    name=(products.get(_id(price.get("product")) or "") or price.get("nickname") or price_id)
                    + (f" x {quantity}" if quantity != 1 else ""),
                    amount_minor=int(price["unit_amount"]) * quantity, currency=currency, interval=iv.value,
                    interval_count=count, external_id=f"stripe:{price_id}{suffix}")
    try:
        engine_schedule(status=sub["status"], billing_anchor=anchor, current_period_start=cps,
                        current_period_end=cpe, trial_end=trial_end, next_retry_at=retry, interval=iv.value,
                        interval_count=count)
    except BillingError as exc:
        return no(f"its schedule does not fit the engine's: {exc}")
    card = pm.get("card") or {}
    return Record(
        external_id=f"stripe:{sid}", source="stripe",
        customer=CustomerSpec(external_id=f"stripe:{customer['id']}", email=customer["email"],
                              name=customer.get("name") or "", gateway_customer_id=customer["id"],
                              created_at=_ts(customer.get("created"))),
        card=CardSpec(external_id=f"stripe:{pm['id']}", gateway="stripe", token=pm["id"],
                      brand=card.get("brand") or "unknown", last4=card.get("last4") or "",
                      exp_month=card.get("exp_month"), exp_year=card.get("exp_year")),
        plan=plan, status=sub["status"], billing_anchor=anchor, current_period_start=cps, current_period_end=cpe,
        trial_end=trial_end, cancel_at_period_end=at_period_end, next_retry_at=retry,
        created_at=_ts(sub.get("created")) or cps, charge_from=charge_from,
        source_ids={"subscription": sid, "customer": customer["id"], "payment_method": pm["id"],
                    "price": price_id},
    )


def product_names(client: stripe.StripeClient) -> dict[str, str]:
    """Product id -> name, from the account's recurring prices (products expanded)."""
    out: dict[str, str] = {}
    for price in client.v1.prices.list({"limit": 100, "type": "recurring",
                                     "expand": ["data.product"]}).auto_paging_iter():
        product = price.to_dict().get("product")
        if isinstance(product, dict):
            out[product["id"]] = product.get("name") or product["id"]
    return out


def _progress(session: Session, key: str) -> ImportProgress | None:
    return session.get(ImportProgress, key)


def _pages(client: stripe.StripeClient, status: str, after: str | None, size: int) -> Iterator[list[dict[str, Any]]]:
    params: dict[str, Any] = {"status": status, "limit": size, "expand": EXPAND}
    if after:
        params["starting_after"] = after
    page: list[dict[str, Any]] = []
    for sub in client.v1.subscriptions.list(params).auto_paging_iter():  # type: ignore[arg-type]
        page.append(sub.to_dict())
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def run(engine: Engine, client: stripe.StripeClient, *, now: datetime, dry_run: bool = False,
        charge_from: datetime | None, actor: str = "admin:import", page_size: int = PAGE_SIZE,
        on_page: Callable[[str, int], None] | None = None) -> tuple[writer.Result, list[Unsupported], str | None]:
    """Import (or, dry, plan) every live subscription. Returns the counts, what cannot be
    imported and the cursor a crashed earlier run was resumed from (if any)."""
    products = product_names(client)
    result, unsupported, resumed = writer.Result(), [], None
    known_plans: dict[str, Any] = {}  # a dry run counts a new plan once, not once per page
    for status in STATUSES:
        key = f"stripe:subscriptions:{status}"
        after = None
        if not dry_run:
            with transaction(engine) as s:
                row = _progress(s, key)
                if row is not None and row.status == "running":
                    after = row.cursor
                    resumed = resumed or (f"{status} after {after}" if after else None)
                else:
                    row = row or ImportProgress(key=key)
                    row.cursor, row.status, row.created, row.started_at, row.finished_at = \
                        None, "running", 0, datetime.now(UTC), None
                row.updated_at = datetime.now(UTC)
                s.add(row)
        for page in _pages(client, status, after, page_size):
            records: list[Record] = []
            for sub in page:
                mapped = map_subscription(sub, products=products, charge_from=charge_from)
                if isinstance(mapped, Unsupported):
                    unsupported.append(mapped)
                else:
                    records.append(mapped)
            with transaction(engine) as s:
                done = writer.write(s, records, now=now, dry_run=dry_run, actor=actor, plan_details=True,
                                    known_plans=known_plans)
                if not dry_run:
                    row = _progress(s, key)
                    assert row is not None
                    row.cursor, row.updated_at = page[-1]["id"], datetime.now(UTC)
                    row.created += done.created["subscriptions"]
                    s.add(row)
                else:
                    s.rollback()
            result.add(done)
            if on_page is not None:
                on_page(status, len(page))
        if not dry_run:
            with transaction(engine) as s:
                row = _progress(s, key)
                assert row is not None
                row.status, row.finished_at, row.updated_at = "done", datetime.now(UTC), datetime.now(UTC)
                s.add(row)
    return result, unsupported, resumed
