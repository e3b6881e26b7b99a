"""The customer's self-service page: a signed link in every e-mail, no login.

- ``GET  /account/{token}``                                 subscriptions (next charge, card),
                                                           invoices and receipts. Read only.
- ``POST /account/{token}/subscriptions/{id}/cancel``       the one-click cancel (same service
                                                           call as the cancel page)
- ``POST /account/{token}/subscriptions/{id}/undo``         take it back
- ``GET  /account/{token}/subscriptions/{id}/card``         what adding a card means (the
                                                           consent text) and the form
- ``POST /account/{token}/subscriptions/{id}/card``         Stripe: a Checkout Session in setup
                                                           mode, 303 to Stripe's page; the fake
                                                           gateway: the test token, at once.
                                                           A subscription in dunning is charged
                                                           at once on the new card (after commit).
- ``POST /account/{token}/subscriptions/{id}/pause``        pause now or at period end, optionally
                                                           until a date (``when``, ``until``): only
                                                           on a plan with ``customer_can_pause``
- ``POST /account/{token}/subscriptions/{id}/resume``       resume (or take back a scheduled pause)
- ``POST /account/{token}/subscriptions/{id}/guarantee``    the money-back guarantee refund (inside
                                                           the plan's window: guarantees.py)
- ``POST /account/{token}/subscriptions/{id}/reactivate``   subscribe again after it ended: the
                                                           consent shown is recorded, then charged
                                                           at once like an admin's reactivation
- ``POST /account/{token}/subscriptions/{id}/accept-price`` accept an announced price change (a
                                                           consent row with the text shown)
- ``GET  /account/{token}/receipts/{invoice}``              the hosted receipt
- ``GET  /account/{token}/receipts/{invoice}.pdf``          the same as a PDF

The token is bound to the customer (:func:`billing_engine.links.make_account_token`); a
subscription or invoice of another customer is "not found". Same security headers as
the cancel page; no JavaScript. Every endpoint owns its transaction and takes "now"
from the app clock.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, ParamSpec

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from api.deps import EngineDep, GatewayDep, NowDep, SettingsDep
from api.routers.cancel_pages import SECURITY_HEADERS, templates
from billing_engine import (
    abuse,
    cancellations,
    card_updates,
    guarantees,
    i18n,
    links,
    notifications,
    pauses,
    pricing,
    reactivations,
    receipts,
    self_service,
)
from billing_engine.db import transaction
from billing_engine.errors import BillingError, Conflict, NotFound, ValidationError
from billing_engine.gateway.protocol import GatewayError, PaymentGateway
from billing_engine.i18n import N_
from billing_engine.models import (
    LIVE_STATUSES,
    CancellationKind,
    CardUpdate,
    Customer,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.settings import Settings

router = APIRouter(include_in_schema=False)
P = ParamSpec("P")

STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"

DONE_MESSAGES = {
    "canceled": N_("Done. Your subscription is canceled. You will not be charged again."),
    "undone": N_("Welcome back. Your subscription continues."),
    "card_updated": N_("Your new card is saved."),
    "card_paid": N_("Your new card is saved and the outstanding payment went through. Thank you!"),
    "card_declined": N_("Your new card is saved, but the outstanding payment was declined. We will try again."),
    "card_pending": N_("Thank you. Your card is being saved; this page shows it within a minute."),
    "paused": N_("Your subscription is paused. Nothing is charged while it is paused."),
    "pause_scheduled": N_("Done. Your subscription pauses at the end of the period you paid for."),
    "resumed": N_("Your subscription continues. The next charge is shown below."),
    "refunded": N_("Your refund is on its way and your subscription has ended. It can take a few days to show on "
                   "your statement."),
    "reactivated": N_("Welcome back! Your subscription is active again and the first payment went through."),
    "price_accepted": N_("Thank you. You accepted the new price."),
}

NOT_FOUND = {
    "subscription": N_("We could not find this subscription on your account."),
    "receipt": N_("We could not find this receipt on your account."),
}

# "The payment <failed how>[ (the gateway's words)]. ...": one whole sentence per case for the translators
PAYMENT_FAILED = {
    ("requires_action", False): N_("The payment needs your bank's confirmation. Your subscription was not "
                                   "restarted and nothing was charged."),
    ("requires_action", True): N_("The payment needs your bank's confirmation (%(detail)s). Your subscription was "
                                  "not restarted and nothing was charged."),
    ("declined", False): N_("The payment was declined. Your subscription was not restarted and nothing was "
                            "charged."),
    ("declined", True): N_("The payment was declined (%(detail)s). Your subscription was not restarted and nothing "
                           "was charged."),
}

# A service's refusal in the customer's words (its own message speaks to the admin API and
# the CLI): by its English message, the static ones a click on these pages can meet.
CUSTOMER_WORDS = {
    "this plan cannot be paused from the account page": N_("This subscription cannot be paused from this page."),
    "the subscription is already paused (or its pause is scheduled)": N_("Your subscription is already paused, or "
                                                                          "its pause is already scheduled."),
    "the subscription is canceled at period end; undo the cancellation first": N_(
        "Your subscription is canceled at the end of the period. Undo the cancellation first, then pause it."),
    "a charge of this subscription is in flight; try again after the run-cycle": N_(
        "A payment for this subscription is being processed. Please try again in a few minutes."),
    "nothing was paid on this subscription yet": N_("Nothing was paid on this subscription yet, so there is nothing "
                                                    "to refund."),
    "everything paid on this subscription was already refunded": N_("Everything you paid for this subscription was "
                                                                     "already refunded."),
    "this subscription has ended; there is no card to update": N_("This subscription has ended; there is no card to "
                                                                  "update."),
    "there is no card on file to charge": N_("There is no card on file to charge. Please add a card first."),
    "there is no card on file for this subscription": N_("There is no card on file for this subscription. Please add "
                                                         "a card first."),
    "there is no price change waiting for your answer": N_("There is no price change waiting for your answer."),
}
# the pause form's "resume on" day is not after the day the pause starts (the date: the customer's form)
PAUSE_ENDS_TOO_SOON = N_("Choose a day after %(date)s, the day the pause starts.")
# the card the customer entered was refused or could not be set up (the gateway's words stay in the log)
CARD_REFUSED = N_("This card could not be saved. Nothing was charged; please try another card.")
# any other refusal without a translation, in a language other than English
NOT_NOW = N_("This could not be done right now. Please reload the page to see your subscription as it is now, "
             "and try again.")

TEST_TOKENS = (
    ("pm_card_visa", "Visa, succeeds"),
    ("pm_card_mastercard", "Mastercard, succeeds"),
    ("pm_card_chargeDeclinedInsufficientFunds", "Declines: insufficient funds"),
)


def _brand(settings: Settings, tr: i18n.Translator) -> dict[str, Any]:
    """The seller and the page's language: the account pages share the cancel pages' base
    template (``_`` translates, ``lang`` / ``dir`` for <html>)."""
    from api.routers.cancel_pages import page_brand

    return page_brand(settings, tr)


def _translator(session: Session, customer_id: str, settings: Settings) -> i18n.Translator:
    """The customer's language (``customers.locale``, else the default locale), as in their
    e-mails and on the cancel pages."""
    return notifications.translator_for(session.get(Customer, customer_id), settings)


def _page(request: Request, name: str, context: dict[str, Any], status_code: int = 200,
          headers: dict[str, str] | None = None) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code,
                                      headers=headers or SECURITY_HEADERS)


def _bad_link(request: Request, settings: Settings, exc: links.InvalidCancelLink | None) -> HTMLResponse:
    expired = isinstance(exc, links.ExpiredCancelLink)
    # no customer behind a bad link: the default locale (as the cancel pages)
    ctx = {**_brand(settings, i18n.translator(settings.default_locale)), "expired": expired}
    return _page(request, "account_invalid.html", ctx, status_code=400 if expired else 404)


class _Answer(Exception):  # noqa: N818 -- not an error: the page that ends the request early
    """Ends a handler with this page: a bad or expired link, a subscription not on this account
    (raised by :func:`_customer` / :func:`_owned`, turned into the response by :func:`_answers`)."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


