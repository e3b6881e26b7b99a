"""Customer cancel pages: the signed link from every e-mail, one click, no login.

- ``GET  /cancel/{token}``          who, which plan, next charge, what cancelling means; ONE
                                    button. Never changes anything (mail scanners prefetch).
- ``POST /cancel/{token}``          cancels (voluntary, actor ``customer``; at period end
                                    unless the plan ends access at once), then shows the
                                    confirmation. Repeating it is harmless. Also the RFC 8058
                                    one-click target (``List-Unsubscribe=One-Click``): 200.
- ``POST /cancel/{token}/feedback`` the optional reason, asked after cancelling. The first
                                    answer stands (a later post changes nothing: 409 page).
- ``POST /cancel/{token}/undo``     reactivate before the period ends.
- ``POST /cancel/{token}/resend``   from an expired (but genuine) link: e-mail a fresh one
                                    to the address on file.

The signed token in the URL is the capability, so the forms carry no CSRF token: a
third party who could forge the POST would already hold the link. Repeated clicks stay
cheap: cancel/undo loops queue at most one e-mail of each kind while it is unsent
(:mod:`billing_engine.abuse`). Every endpoint owns
its transaction (committed before the response) and takes "now" from the app clock.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlmodel import Session

from api.deps import EngineDep, NowDep, SettingsDep
from billing_engine import abuse, cancellations, i18n, links, notifications, subscriptions, terms
from billing_engine.db import transaction
from billing_engine.errors import BillingError
from billing_engine.i18n import N_
from billing_engine.models import (
    ENDED_STATUSES,
    CancellationKind,
    Customer,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.settings import Settings

router = APIRouter(include_in_schema=False)

API_DIR = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(API_DIR / "templates"))
templates.env.filters["mailto"] = lambda email: Markup('<a href="mailto:{0}">{0}</a>').format(email)
CSS_PATH = API_DIR / "static" / "cancel.css"

REASON_LABELS: dict[str, str] = {
    "too_expensive": N_("It costs too much"),
    "missing_features": N_("It is missing something I need"),
    "switched_service": N_("I switched to another service"),
    "unused": N_("I don't use it enough"),
    "customer_service": N_("I was unhappy with customer service"),
    "too_complex": N_("It is too complicated"),
    "low_quality": N_("The quality was lower than I expected"),
    "other": N_("Another reason"),
}
assert tuple(REASON_LABELS) == cancellations.VOLUNTARY_REASONS

# Personal data behind a capability URL: never cached, never indexed, never leaked
# through Referer, never framed.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}

DONE_MESSAGES = {
    "canceled": N_("Done. Your subscription is canceled."),
    "undone": N_("Welcome back. Your subscription continues."),
    "feedback": N_("Thank you for telling us."),
}

FEEDBACK_ALREADY_RECORDED = N_("Your answer was already recorded. Nothing was changed.")

OneClick = Annotated[str | None, Form(alias="List-Unsubscribe")]


# --------------------------------------------------------------------------- helpers


def _mask(email: str, tr: i18n.Translator) -> str:
    local, _, domain = email.partition("@")
    if not domain:
        return tr.gettext("your e-mail address")
    return f"{local[:1]}***@{domain}"


def _translator(session: Session, sub: Subscription | None, settings: Settings) -> i18n.Translator:
    customer = session.get(Customer, sub.customer_id) if sub is not None else None
    return notifications.translator_for(customer, settings)


def _load(session: Session, sub_id: str, *, lock: bool = False) -> Subscription | None:
    pg = session.get_bind().dialect.name == "postgresql"
    return session.get(Subscription, sub_id, with_for_update=lock and pg)


def page_brand(settings: Settings, tr: i18n.Translator) -> dict[str, Any]:
    """The seller and the page's language: ``_`` translates (values escaped, the
    catalog's text trusted), ``lang`` / ``dir`` for <html>."""
    def gettext(message: str, **values: Any) -> Markup:
        return Markup(tr.gettext(message)) % values if values else Markup(tr.gettext(message))

    return {**notifications.brand(settings), "_": gettext, "lang": tr.tag, "dir": tr.dir}


