"""The API's documentation, complete and offline.

- ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) load their JavaScript and CSS from the
  ``fastapi-offline`` package, served by this app under ``/docs/static/`` -- never from a
  CDN, so they work on a machine without internet.
- ``/openapi.json`` is completed here: every schema field gets a description and an
  example (from :data:`FIELDS`, unless the model already has one), every error response
  an example problem body, every POST documents ``Idempotency-Key``.
  tests/ops/test_openapi_docs.py walks the schema and fails on anything undescribed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse

from api.limits import MAX_BODY_BYTES

STATIC_FILES = {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"}
SUB = "sub_01JH8Z7Q2W3E4R5T6Y7V8K9M0P"
CUS = "cus_01JH8Z7Q2W3E4R5T6Y7V8K9M0P"
T = "2026-02-15T09:00:00Z"

# field -> (description, example); "Schema.field" entries win over plain field names
FIELDS: dict[str, tuple[str, Any]] = {
    "id": ("Identifier of this object (a prefix and a ULID).", SUB),
    "accepted_at": ("When the customer accepted the terms (UTC).", T),
    "active": ("Whether the plan can be subscribed to; existing subscriptions keep renewing either way.", True),
    "actor": ("Who made the change: admin:api:<token name>, admin:cli:<user>, customer or system:<rule>.",
              "admin:api:ops"),
    "amount": ("The amount in major units as an exact decimal string (display form of amount_minor).", "17.00"),
    "amount_minor": ("The amount in minor units of the currency (cents; JPY has none, KWD 3 decimals).", 1700),
    "amount_paid_minor": ("Money collected for this invoice, in minor units.", 1700),
    "amount_refunded_minor": ("Money refunded from this invoice, in minor units.", 0),
    "at": ("The business instant (UTC) this happened at or the run was made for.", T),
    "attempt_count": ("Charge attempts made for this invoice so far.", 1),
    "attempt_number": ("1 for the first charge of the invoice, then 2, 3 ... for dunning retries.", 1),
    "attempts": ("Charge attempts of this invoice, oldest first.", []),
    "NotificationOut.attempts": ("Delivery tries so far.", 1),
    "billing_anchor": ("The instant periods are computed from (a Jan 31 anchor bills Feb 28/29, Mar 31 ...).", T),
    "blocked": ("Due subscriptions not charged: no consent or no usable card (see errors).", 0),
    "brand": ("Card brand as reported by the gateway.", "visa"),
    "cancel_at_period_end": ("The subscription ends at current_period_end; no further charge.", False),
    "cancel_immediately": ("Customer cancellations of this plan end it at once instead of at period end.", False),
    "canceled_at": ("When the cancellation was decided (UTC); null while not canceled.", None),
    "canceled_by": ("Who decided the cancellation (see actor).", None),
    "canceled_involuntary": ("Subscriptions this run ended as involuntary churn (hard decline, dunning exhausted).",
                             0),
    "cancellation_comment": ("The customer's own words, if they gave any.", None),
    "cancellation_kind": ("voluntary (the customer chose) or involuntary (payment failed); set when decided.", None),
    "cancellation_reason": ("Why: too_expensive, not_using, switched, payment_failed, dispute ...", None),
    "cancellations_effective": ("Cancellations at period end that took effect in this run.", 0),
    "channel": ("Where the consent was given: web, api, cli or import.", "web"),
    "charged": ("Gateway charge calls made for new attempts.", 1),
    "closed_at": ("When the invoice was paid, voided or marked uncollectible (UTC).", None),
    "code": ("The plan's unique code (letters, digits, - and _), used instead of its id anywhere.",
             "basic-monthly"),
    "Problem.code": ("Machine-readable error code, stable across versions.", "not_found"),
    "collected": ("Money collected by this run per currency, in minor units.", {"USD": 1700}),
    "collected_display": ("The same per currency as exact decimal strings in major units.", {"USD": "17.00"}),
    "comment": ("Optional free text from the customer or admin (kept with the cancellation).", None),
    "completed_at": ("When the gateway's definitive answer was recorded (UTC).", T),
    "consent": ("The customer's consent to off-session charges (required before any charge).", None),
    "consents": ("Consents recorded for this card, newest first.", []),
    "counts": ("E-mails in the outbox per status after this call.", {"pending": 0, "sent": 120, "failed": 1}),
    "created_at": ("When this object was created (business time, UTC).", T),
    "currency": ("ISO-4217 currency code, upper case.", "USD"),
    "current_period_end": ("End of the current paid period; the next renewal is due then (UTC).",
                           "2026-03-15T09:00:00Z"),
    "current_period_start": ("Start of the current period (UTC).", T),
    "customer_email": ("The customer's e-mail address.", "ada@example.com"),
    "customer_id": ("The customer's id.", CUS),
    "data": ("The objects of this page, in list order.", []),
    "database": ("ok when the database answered.", "ok"),
    "decline_code": ("The gateway's decline code when the card refused (insufficient_funds, lost_card ...).",
                     None),
    "decline_kind": ("soft (retried by dunning) or hard (the subscription ends: involuntary).", None),
    "declined_hard": ("Charges refused for good in this run (the subscription ended: involuntary).", 0),
    "declined_soft": ("Charges refused that dunning will retry.", 0),
    "detail": ("A sentence saying what is wrong and how to fix it.", "no subscription 'sub_123'"),
    "dry_run": ("True when nothing was changed (the plan of a run).", False),
    "due": ("Due subscriptions this run processed.", 1),
    "due_at": ("When this subscription became due (period end, or retry time in dunning).", T),
    "duplicate": ("True when this event id was received before (applied once only).", False),
    "email": ("E-mail address where receipts, reminders and the cancel link go.", "ada@example.com"),
    "ended_at": ("When the subscription ended or will end (UTC); null while it runs on.", None),
    "errors": ("Human-readable warnings of this run (one line each).", []),
    "Problem.errors": ("Every invalid field, each with its own message.",
                       [{"field": "amount_minor", "message": "must be greater than 0"}]),
    "event_id": ("The Stripe event id (evt_...).", "evt_1Nabc"),
    "events": ("The subscription's history (audit log), oldest first.", []),
    "exp_month": ("Card expiry month (1-12).", 12),
    "exp_year": ("Card expiry year (four digits).", 2030),
    "expires_at": ("When the link stops working (UTC).", "2026-04-16T09:00:00Z"),
    "external_ref": ("Your own unique id for this customer, if you gave one.", "crm-4711"),
    "failed_attempts": ("Consecutive failed charges in the current dunning (0 when paid up).", 0),
    "field": ("The request field the error is about (dotted path, query parameter or header).", "amount_minor"),
    "gateway": ("The payment gateway that holds the card: stripe or fake.", "stripe"),
    "gateway_charge_id": ("The gateway's charge id (Stripe PaymentIntent pi_...).", "pi_3Nabc"),
    "gateway_customer_id": ("The gateway's customer id (Stripe cus_...), if any.", "cus_Nabc"),
    "gateway_refund_id": ("The gateway's refund id (Stripe re_...), once sent.", "re_3Nabc"),
    "idempotency_key": ("The key sent to the gateway with this request; fixed before the first try and "
                        "reused on every retry.", "pay:in_01JH8Z7Q2W3E4R5T6Y7V8K9M0P:1"),
    "interval": ("Billing interval unit: day, week, month or year.", "month"),
    "interval_count": ("Number of interval units per period (3 + month = quarterly).", 1),
    "invoice_id": ("The invoice's id.", "in_01JH8Z7Q2W3E4R5T6Y7V8K9M0P"),
    "ip_address": ("The customer's IP address when consenting.", "203.0.113.7"),
    "kind": ("Which e-mail: renewal_reminder, trial_ending, receipt, payment_failed, canceled ...",
             "renewal_reminder"),
    "last4": ("Last four digits of the card number (never the number itself).", "4242"),
    "last_error": ("Why the last delivery try failed, if it did.", None),
    "message": ("A human-readable sentence.", "must be greater than 0"),
    "PaymentAttemptOut.message": ("The processor's human-readable reason, if any.", None),
    "WouldCharge.message": ("Why the action is what it is (e.g. why a subscription is not charged).", None),
    "message_id": ("The Message-ID of the sent e-mail.", "<ntf_01JH8Z7Q2W3E4R5T6Y7V8K9M0P@example.com>"),
    "name": ("Display name.", "Basic"),
    "CustomerCreate.name": ("The customer's full name.", "Ada Lovelace"),
    "CustomerOut.name": ("The customer's full name.", "Ada Lovelace"),
    "next_attempt_at": ("When the next delivery try is due (UTC).", T),
    "next_charge_amount_minor": ("Amount of the next charge in minor units; null when none is coming.", 1700),
    "next_charge_at": ("When the next charge is due (UTC); null when none is coming.", "2026-03-15T09:00:00Z"),
    "next_retry_at": ("In dunning: when the next retry is due (UTC).", None),
    "notifications_sent": ("E-mails delivered at the end of the run.", 1),
    "outcome": ("What the event did: applied, ignored (not relevant) or its effect.", "applied"),
    "paid_at": ("When the invoice was paid (UTC).", T),
    "payload": ("Event details (amounts, old and new values, reasons).", {"amount_minor": 1700}),
    "payment_attempt_id": ("The charge attempt this refund returns money from.", "pay_01JH8Z7Q2W3E4R5T6Y7V8K9M0P"),
    "payment_method_id": ("The card charged for renewals (pm_...).", "pm_01JH8Z7Q2W3E4R5T6Y7V8K9M0P"),
    "period_end": ("End of the billed period (UTC).", "2026-03-15T09:00:00Z"),
    "period_index": ("0 for the first period of the subscription, then 1, 2 ...", 1),
    "period_start": ("Start of the billed period (UTC).", T),
    "plan": ("The plan's code.", "basic-monthly"),
    "plan_code": ("The plan's code.", "basic-monthly"),
    "plan_id": ("The plan's id.", "plan_01JH8Z7Q2W3E4R5T6Y7V8K9M0P"),
    "reason": ("Why the refund was made (requested_by_customer, duplicate, fraudulent, canceled_after_charge).",
               "requested_by_customer"),
    "received": ("True: the event was accepted.", True),
    "reconciled": ("Attempts with an unknown outcome that this run settled with the gateway.", 0),
    "refunds": ("Refunds of this invoice, oldest first.", []),
    "reminder_days": ("Days before each renewal the reminder e-mail goes out (null: BILLING_REMINDER_DAYS_BEFORE).",
                      7),
    "reminders_queued": ("Renewal, trial-end and card-expiry reminders queued by this run.", 0),
    "revoked_at": ("When the consent was revoked (UTC); null while valid.", None),
    "sent_at": ("When the e-mail was handed to the mail server (UTC).", T),
    "status": ("The object's state (values listed in the schema).", "active"),
    "SubscriptionOut.status": ("incomplete | trialing | active | past_due | canceled.", "active"),
    "SubscriptionDetail.status": ("incomplete | trialing | active | past_due | canceled.", "active"),
    "CancelOut.status": ("The subscription's status after the cancellation.", "active"),
    "WouldCharge.status": ("The subscription's status now.", "active"),
    "InvoiceOut.status": ("open | paid | uncollectible | void.", "paid"),
    "InvoiceDetail.status": ("open | paid | uncollectible | void.", "paid"),
    "PaymentAttemptOut.status": ("pending | succeeded | failed | unknown | requires_action.", "succeeded"),
    "PaymentMethodOut.status": ("active, or detached (not usable for new charges).", "active"),
    "RefundOut.status": ("pending (not confirmed by the gateway yet) | succeeded | failed.", "succeeded"),
    "NotificationOut.status": ("pending | sending | sent | failed.", "sent"),
    "Health.status": ("ok when the app is up.", "ok"),
    "Problem.status": ("The HTTP status code, repeated in the body.", 404),
    "stop_message": ("Why the run stopped early, as a sentence.", None),
    "subscriber_count": ("Subscriptions on this plan (any status).", 120),
    "subscription_id": ("The subscription's id.", SUB),
    "succeeded": ("Charges that collected money in this run.", 1),
    "succeeded_at": ("When the gateway confirmed the refund (UTC).", T),
    "terms_sha256": ("SHA-256 of the exact terms text the customer accepted.", "9f86d081884c7d65..."),
    "terms_version": ("Your version label of the terms text.", "2026-01"),
    "tier": ("Plan tier for the segments report (e.g. basic, pro).", "basic"),
    "timings": ("Seconds spent per phase of the run.", {"total_s": 0.42}),
    "title": ("Short summary of the problem type.", "Not Found"),
    "to": ("Recipient e-mail address.", "ada@example.com"),
    "token": ("The gateway's token for the card (e.g. Stripe pm_...); never a card number.", "pm_card_visa"),
    "total_due": ("Subscriptions due when the run started (the progress total).", 1),
    "trial_days": ("Free days before the first charge.", 14),
    "trial_end": ("When the trial ends and the first charge is due (UTC).", None),
    "type": ("The event type (subscription.created, invoice.paid ...).", "invoice.paid"),
    "Problem.type": ("A URI naming the problem type (RFC 9457).", "about:blank"),
    "WebhookAck.type": ("The Stripe event type.", "invoice.payment_succeeded"),
    "unknown": ("Charges whose outcome stayed unknown (reconciled first next run).", 0),
    "url": ("The signed, expiring cancel link (a capability: whoever has it can cancel).",
            "https://billing.example.com/cancel/eyJ..."),
    "user_agent": ("The customer's browser user agent when consenting.", "Mozilla/5.0"),
    "would_charge": ("Dry run: what the run would do per due subscription.", []),
    "terms_text": ("The exact terms text the customer accepted (its SHA-256 is kept).",
                   "You authorise us to charge 17.00 USD every month until you cancel."),
    "gateway_setup_id": ("The gateway's SetupIntent id that collected the card (Stripe seti_...).", None),
    "location": ("Where the field is: body, query, path or header.", "body"),
    "has_more": ("True when more objects follow this page.", True),
    "next_cursor": ("Pass as `after` to get the next page; null on the last page.", SUB),
    "action": ("What the run would do: charge, retry, end_at_period_end, cancel_involuntary, skip ...",
               "charge"),
    "run_id": ("Id of the run, on every log line it wrote.", "run_01JH8Z7Q2W3E4R5T6Y7V8K9M0P"),
    "declines_by_code": ("Declines in this run per gateway decline code.", {"insufficient_funds": 1}),
}

PROBLEM_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {"type": "about:blank", "title": "Bad Request", "status": 400, "code": "bad_request",
          "detail": "the request could not be read"},
    401: {"type": "about:blank", "title": "Unauthorized", "status": 401, "code": "unauthorized",
          "detail": "missing admin token: send 'Authorization: Bearer <token>'"},
    402: {"type": "urn:billing:problem:payment_declined", "title": "Payment declined", "status": 402,
          "code": "payment_declined", "field": "payment_method",
          "detail": "the card was declined (insufficient_funds): Your card has insufficient funds; "
                    f"subscription {SUB} was not started and nothing was charged",
          "subscription": {"id": SUB, "status": "incomplete", "customer_id": CUS, "plan_code": "basic-monthly",
                           "amount_minor": 1700, "currency": "USD", "amount": "17.00"}},
    403: {"type": "about:blank", "title": "Forbidden", "status": 403, "code": "forbidden",
          "detail": "the token 'finance' is read-only: it may read reports and the dashboard only"},
    404: {"type": "about:blank", "title": "Not Found", "status": 404, "code": "not_found",
          "detail": "no subscription 'sub_123'", "field": "subscription"},
    409: {"type": "about:blank", "title": "Conflict", "status": 409, "code": "conflict",
          "detail": "the subscription is already canceled"},
    413: {"type": "about:blank", "title": "Content Too Large", "status": 413, "code": "too_large",
          "detail": f"the request body is larger than {MAX_BODY_BYTES} bytes", "field": "body"},
    422: {"type": "about:blank", "title": "Unprocessable Content", "status": 422, "code": "invalid",
          "detail": "amount_minor: must be greater than 0", "field": "amount_minor",
          "errors": [{"field": "amount_minor", "message": "must be greater than 0"}]},
    429: {"type": "about:blank", "title": "Too Many Requests", "status": 429, "code": "too_many_failures",
          "detail": "too many failed admin logins from this address: retry in 42 seconds"},
    502: {"type": "about:blank", "title": "Bad Gateway", "status": 502, "code": "gateway_error",
          "detail": "the payment gateway refused the request (check BILLING_STRIPE_API_KEY)"},
    503: {"type": "about:blank", "title": "Service Unavailable", "status": 503, "code": "unavailable",
          "detail": "the database is unreachable"},
}

WEBHOOK_IDEMPOTENCY = ("Idempotency-Key: not used here. Stripe retries an event with the same event id, and "
                       "each event id is applied once (a repeat answers duplicate=true).")


def _describe(name: str, schema: dict[str, Any]) -> None:
    for field, prop in schema.get("properties", {}).items():
        entry = FIELDS.get(f"{name}.{field}") or FIELDS.get(field)
        if entry is None:
            continue
        if not prop.get("description"):
            prop["description"] = entry[0]  # beside a $ref too: OpenAPI 3.1 allows it
        if "example" not in prop and "examples" not in prop and "$ref" not in prop:
            prop["example"] = entry[1]


def _problem_examples(spec: dict[str, Any]) -> None:
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            if "requestBody" in op:  # api/limits.py caps every body before the route sees it
                op.setdefault("responses", {}).setdefault("413", {
                    "description": f"The request body is larger than {MAX_BODY_BYTES} bytes (read no further).",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
            for code, response in op.get("responses", {}).items():
                if not str(code).startswith(("4", "5")):
                    continue
                example = PROBLEM_EXAMPLES.get(int(code))
                if example is None:
                    continue
                content = response.setdefault("content", {})
                content.setdefault("application/problem+json",
                                          {"schema": {"$ref": "#/components/schemas/Problem"}})
                for media in content.values():
                    if "example" not in media and "examples" not in media:
                        media["example"] = example
            if path == "/webhooks/stripe" and method == "post" and not any(p.get("name", "").lower() == "idempotency-key"
                                            for p in op.get("parameters", [])):
                op["description"] = (op.get("description", "") + "\n\n" + WEBHOOK_IDEMPOTENCY).strip()


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    """Fill in the descriptions, examples and Idempotency-Key notes (in place)."""
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        _describe(name, schema)
    _problem_examples(spec)
    return spec


def install(app: FastAPI) -> None:
    """Complete ``/openapi.json`` and serve Swagger UI and ReDoc from the package (no CDN)."""
    import fastapi_offline

    static = Path(fastapi_offline.__file__).parent / "static"

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(get_openapi(title=app.title, version=app.version,
                                                      description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs/static/{name}", include_in_schema=False)
    def docs_static(name: str) -> FileResponse:
        if name not in STATIC_FILES:
            raise HTTPException(404)
        return FileResponse(static / name, headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon.png",
                                   oauth2_redirect_url="/docs/oauth2-redirect")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url="/docs/static/redoc.standalone.js",
                              redoc_favicon_url="/docs/static/favicon.png", with_google_fonts=False)