def _answers(handler: Callable[P, Response]) -> Callable[P, Response]:
    @functools.wraps(handler)  # FastAPI reads the handler's signature through __wrapped__
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            return handler(*args, **kwargs)
        except _Answer as answer:
            return answer.response

    return wrapper


def _customer(request: Request, settings: Settings, token: str, now: datetime) -> str:
    """The customer the link is for, or :class:`_Answer` with the bad-link page."""
    try:
        return links.verify_account_token(settings, token, now)
    except links.InvalidCancelLink as exc:
        raise _Answer(_bad_link(request, settings, exc)) from None


def _owned(request: Request, settings: Settings, token: str, session: Session, customer_id: str,
           subscription_id: str, *, lock: bool = False) -> Subscription:
    """The customer's own subscription, or :class:`_Answer` with "not found" (another
    customer's id is not found, like an unknown one)."""
    sub = self_service.owned_subscription(session, customer_id, subscription_id, lock=lock)
    if sub is None:
        raise _Answer(_not_found(request, settings, token, "subscription", _translator(session, customer_id, settings)))
    return sub


def _home(request: Request, token: str, done: str | None = None) -> RedirectResponse:
    url = request.url_for("account_page", token=token).path + (f"?done={done}" if done else "")
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _not_found(request: Request, settings: Settings, token: str, what: str, tr: i18n.Translator) -> HTMLResponse:
    ctx = {**_brand(settings, tr), "message": tr.gettext(NOT_FOUND[what]),
           "home": request.url_for("account_page", token=token).path}
    return _page(request, "account_error.html", ctx, status_code=404)