def _view(session: Session, sub: Subscription, settings: Settings, now: datetime) -> dict[str, Any]:
    plan = session.get(Plan, sub.plan_id)
    customer = session.get(Customer, sub.customer_id)
    assert plan is not None and customer is not None
    tr = notifications.translator_for(customer, settings)
    nxt = subscriptions.next_charge(session, sub)  # coupons, price changes, pauses, a scheduled plan
    facts = terms.of(sub, plan, now, next_charge_at=nxt[0] if nxt else None,
                     next_amount_minor=nxt[1] if nxt else None)
    said = terms.sentences(facts, tr)  # the same sentences as the e-mails
    if sub.status in ENDED_STATUSES:  # ended (or a first charge declined: never started)
        state = "ended"
    elif sub.cancel_at_period_end:
        state = "scheduled"
    else:
        state = "active"
    voluntary = sub.cancellation_kind == CancellationKind.VOLUNTARY
    return {
        "state": state,
        **page_brand(settings, tr),
        "access": said,
        "tr": tr,
        "customer_name": customer.name or "",
        "masked_email": _mask(customer.email, tr),
        "plan_name": plan.name,
        "price": said["price"],
        "next_charge": said["next_charge"],
        "trialing": sub.status == SubscriptionStatus.TRIALING,
        "past_due": sub.status == SubscriptionStatus.PAST_DUE,
        "access_until": tr.date(sub.current_period_end),
        "ends_now": facts.cancel_ends_now,
        "ended_on": tr.date(sub.ended_at),
        "canceled_on": tr.date(sub.canceled_at),
        "voluntary": voluntary,
        "can_undo": cancellations.can_undo(sub, now),
        "feedback_open": voluntary and not sub.cancellation_reason,
        "given_reason": tr.gettext(REASON_LABELS[sub.cancellation_reason]) if sub.cancellation_reason in REASON_LABELS
        else (sub.cancellation_reason or ""),
        "reasons": [(code, tr.gettext(label)) for code, label in REASON_LABELS.items()],
    }


def _page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code, headers=SECURITY_HEADERS)


def _bad_link(request: Request, settings: Settings, token: str, exc: links.InvalidCancelLink | None) -> HTMLResponse:
    expired = isinstance(exc, links.ExpiredCancelLink)
    ctx = {
        **page_brand(settings, i18n.translator(settings.default_locale)),
        "expired": expired,
        "resend_action": request.url_for("cancel_resend", token=token).path if expired else None,
    }
    return _page(request, "cancel_invalid.html", ctx, status_code=400 if expired else 404)


def _subscription_page(
    request: Request, token: str, session: Session, sub: Subscription, settings: Settings, now: datetime,
    *, done: str | None = None, error: str | None = None, status_code: int = 200,
) -> HTMLResponse:
    ctx = _view(session, sub, settings, now)
    if (done == "undone") != (ctx["state"] == "active"):
        done = None  # a banner only when it is true (the query string is not trusted)
    tr: i18n.Translator = ctx["tr"]  # plain text: an error message is escaped like any value
    ctx.update(
        done=tr.gettext(DONE_MESSAGES[done]) if done in DONE_MESSAGES else None,
        error=tr.gettext(error) if error else None,
        cancel_action=request.url_for("cancel_submit", token=token).path,
        undo_action=request.url_for("cancel_undo", token=token).path,
        feedback_action=request.url_for("cancel_feedback", token=token).path,
    )
    return _page(request, "cancel.html", ctx, status_code=status_code)


def _back(request: Request, token: str, done: str) -> RedirectResponse:
    url = request.url_for("cancel_page", token=token).path + f"?done={done}"
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


# --------------------------------------------------------------------------- routes


