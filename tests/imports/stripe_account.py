"""A small Stripe account for the import tests: a ``stripe.HTTPClient`` answering the
list / retrieve / update endpoints the importer uses with Stripe's real JSON shapes
(templates copied from Stripe's official fixtures into ``stripe_objects.json``).

Lists are in id order with ``limit`` / ``starting_after`` / ``has_more``; ``expand[]``
is honoured for the paths the importer asks for. ``hold(predicate)`` makes a matching
request wait until ``release()`` (the crash test kills the importer while it waits).
Every request is recorded (method, path, decoded params, Idempotency-Key).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import stripe

from tests.gateway.stripe_sim import Recorded, decode_form

TEMPLATES: dict[str, dict[str, Any]] = json.loads((Path(__file__).parent / "stripe_objects.json").read_text())


def ts(d: datetime | None) -> int | None:
    return int(d.timestamp()) if d is not None else None


class StripeAccount(stripe.HTTPClient):
    name = "stripe-account"

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, dict[str, Any]] = {}
        self.subscriptions: list[str] = []
        self.invoices: list[str] = []
        self.requests: list[Recorded] = []
        self._n = 0
        self._lock = threading.RLock()
        self._hold: Callable[[str, dict[str, Any]], bool] | None = None
        self.holding = threading.Event()
        self._released = threading.Event()

    # -- building the account ---------------------------------------------------------

    def _new(self, kind: str, prefix: str, **fields: Any) -> dict[str, Any]:
        self._n += 1
        obj = copy.deepcopy(TEMPLATES[kind])
        obj.update(id=f"{prefix}_{self._n:04d}TEST", livemode=False, metadata={}, **fields)
        self.objects[obj["id"]] = obj
        return obj

    def customer(self, email: str | None, *, name: str = "", card: str = "visa", last4: str = "4242",
                 pm_type: str = "card") -> dict[str, Any]:
        cus = self._new("customer", "cus", email=email, name=name, discount=None, created=1700000000,
                        currency="usd")
        pm = self._new("payment_method", "pm", customer=cus["id"], type=pm_type, created=1700000000)
        pm["card"].update(brand=card, display_brand=card, last4=last4, exp_month=12, exp_year=2031)
        cus["invoice_settings"]["default_payment_method"] = pm["id"]
        return cus

    def price(self, amount: int | None, currency: str, interval: str, *, count: int = 1, product: str = "Newsletter",
              usage_type: str = "licensed") -> dict[str, Any]:
        prod = self._new("product", "prod", name=product, default_price=None)
        price = self._new("price", "price", unit_amount=amount,
                          unit_amount_decimal=str(amount) if amount is not None else None, currency=currency,
                          product=prod["id"], transform_quantity=None, custom_unit_amount=None)
        price["recurring"].update(interval=interval, interval_count=count, usage_type=usage_type, meter=None)
        prod["default_price"] = price["id"]
        return price

    def subscription(self, customer: dict[str, Any], prices: list[dict[str, Any]], *, status: str,
                     anchor: datetime, period: tuple[datetime, datetime], trial_end: datetime | None = None,
                     cancel_at_period_end: bool = False, created: datetime | None = None,
                     latest_invoice: dict[str, Any] | None = None) -> dict[str, Any]:
        sub = self._new("subscription", "sub", customer=customer["id"], status=status,
                        billing_cycle_anchor=ts(anchor), billing_cycle_anchor_config=None,
                        cancel_at=ts(period[1]) if cancel_at_period_end else None,
                        cancel_at_period_end=cancel_at_period_end, canceled_at=None, ended_at=None,
                        created=ts(created or period[0]), start_date=ts(created or period[0]),
                        currency=prices[0]["currency"], default_payment_method=None, discounts=[],
                        pause_collection=None, pending_update=None, pending_setup_intent=None, schedule=None,
                        next_pending_invoice_item_invoice=None, transfer_data=None, billing_schedules=[],
                        trial_start=ts(period[0]) if trial_end else None, trial_end=ts(trial_end),
                        latest_invoice=latest_invoice["id"] if latest_invoice else None)
        template = sub["items"]["data"][0]
        items = []
        for i, price in enumerate(prices):
            item = copy.deepcopy(template)
            item.update(id=f"si_{sub['id']}_{i}", price=copy.deepcopy(price), quantity=1, subscription=sub["id"],
                        current_period_start=ts(period[0]), current_period_end=ts(period[1]))
            item.pop("plan", None)
            items.append(item)
        sub["items"].update(data=items, url=f"/v1/subscription_items?subscription={sub['id']}")
        self.subscriptions.append(sub["id"])
        return sub

    def invoice(self, sub: dict[str, Any], *, period: tuple[datetime, datetime], amount: int, status: str = "paid",
                next_payment_attempt: datetime | None = None) -> dict[str, Any]:
        inv = self._new("invoice", "in", customer=sub["customer"], status=status, amount_due=amount,
                        amount_paid=amount if status == "paid" else 0, currency=sub["currency"],
                        next_payment_attempt=ts(next_payment_attempt), billing_reason="subscription_cycle",
                        period_start=ts(period[0]), period_end=ts(period[1]), subscription=sub["id"])
        line = inv["lines"]["data"][0]
        line.update(amount=amount, currency=sub["currency"], period={"start": ts(period[0]), "end": ts(period[1])},
                    subscription=sub["id"])
        inv["parent"] = {"type": "subscription_details", "quote_details": None,
                         "subscription_details": {"subscription": sub["id"], "metadata": {}}}
        self.invoices.append(inv["id"])
        return inv

    # -- faults ------------------------------------------------------------------------

    def hold(self, predicate: Callable[[str, dict[str, Any]], bool]) -> None:
        self._hold = predicate

    def release(self) -> None:
        self._released.set()

    # -- stripe.HTTPClient -------------------------------------------------------------

    def request(self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None,
                *, _usage: list[str] | None = None) -> tuple[str, int, Mapping[str, str]]:
        parts = urlsplit(url)
        raw = post_data if method == "post" else parts.query
        raw = raw.decode() if isinstance(raw, bytes) else (raw or "")
        params = decode_form(raw)
        self.requests.append(Recorded(method, parts.path, params, (headers or {}).get("Idempotency-Key"), url))
        if self._hold is not None and self._hold(parts.path, params):
            self.holding.set()
            self._released.wait(60)
        with self._lock:
            status, body = self._route(method, parts.path, params)
        return json.dumps(body), status, {"request-id": f"req_{len(self.requests)}"}

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        expand = params.get("expand") or []
        if method == "get" and path == "/v1/prices":
            prices = [o for o in self.objects.values() if o["object"] == "price"]
            return 200, self._list(path, [self._expand(p, expand) for p in prices], params)
        if method == "get" and path == "/v1/subscriptions":
            subs = [self.objects[i] for i in self.subscriptions
                    if params.get("status") in (None, "all", self.objects[i]["status"])]
            return 200, self._list(path, [self._expand(s, expand) for s in subs], params)
        if method == "get" and path == "/v1/invoices":
            invs = [self.objects[i] for i in self.invoices if self.objects[i]["subscription"] == params.get("subscription")
                    and params.get("status") in (None, self.objects[i]["status"])]
            return 200, self._list(path, invs, params)
        if path.startswith("/v1/subscriptions/"):
            sid = path.rsplit("/", 1)[1]
            sub = self.objects.get(sid)
            if sub is None:
                return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                       "message": f"No such subscription: '{sid}'", "param": "id"}}
            if method == "post":
                if "cancel_at_period_end" in params:
                    sub["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
                    end = sub["items"]["data"][0]["current_period_end"]
                    sub["cancel_at"] = end if sub["cancel_at_period_end"] else None
                if "pause_collection" in params:
                    sub["pause_collection"] = {"behavior": params["pause_collection"]["behavior"], "resumes_at": None}
            return 200, self._expand(sub, [e.removeprefix("data.") for e in expand], top=True)
        return 404, {"error": {"type": "invalid_request_error", "message": f"Unrecognized request URL ({path})"}}

    def _list(self, path: str, objs: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        ids = [o["id"] for o in objs]
        start = ids.index(params["starting_after"]) + 1 if params.get("starting_after") in ids else 0
        limit = int(params.get("limit") or 10)
        page = objs[start:start + limit]
        return {"object": "list", "url": path, "has_more": start + limit < len(objs), "data": page}

    def _expand(self, obj: dict[str, Any], expand: list[str], *, top: bool = False) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        for path in expand:
            steps = path.split(".")
            if not top:
                steps = steps[1:]  # drop "data"
            node = out
            for i, step in enumerate(steps):
                value = node.get(step)
                if isinstance(value, str) and value in self.objects:
                    value = node[step] = copy.deepcopy(self.objects[value])
                if i < len(steps) - 1:
                    if not isinstance(value, dict):
                        break
                    node = value
        return out