def _account(request: Request, token: str, session: Session, customer_id: str, settings: Settings, now: datetime,
             *, done: str | None = None, error: str | None = None, error_values: dict[str, object] | None = None,
             status_code: int = 200) -> HTMLResponse:
    """The account page; ``error`` is an English text (a msgid when it has a translation),
    shown in the customer's language with ``error_values`` filled in."""
    tr = _translator(session, customer_id, settings)
    view = self_service.overview(session, customer_id, now, settings, tr=tr)
    if view is None:
        return _bad_link(request, settings, None)

    def sub_url(name: str, sub_id: str) -> str:
        return request.url_for(name, token=token, subscription_id=sub_id).path

    if not _banner_is_true(done, view):
        done = None  # the query string is not trusted: a banner only when it is true
    ctx = {
        **_brand(settings, tr), "view": view,
        "done": tr.gettext(DONE_MESSAGES[done]) if done in DONE_MESSAGES else None,
        "error": tr.gettext(error, **(error_values or {})) if error else None,
        "cancel_action": {s.id: sub_url("account_cancel", s.id) for s in view.subscriptions},
        "undo_action": {s.id: sub_url("account_undo", s.id) for s in view.subscriptions},
        "card_page": {s.id: sub_url("account_card", s.id) for s in view.subscriptions},
        "pause_action": {s.id: sub_url("account_pause", s.id) for s in view.subscriptions},
        "resume_action": {s.id: sub_url("account_resume", s.id) for s in view.subscriptions},
        "guarantee_action": {s.id: sub_url("account_guarantee", s.id) for s in view.subscriptions},
        "reactivate_action": {s.id: sub_url("account_reactivate", s.id) for s in view.subscriptions},
        "accept_price_action": {s.id: sub_url("account_accept_price", s.id) for s in view.subscriptions},
        "receipt_url": {i.id: request.url_for("account_receipt", token=token, invoice_id=i.id).path
                        for i in view.invoices},
        "receipt_pdf": {i.id: request.url_for("account_receipt_pdf", token=token, invoice_id=i.id).path
                        for i in view.invoices},
    }
    return _page(request, "account.html", ctx, status_code=status_code)


def _banner_is_true(done: str | None, view: self_service.Overview) -> bool:
    states = {s.state for s in view.subscriptions}
    past_due = any(s.past_due for s in view.subscriptions)
    return {
        "canceled": bool(states - {"active"}), "undone": "active" in states, "card_updated": True,
        "card_paid": not past_due, "card_declined": past_due, "card_pending": True,
        "paused": any(s.paused for s in view.subscriptions),
        "pause_scheduled": any(s.pause_note and not s.paused for s in view.subscriptions),
        "resumed": any(s.state == "active" and not s.paused for s in view.subscriptions),
        "refunded": "ended" in states, "reactivated": "active" in states,
        "price_accepted": any(s.price_accepted for s in view.subscriptions),
    }.get(done or "", False)


# --------------------------------------------------------------------------- the page