@router.get("/assets/cancel.css", name="cancel_css")
def cancel_css() -> FileResponse:
    return FileResponse(CSS_PATH, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


@router.api_route("/cancel/{token}", methods=["GET", "HEAD"], name="cancel_page", response_class=HTMLResponse)
def cancel_page(
    request: Request, token: str, engine: EngineDep, settings: SettingsDep, now: NowDep, done: str | None = None
) -> Response:
    """Read only: safe for link scanners and prefetchers."""
    try:
        sub_id = links.verify_cancel_token(settings, token, now)
    except links.InvalidCancelLink as exc:
        return _bad_link(request, settings, token, exc)
    with Session(engine) as session:
        sub = _load(session, sub_id)
        if sub is None:
            return _bad_link(request, settings, token, None)
        return _subscription_page(request, token, session, sub, settings, now, done=done)


@router.post("/cancel/{token}", name="cancel_submit", response_class=HTMLResponse)
def cancel_submit(
    request: Request, token: str, engine: EngineDep, settings: SettingsDep, now: NowDep,
    one_click: OneClick = None,
) -> Response:
    is_one_click = (one_click or "").strip().lower() == "one-click"
    try:
        sub_id = links.verify_cancel_token(settings, token, now)
    except links.InvalidCancelLink as exc:
        if is_one_click:
            return PlainTextResponse(exc.message, status_code=exc.http_status, headers=SECURITY_HEADERS)
        return _bad_link(request, settings, token, exc)
    with transaction(engine) as session:
        sub = _load(session, sub_id, lock=True)
        if sub is None:
            if is_one_click:
                return PlainTextResponse("This cancel link is not valid.", status_code=404, headers=SECURITY_HEADERS)
            return _bad_link(request, settings, token, None)
        if sub.status not in ENDED_STATUSES and not sub.cancel_at_period_end:
            with abuse.coalesced_emails(session, sub.id, now=now):  # cancel/undo loops: no e-mail storm
                cancellations.cancel(session, sub, kind=CancellationKind.VOLUNTARY, now=now, actor="customer")
    if is_one_click:
        return PlainTextResponse("Your subscription is canceled. You will not be charged again.",
                                 headers=SECURITY_HEADERS)
    return _back(request, token, "canceled")


@router.post("/cancel/{token}/feedback", name="cancel_feedback", response_class=HTMLResponse)
def cancel_feedback(
    request: Request, token: str, engine: EngineDep, settings: SettingsDep, now: NowDep,
    reason: Annotated[str | None, Form()] = None, comment: Annotated[str | None, Form()] = None,
) -> Response:
    try:
        sub_id = links.verify_cancel_token(settings, token, now)
    except links.InvalidCancelLink as exc:
        return _bad_link(request, settings, token, exc)
    error: BillingError | None = None
    with transaction(engine) as session:
        sub = _load(session, sub_id, lock=True)
        if sub is None:
            return _bad_link(request, settings, token, None)
        if sub.cancellation_reason:  # the first answer stands: a replayed form cannot rewrite it
            return _subscription_page(request, token, session, sub, settings, now, status_code=409,
                                      error=FEEDBACK_ALREADY_RECORDED)
        if not reason:
            return _subscription_page(request, token, session, sub, settings, now,
                                      error=N_("Please choose a reason, or just close this page."), status_code=422)
        try:
            with session.begin_nested():
                cancellations.record_feedback(session, sub, reason=reason, comment=comment, now=now,
                                              actor="customer")
        except BillingError as exc:
            error = exc
        if error is not None:
            session.refresh(sub)
            return _subscription_page(request, token, session, sub, settings, now, error=error.message,
                                      status_code=error.http_status)
    return _back(request, token, "feedback")


@router.post("/cancel/{token}/undo", name="cancel_undo", response_class=HTMLResponse)
def cancel_undo(request: Request, token: str, engine: EngineDep, settings: SettingsDep, now: NowDep) -> Response:
    try:
        sub_id = links.verify_cancel_token(settings, token, now)
    except links.InvalidCancelLink as exc:
        return _bad_link(request, settings, token, exc)
    with transaction(engine) as session:
        sub = _load(session, sub_id, lock=True)
        if sub is None:
            return _bad_link(request, settings, token, None)
        if sub.status not in ENDED_STATUSES and not sub.cancel_at_period_end:
            return _back(request, token, "undone")  # already active: a repeated click
        try:
            with session.begin_nested(), abuse.coalesced_emails(session, sub.id, now=now):
                cancellations.undo(session, sub, now=now, actor="customer")  # queues the e-mail too
        except BillingError as exc:
            session.refresh(sub)
            return _subscription_page(request, token, session, sub, settings, now, error=exc.message,
                                      status_code=exc.http_status)
    return _back(request, token, "undone")


@router.post("/cancel/{token}/resend", name="cancel_resend", response_class=HTMLResponse)
def cancel_resend(request: Request, token: str, engine: EngineDep, settings: SettingsDep, now: NowDep) -> Response:
    """An expired link is still genuine: e-mail a fresh one to the address on file (only)."""
    try:
        sub_id = links.verify_cancel_token(settings, token, now)
    except links.ExpiredCancelLink as exc:
        sub_id = exc.subscription_id
    except links.InvalidCancelLink as exc:
        return _bad_link(request, settings, token, exc)
    with transaction(engine) as session:
        sub = _load(session, sub_id)
        if sub is None:
            return _bad_link(request, settings, token, None)
        customer = session.get(Customer, sub.customer_id)
        plan = session.get(Plan, sub.plan_id)
        notifications.enqueue(
            session, notifications.Kind.CANCEL_LINK, customer_id=sub.customer_id, subscription_id=sub.id,
            dedupe_key=f"cancel_link:{sub.id}:{now:%Y-%m-%dT%H}", at=now,  # at most one an hour
            payload={"plan_name": plan.name if plan else None},
        )
        tr = notifications.translator_for(customer, settings)
        ctx = {
            **page_brand(settings, tr),
            "masked_email": _mask(customer.email if customer else "", tr),
        }
    return _page(request, "cancel_resent.html", ctx)