@router.api_route("/account/{token}", methods=["GET", "HEAD"], name="account_page", response_class=HTMLResponse)
@_answers
def account_page(request: Request, token: str, engine: EngineDep, settings: SettingsDep, now: NowDep,
                 done: str | None = None) -> Response:
    """Read only: safe for link scanners and prefetchers."""
    customer_id = _customer(request, settings, token, now)
    with Session(engine) as session:
        return _account(request, token, session, customer_id, settings, now, done=done)


@router.post("/account/{token}/subscriptions/{subscription_id}/cancel", name="account_cancel",
             response_class=HTMLResponse)
@_answers
def account_cancel(request: Request, token: str, subscription_id: str, engine: EngineDep, settings: SettingsDep,
                   now: NowDep) -> Response:
    customer_id = _customer(request, settings, token, now)
    with transaction(engine) as session:
        sub = _owned(request, settings, token, session, customer_id, subscription_id, lock=True)
        if sub.status != SubscriptionStatus.CANCELED and not sub.cancel_at_period_end:
            with abuse.coalesced_emails(session, sub.id, now=now):  # cancel/undo loops: no e-mail storm
                cancellations.cancel(session, sub, kind=CancellationKind.VOLUNTARY, now=now, actor="customer")
    return _home(request, token, "canceled")


@router.post("/account/{token}/subscriptions/{subscription_id}/undo", name="account_undo",
             response_class=HTMLResponse)
@_answers
def account_undo(request: Request, token: str, subscription_id: str, engine: EngineDep, settings: SettingsDep,
                 now: NowDep) -> Response:
    customer_id = _customer(request, settings, token, now)
    with transaction(engine) as session:
        sub = _owned(request, settings, token, session, customer_id, subscription_id, lock=True)
        if sub.status != SubscriptionStatus.CANCELED and not sub.cancel_at_period_end:
            return _home(request, token, "undone")  # already active: a repeated click
        try:
            with session.begin_nested(), abuse.coalesced_emails(session, sub.id, now=now):
                cancellations.undo(session, sub, now=now, actor="customer")
        except BillingError as exc:
            session.refresh(sub)
            words, values = _customer_words(exc, _translator(session, customer_id, settings), {})
            return _account(request, token, session, customer_id, settings, now, error=words,
                            error_values=values, status_code=exc.http_status)
    return _home(request, token, "undone")


# --------------------------------------------------------------------------- lifecycle actions


def _client(request: Request) -> tuple[str, str]:
    """Where the customer's click came from (consent evidence)."""
    return (request.client.host if request.client else ""), (request.headers.get("user-agent") or "unknown")


def _refused(request: Request, token: str, engine: Any, customer_id: str, settings: Settings, now: datetime,
             exc: BillingError, **values: object) -> HTMLResponse:
    with Session(engine) as session:
        error, values = _customer_words(exc, _translator(session, customer_id, settings), values)
        return _account(request, token, session, customer_id, settings, now, error=error,
                        error_values=values, status_code=exc.http_status)


def _customer_words(exc: BillingError, tr: i18n.Translator,
                    values: dict[str, object]) -> tuple[str, dict[str, object]]:
    """The message (a msgid) and its values the account page shows for ``exc``: the customer's
    words for a service's refusal, else its own message when the catalogs have it (the texts
    of this module) or the page is in English, else :data:`NOT_NOW`."""
    starts = exc.data.get("starts")
    if exc.field == "resumes_at" and isinstance(starts, datetime):
        return PAUSE_ENDS_TOO_SOON, {"date": tr.date(starts)}
    if exc.field == "token" and "card number" not in exc.message:  # (a raw card number: its own words)
        return CARD_REFUSED, {}
    if exc.message in CUSTOMER_WORDS:
        return CUSTOMER_WORDS[exc.message], {}
    if tr.lang == i18n.DEFAULT or tr.translations.ugettext(exc.message) != exc.message:
        return exc.message, values
    return NOT_NOW, {}


def _parse_until(value: str | None) -> datetime | None:
    """The pause form's "until" date (YYYY-MM-DD): the pause ends at the start of that day (UTC)."""
    raw = (value or "").strip()
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise ValidationError(N_("enter a date like 2026-03-01"), field="until") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@router.post("/account/{token}/subscriptions/{subscription_id}/pause", name="account_pause",
             response_class=HTMLResponse)
@_answers
def account_pause(request: Request, token: str, subscription_id: str, engine: EngineDep, settings: SettingsDep,
                  now: NowDep, when: Annotated[str | None, Form()] = None,
                  until: Annotated[str | None, Form()] = None) -> Response:
    customer_id = _customer(request, settings, token, now)
    try:
        if (when or "now") not in ("now", "period_end"):
            raise ValidationError(N_("choose now or at the end of the period"), field="when")
        resumes_at = _parse_until(until)
        with transaction(engine) as session:
            sub = _owned(request, settings, token, session, customer_id, subscription_id, lock=True)
            if sub.status == SubscriptionStatus.PAUSED or sub.pause_at_period_end:  # a repeated click
                return _home(request, token, "paused" if sub.status == SubscriptionStatus.PAUSED else "pause_scheduled")
            pauses.pause(session, sub, now=now, at_period_end=when == "period_end", resumes_at=resumes_at,
                         actor=pauses.CUSTOMER)
            done = "paused" if sub.status == SubscriptionStatus.PAUSED else "pause_scheduled"
    except BillingError as exc:
        return _refused(request, token, engine, customer_id, settings, now, exc)
    return _home(request, token, done)


@router.post("/account/{token}/subscriptions/{subscription_id}/resume", name="account_resume",
             response_class=HTMLResponse)
@_answers
def account_resume(request: Request, token: str, subscription_id: str, engine: EngineDep, settings: SettingsDep,
                   now: NowDep) -> Response:
    customer_id = _customer(request, settings, token, now)
    try:
        with transaction(engine) as session:
            sub = _owned(request, settings, token, session, customer_id, subscription_id, lock=True)
            if pauses.can_resume(sub):  # a repeated click finds it resumed: harmless
                pauses.resume(session, sub, now=now, actor=pauses.CUSTOMER)
    except BillingError as exc:
        return _refused(request, token, engine, customer_id, settings, now, exc)
    return _home(request, token, "resumed")


@router.post("/account/{token}/subscriptions/{subscription_id}/guarantee", name="account_guarantee",
             response_class=HTMLResponse)
@_answers
def account_guarantee(request: Request, token: str, subscription_id: str, engine: EngineDep, settings: SettingsDep,
                      gateway: GatewayDep, now: NowDep) -> Response:
    customer_id = _customer(request, settings, token, now)
    with Session(engine) as session:
        _owned(request, settings, token, session, customer_id, subscription_id)
    try:
        guarantees.refund(engine, gateway, subscription_id=subscription_id, now=now, actor=pauses.CUSTOMER)
    except BillingError as exc:
        return _refused(request, token, engine, customer_id, settings, now, exc)
    return _home(request, token, "refunded")


@router.post("/account/{token}/subscriptions/{subscription_id}/reactivate", name="account_reactivate",
             response_class=HTMLResponse)
@_answers
def account_reactivate(request: Request, token: str, subscription_id: str, engine: EngineDep, settings: SettingsDep,
                       gateway: GatewayDep, now: NowDep) -> Response:
    customer_id = _customer(request, settings, token, now)
    with Session(engine) as session:
        old = _owned(request, settings, token, session, customer_id, subscription_id)
        again = session.exec(select(Subscription).where(  # a repeated click: already back
            Subscription.reactivated_from == old.id,
            col(Subscription.status).in_(list(LIVE_STATUSES)))).first()
        if again is not None:
            return _home(request, token, "reactivated")
        tr = _translator(session, customer_id, settings)  # the consent is recorded as shown, in this language
        view = self_service.subscription_view(session, old, now, settings=settings, offer_reactivation=True, tr=tr)
    if not view.can_reactivate:
        return _refused(request, token, engine, customer_id, settings, now,
                        Conflict(N_("this subscription cannot be restarted from here"), field="subscription"))
    ip, user_agent = _client(request)
    try:
        res = reactivations.by_customer(engine, gateway, customer_id=customer_id, subscription_id=subscription_id,
                                        card_label=view.reactivate_card, ip_address=ip, user_agent=user_agent,
                                        settings=settings, now=now, tr=tr)
    except BillingError as exc:
        return _refused(request, token, engine, customer_id, settings, now, exc)
    fc = res.first_charge
    if res.failed:
        how = "requires_action" if fc.status == "requires_action" else "declined"
        return _refused(request, token, engine, customer_id, settings, now, Conflict(
            PAYMENT_FAILED[how, bool(fc.message)], field="payment_method"), detail=fc.message or "")
    if fc.status != "succeeded":  # no answer from the gateway yet: the run-cycle settles it
        return _refused(request, token, engine, customer_id, settings, now, Conflict(
            N_("We could not confirm the payment yet. Your subscription starts as soon as it is confirmed; "
               "please do not click again."), field="payment_method"))
    return _home(request, token, "reactivated")


@router.post("/account/{token}/subscriptions/{subscription_id}/accept-price", name="account_accept_price",
             response_class=HTMLResponse)
@_answers
def account_accept_price(request: Request, token: str, subscription_id: str, engine: EngineDep,
                         settings: SettingsDep, now: NowDep) -> Response:
    customer_id = _customer(request, settings, token, now)
    ip, user_agent = _client(request)
    try:
        with transaction(engine) as session:
            sub = _owned(request, settings, token, session, customer_id, subscription_id, lock=True)
            pricing.accept(session, sub, ip_address=ip, user_agent=user_agent, now=now, actor=pauses.CUSTOMER,
                           tr=_translator(session, customer_id, settings))  # the text shown, in its language
    except BillingError as exc:
        return _refused(request, token, engine, customer_id, settings, now, exc)
    return _home(request, token, "price_accepted")


# --------------------------------------------------------------------------- card update


def _card_headers(gateway: PaymentGateway) -> dict[str, str]:
    if gateway.name != "stripe":
        return SECURITY_HEADERS
    csp = SECURITY_HEADERS["Content-Security-Policy"].replace(
        "form-action 'self'", f"form-action 'self' {STRIPE_CHECKOUT_ORIGIN}")  # the POST redirects to Stripe
    return {**SECURITY_HEADERS, "Content-Security-Policy": csp}


def _card_page(request: Request, token: str, session: Session, customer_id: str, subscription_id: str,
               settings: Settings, gateway: PaymentGateway, now: datetime, *, error: str | None = None,
               error_values: dict[str, object] | None = None, status_code: int = 200) -> HTMLResponse:
    """The card page; ``error`` as in :func:`_account`."""
    sub = _owned(request, settings, token, session, customer_id, subscription_id)
    tr = _translator(session, customer_id, settings)
    view = self_service.subscription_view(session, sub, now, tr=tr)
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    ctx = {
        **_brand(settings, tr), "sub": view, "error": tr.gettext(error, **(error_values or {})) if error else None,
        "stripe": gateway.name == "stripe",
        "consent_text": card_updates.consent_text(settings, plan, tr), "test_tokens": TEST_TOKENS,
        "action": request.url_for("account_card_submit", token=token, subscription_id=sub.id).path,
        "home": request.url_for("account_page", token=token).path,
    }
    return _page(request, "account_card.html", ctx, status_code=status_code, headers=_card_headers(gateway))


@router.get("/account/{token}/subscriptions/{subscription_id}/card", name="account_card",
            response_class=HTMLResponse)
@_answers
def account_card(request: Request, token: str, subscription_id: str, engine: EngineDep, settings: SettingsDep,
                 gateway: GatewayDep, now: NowDep) -> Response:
    customer_id = _customer(request, settings, token, now)
    with Session(engine) as session:
        if not (sub := self_service.owned_subscription(session, customer_id, subscription_id)) \
                or sub.status == SubscriptionStatus.CANCELED:
            return _not_found(request, settings, token, "subscription", _translator(session, customer_id, settings))
        return _card_page(request, token, session, customer_id, subscription_id, settings, gateway, now)


@router.post("/account/{token}/subscriptions/{subscription_id}/card", name="account_card_submit",
             response_class=HTMLResponse)
@_answers
def account_card_submit(
    request: Request, token: str, subscription_id: str, engine: EngineDep, settings: SettingsDep,
    gateway: GatewayDep, now: NowDep, test_token: Annotated[str | None, Form()] = None,
) -> Response:
    customer_id = _customer(request, settings, token, now)
    ip = request.client.host if request.client else ""
    user_agent = request.headers.get("user-agent") or "unknown"
    error: BillingError | None = None
    done: card_updates.Completed | None = None
    with transaction(engine) as session:
        try:
            with session.begin_nested():
                update = card_updates.start(session, customer_id=customer_id, subscription_id=subscription_id,
                                            gateway=gateway.name, ip_address=ip, user_agent=user_agent,
                                            settings=settings, now=now,  # the consent text shown, in its language
                                            tr=_translator(session, customer_id, settings))
                if gateway.name != "stripe":
                    done = card_updates.complete_with_token(session, gateway, update, token=test_token or "",
                                                            now=now)
                update_id = update.id
        except NotFound:
            return _not_found(request, settings, token, "subscription", _translator(session, customer_id, settings))
        except BillingError as exc:
            error = exc
        if error is not None:
            words, values = _customer_words(error, _translator(session, customer_id, settings), {})
            return _card_page(request, token, session, customer_id, subscription_id, settings, gateway, now,
                              error=words, error_values=values, status_code=error.http_status)
    if gateway.name == "stripe":
        return _to_stripe(request, token, engine, gateway, update_id, customer_id, settings, now)
    assert done is not None
    if not done.retry_now:
        return _home(request, token, "card_updated")
    summary = card_updates.retry_now(engine, gateway, done.subscription_id, now=now, settings=settings)
    return _home(request, token, "card_paid" if summary.succeeded else "card_declined")


def _to_stripe(request: Request, token: str, engine: Any, gateway: PaymentGateway, update_id: str,
               customer_id: str, settings: Settings, now: datetime) -> Response:
    """Committed first (the consent is kept whatever Stripe answers), then the Checkout Session."""
    create = getattr(gateway, "create_setup_checkout", None)
    assert create is not None
    home = settings.public_base_url.rstrip("/") + request.url_for("account_page", token=token).path
    with Session(engine) as session:
        update = session.get(CardUpdate, update_id)
        customer = session.get(Customer, customer_id)
        assert update is not None and customer is not None
        currency, gateway_customer_id = update.currency, customer.gateway_customer_id
    try:
        session_id, url = create(
            currency=currency, success_url=f"{home}?done=card_pending", cancel_url=home,
            gateway_customer_id=gateway_customer_id, idempotency_key=f"card_update:{update_id}",
            metadata={"card_update_id": update_id, "customer_id": customer_id,
                      "subscription_id": update.subscription_id},
        )
    except GatewayError as exc:
        with Session(engine) as session:
            return _card_page(request, token, session, customer_id, update.subscription_id, settings, gateway,
                              now, error=N_("The card page could not be opened, please try again (%(detail)s)."),
                              error_values={"detail": str(exc)}, status_code=503)
    with transaction(engine) as session:
        row = session.get(CardUpdate, update_id)
        assert row is not None
        row.gateway_session_id = session_id
        session.add(row)
    return RedirectResponse(url, status_code=303, headers=_card_headers(gateway))


# --------------------------------------------------------------------------- receipts


@router.get("/account/{token}/receipts/{invoice_id}.pdf", name="account_receipt_pdf")
@_answers
def account_receipt_pdf(request: Request, token: str, invoice_id: str, engine: EngineDep, settings: SettingsDep,
                        now: NowDep) -> Response:
    customer_id = _customer(request, settings, token, now)
    with Session(engine) as session:
        tr = _translator(session, customer_id, settings)  # the PDF in the customer's language, as the page
        try:
            receipt = receipts.for_invoice(session, invoice_id, customer_id=customer_id, settings=settings, tr=tr)
        except NotFound:
            return _not_found(request, settings, token, "receipt", tr)
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{receipts.pdf_filename(receipt)}"'}
    return Response(receipts.render_pdf(receipt, tr), media_type="application/pdf", headers=headers)


@router.get("/account/{token}/receipts/{invoice_id}", name="account_receipt", response_class=HTMLResponse)
@_answers
def account_receipt(request: Request, token: str, invoice_id: str, engine: EngineDep, settings: SettingsDep,
                    now: NowDep) -> Response:
    customer_id = _customer(request, settings, token, now)
    with Session(engine) as session:
        tr = _translator(session, customer_id, settings)
        try:
            receipt = receipts.for_invoice(session, invoice_id, customer_id=customer_id, settings=settings, tr=tr)
        except NotFound:
            return _not_found(request, settings, token, "receipt", tr)
    ctx = {**_brand(settings, tr), "r": receipt,
           "pdf_url": request.url_for("account_receipt_pdf", token=token, invoice_id=invoice_id).path,
           "home": request.url_for("account_page", token=token).path}
    return _page(request, "account_receipt.html", ctx)
