"""SQL building blocks shared by the reports (SQLAlchemy Core; SQLite and PostgreSQL).

- :func:`bucket` maps a timestamp to its period number with one ``CASE`` over the period
  boundaries computed in Python (no ``date_trunc``/``strftime``, so both dialects agree);
  ``-1`` means "before the range".
- :func:`subscriber_events` is the event stream every subscriber metric (churn counts,
  active subscribers, MRR and its movements) is summed from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql.selectable import CTE, Subquery

from billing_engine.models import Invoice, Plan, Refund, ReportOffPrice, Subscription, UTCDateTime
from billing_engine.reports.params import ReportQuery

invoices: Table = Invoice.__table__  # type: ignore[attr-defined]
subscriptions: Table = Subscription.__table__  # type: ignore[attr-defined]
plans: Table = Plan.__table__  # type: ignore[attr-defined]
refunds: Table = Refund.__table__  # type: ignore[attr-defined]
off_price_rollup: Table = ReportOffPrice.__table__  # type: ignore[attr-defined]

INVOLUNTARY_GROUPS = ("payment_failed", "hard_decline", "dispute", "card_expired", "other")


def ts(value: datetime) -> ColumnElement[Any]:
    """A timestamp parameter stored the way the column stores it (naive UTC on SQLite)."""
    return literal(value, UTCDateTime())


def bucket(column: Any, periods: list[tuple[datetime, datetime]]) -> ColumnElement[int]:
    """Period number of ``column``: -1 before the first period, ``len(periods)`` at/after the end."""
    whens: list[tuple[Any, Any]] = [(column < ts(periods[0][0]), literal(-1))]
    whens += [(column < ts(end), literal(i)) for i, (_, end) in enumerate(periods)]
    return case(*whens, else_=literal(len(periods)))


def reason_group(reason: Any) -> ColumnElement[str]:
    """Involuntary reason family: payment_failed | hard_decline | dispute | card_expired | other."""
    return case(
        (reason == "payment_failed", "payment_failed"),
        (func.substr(reason, 1, 13) == "hard_decline:", "hard_decline"),
        (reason == "dispute", "dispute"),
        (reason == "card_expired", "card_expired"),
        else_="other",
    )


def subscription_summary(q: ReportQuery, only: Any = None) -> Subquery:
    """One row per subscription with a paid invoice before the range end: first and last
    payment, and the lowest / highest billed amount and plan. One GROUP BY over invoices,
    no sort, no join. ``only``: a selectable of subscription ids to restrict it to."""
    inv = invoices
    stmt = select(
        inv.c.subscription_id,
        func.min(inv.c.paid_at).label("first_paid_at"),
        func.max(inv.c.paid_at).label("last_paid_at"),
        func.min(inv.c.amount_minor).label("amount_lo"),
        func.max(inv.c.amount_minor).label("amount_hi"),
        func.min(inv.c.plan_id).label("plan_lo"),
        func.max(inv.c.plan_id).label("plan_hi"),
        func.min(inv.c.currency).label("currency"),
    ).where(inv.c.status == "paid", inv.c.paid_at < ts(q.end))
    if only is not None:
        stmt = stmt.where(inv.c.subscription_id.in_(only))
    return stmt.group_by(inv.c.subscription_id).subquery("sub_summary")


def off_price_subscriptions(only: Any = None) -> Any:
    """Subscriptions with a paid invoice NOT billed at their own plan's price (another plan,
    amount or currency): a price change. The engine never bills one today (a plan's price
    cannot change while it has subscribers), but the reports stay exact if it happens: these
    go through the per-invoice path. A filtered scan of the invoices, no aggregation."""
    inv, sub = invoices, subscriptions
    stmt = (
        select(inv.c.subscription_id)
        .select_from(inv.join(sub, sub.c.id == inv.c.subscription_id).join(plans, plans.c.id == sub.c.plan_id))
        .where(inv.c.status == "paid", or_(inv.c.plan_id != sub.c.plan_id, inv.c.amount_minor != plans.c.amount_minor,
                                            inv.c.currency != plans.c.currency))
        .distinct()
    )
    return stmt if only is None else stmt.where(inv.c.subscription_id.in_(only))


def paid_sequence(q: ReportQuery, facts: Any) -> CTE:
    """The paid invoices of the subscriptions in ``facts`` (a selectable with subscription_id,
    customer_id, plan_id, ended_at, cancellation_kind, cancellation_reason), in period order,
    reduced to the rows where something happens.

    Counted: invoices paid before the range end and not after the subscription ended (money
    that arrives after the end is revenue, not a subscriber). A row is kept when it is the
    activation (``prev_paid_at IS NULL``), the last one (``next_paid_at IS NULL``: its MRR is
    lost at the end) or bills a different (plan, amount) than the previous one.
    """
    inv = invoices
    order = (inv.c.period_start,)
    part = inv.c.subscription_id
    # a paid plan change (a proration invoice) moves MRR to the new plan's price when it is paid
    new_price = plans.alias("new_price")
    billed = case((inv.c.kind == "proration", new_price.c.amount_minor), else_=inv.c.amount_minor)
    window = (
        select(
            inv.c.subscription_id,
            inv.c.paid_at,
            inv.c.currency,
            billed.label("amount_minor"),
            inv.c.plan_id.label("inv_plan_id"),
            func.lag(billed).over(partition_by=part, order_by=order).label("prev_amount"),
            func.lag(inv.c.plan_id).over(partition_by=part, order_by=order).label("prev_plan_id"),
            func.lag(inv.c.paid_at).over(partition_by=part, order_by=order).label("prev_paid_at"),
            func.lead(inv.c.paid_at).over(partition_by=part, order_by=order).label("next_paid_at"),
        )
        .select_from(inv.join(facts, facts.c.subscription_id == inv.c.subscription_id)
                     .join(new_price, new_price.c.id == inv.c.plan_id))
        .where(
            # the IN lets the planner fetch just these subscriptions' invoices by index
            inv.c.subscription_id.in_(select(facts.c.subscription_id)),
            inv.c.status == "paid",
            inv.c.paid_at < ts(q.end),
            or_(facts.c.ended_at.is_(None), inv.c.paid_at <= facts.c.ended_at),
        )
    )
    w = window.subquery("paid_window")
    stmt = (
        select(
            w.c.subscription_id, facts.c.customer_id, facts.c.plan_id, w.c.currency, w.c.paid_at, facts.c.ended_at,
            facts.c.first_paid_at,
            facts.c.cancellation_kind, facts.c.cancellation_reason, w.c.prev_paid_at, w.c.next_paid_at,
            w.c.inv_plan_id, w.c.amount_minor, w.c.prev_plan_id, w.c.prev_amount,
        )
        .select_from(w.join(facts, facts.c.subscription_id == w.c.subscription_id))
        .where(or_(
            w.c.prev_paid_at.is_(None),
            w.c.next_paid_at.is_(None),
            w.c.amount_minor != w.c.prev_amount,
            w.c.inv_plan_id != w.c.prev_plan_id,
        ))
    )
    return stmt.cte("paid_seq")


def subscriber_events(q: ReportQuery, plan_mrr: dict[str, int], only: Any = None) -> Subquery:
    """One row per subscriber event before the range end (``only``: a selectable of
    subscription ids, closed under customer -- every subscription of each customer it names --
    to compute just theirs: the rollup's incremental fold).

    Columns: subscription_id, currency, plan_id (the subscription's), at, kind (new | reactivation | change |
    churn | ended_unpaid), cancellation_kind and reason_group (churn rows), and the MRR: either
    ``mrr_minor`` directly, or the billed price inv_plan_id + amount_minor (and prev_plan_id +
    prev_amount for a change) for the caller to normalise.

    Two paths, same definitions. A *regular* subscription -- every paid invoice billed at its
    plan's price (``plan_mrr``: plan id -> normalised price), so its MRR never changed and is
    the stored ``subscriptions.mrr_minor`` -- has exactly two possible events, read off the
    subscription row: its activation (``activated_at``, the first payment) if that came no later
    than its end, and its churn (``ended_at``). No invoice is aggregated for them. Only the
    others (:func:`off_price_subscriptions`, or a stored MRR that is not the plan's) go
    through :func:`subscription_summary` and the per-invoice window of :func:`paid_sequence`.
    """
    sub = subscriptions
    off_price = select(off_price_rollup.c.subscription_id).cte("off_price")  # rollups.refresh keeps it
    expected_mrr = case(*[(sub.c.plan_id == pid, literal(m, BigInteger)) for pid, m in sorted(plan_mrr.items())],
                        else_=literal(-1, BigInteger)) if plan_mrr else literal(-1, BigInteger)
    on_price = ~sub.c.id.in_(select(off_price.c.subscription_id))
    regular_facts = (
        select(
            sub.c.id.label("subscription_id"), sub.c.activated_at.label("first_paid_at"), plans.c.currency,
            sub.c.customer_id, sub.c.plan_id, sub.c.ended_at, sub.c.cancellation_kind, sub.c.cancellation_reason,
            sub.c.mrr_minor, literal(1).label("regular"),
        )
        .select_from(sub.join(plans, plans.c.id == sub.c.plan_id))
        .where(sub.c.activated_at < ts(q.end), sub.c.mrr_minor == expected_mrr, on_price)
    )
    if only is not None:
        regular_facts = regular_facts.where(sub.c.id.in_(only))
    off_ids = select(off_price.c.subscription_id)
    odd_ids = select(sub.c.id).where(sub.c.activated_at.is_not(None),
                                     or_(sub.c.mrr_minor.is_(None), sub.c.mrr_minor != expected_mrr))
    if only is not None:
        off_ids = off_ids.where(off_price.c.subscription_id.in_(only))
        odd_ids = odd_ids.where(sub.c.id.in_(only))
    irregular_ids = union_all(off_ids, odd_ids).subquery("irregular_ids")
    summ = subscription_summary(q, only=select(irregular_ids.c.subscription_id))
    irregular_facts = (
        select(
            summ.c.subscription_id, summ.c.first_paid_at, summ.c.currency, sub.c.customer_id, sub.c.plan_id,
            sub.c.ended_at, sub.c.cancellation_kind, sub.c.cancellation_reason,
            cast(null(), BigInteger).label("mrr_minor"), literal(0).label("regular"),
        )
        .select_from(summ.join(sub, sub.c.id == summ.c.subscription_id))
    )
    facts = union_all(regular_facts, irregular_facts).cte("sub_facts")
    is_regular = facts.c.regular == 1
    counts = or_(facts.c.ended_at.is_(None), facts.c.first_paid_at <= facts.c.ended_at)
    irregular = select(facts).where(~is_regular).subquery("irregular")
    seq = paid_sequence(q, irregular)
    # a subscriber churned when it ended after a payment that counts (one on or before the end)
    first_churn = (
        select(facts.c.customer_id, func.min(facts.c.ended_at).label("first_churn_at"))
        .where(facts.c.ended_at.is_not(None), facts.c.first_paid_at <= facts.c.ended_at)
        .group_by(facts.c.customer_id)
        .cte("first_churn")
    )
    no_text = cast(null(), String)
    no_int = cast(null(), BigInteger)

    def activation_kind(at: Any) -> Any:
        return case((first_churn.c.first_churn_at < at, "reactivation"), else_="new").label("kind")

    regular_activations = (
        select(
            facts.c.subscription_id, facts.c.currency, facts.c.plan_id, facts.c.first_paid_at.label("at"),
            activation_kind(facts.c.first_paid_at),
            no_text.label("cancellation_kind"), no_text.label("reason_group"), facts.c.mrr_minor,
            no_text.label("inv_plan_id"), no_int.label("amount_minor"),
            no_text.label("prev_plan_id"), no_int.label("prev_amount"), facts.c.first_paid_at.label("activated_at"),
        )
        .select_from(facts.outerjoin(first_churn, first_churn.c.customer_id == facts.c.customer_id))
        .where(is_regular, counts)
    )
    regular_churns = select(
        facts.c.subscription_id, facts.c.currency, facts.c.plan_id, facts.c.ended_at.label("at"), literal("churn").label("kind"),
        facts.c.cancellation_kind, reason_group(facts.c.cancellation_reason).label("reason_group"), facts.c.mrr_minor,
        no_text.label("inv_plan_id"), no_int.label("amount_minor"),
        no_text.label("prev_plan_id"), no_int.label("prev_amount"), facts.c.first_paid_at.label("activated_at"),
    ).where(is_regular, facts.c.ended_at.is_not(None), facts.c.ended_at < ts(q.end),
            facts.c.first_paid_at <= facts.c.ended_at)

    churn_where = and_(seq.c.next_paid_at.is_(None), seq.c.ended_at.is_not(None))
    activations = (
        select(
            seq.c.subscription_id, seq.c.currency, seq.c.plan_id, seq.c.paid_at.label("at"),
            activation_kind(seq.c.paid_at),
            no_text.label("cancellation_kind"), no_text.label("reason_group"), no_int.label("mrr_minor"),
            seq.c.inv_plan_id, seq.c.amount_minor, no_text.label("prev_plan_id"), no_int.label("prev_amount"),
            seq.c.first_paid_at.label("activated_at"),
        )
        .select_from(seq.outerjoin(first_churn, first_churn.c.customer_id == seq.c.customer_id))
        .where(seq.c.prev_paid_at.is_(None))
    )
    changes = select(
        seq.c.subscription_id, seq.c.currency, seq.c.plan_id, seq.c.paid_at.label("at"), literal("change").label("kind"),
        no_text.label("cancellation_kind"), no_text.label("reason_group"), no_int.label("mrr_minor"),
        seq.c.inv_plan_id, seq.c.amount_minor, seq.c.prev_plan_id, seq.c.prev_amount,
        seq.c.first_paid_at.label("activated_at"),
    ).where(seq.c.prev_paid_at.is_not(None), or_(seq.c.amount_minor != seq.c.prev_amount,
                                                  seq.c.inv_plan_id != seq.c.prev_plan_id))
    churns = select(
        seq.c.subscription_id, seq.c.currency, seq.c.plan_id, seq.c.ended_at.label("at"), literal("churn").label("kind"),
        seq.c.cancellation_kind, reason_group(seq.c.cancellation_reason).label("reason_group"),
        no_int.label("mrr_minor"), seq.c.inv_plan_id, seq.c.amount_minor, no_text.label("prev_plan_id"),
        no_int.label("prev_amount"), seq.c.first_paid_at.label("activated_at"),
    ).where(churn_where, seq.c.ended_at < ts(q.end))
    # subscriptions that ended before any payment counted (canceled trials, failed first charges):
    # not churn, reported on their own
    ended_unpaid = (
        select(
            sub.c.id.label("subscription_id"), plans.c.currency, sub.c.plan_id, sub.c.ended_at.label("at"),
            literal("ended_unpaid").label("kind"),
            sub.c.cancellation_kind, no_text.label("reason_group"), no_int.label("mrr_minor"),
            no_text.label("inv_plan_id"), no_int.label("amount_minor"), no_text.label("prev_plan_id"),
            no_int.label("prev_amount"), sub.c.activated_at,
        )
        .select_from(sub.join(plans, plans.c.id == sub.c.plan_id)
                     .outerjoin(facts, facts.c.subscription_id == sub.c.id))
        .where(sub.c.ended_at >= ts(q.start), sub.c.ended_at < ts(q.end),
               or_(facts.c.subscription_id.is_(None), facts.c.first_paid_at > sub.c.ended_at))
    )
    if only is not None:
        ended_unpaid = ended_unpaid.where(sub.c.id.in_(only))
    events = union_all(regular_activations, regular_churns, activations, changes, churns, ended_unpaid)
    if not q.currency:
        return events.subquery("sub_events")
    # ``--currency`` filters the events; it never changes a definition: whether a customer is
    # new or returning (first_churn above) looks at every currency
    every = events.subquery("every_currency")
    return select(every).where(every.c.currency == q.currency).subquery("sub_events")


def subscriber_event_totals(q: ReportQuery, plan_mrr: dict[str, int]) -> Any:
    """Count :func:`subscriber_events` per (currency, plan, period, kind, cancellation kind,
    reason, MRR or billed price) -- a few hundred rows, whatever the number of subscriptions."""
    ev = subscriber_events(q, plan_mrr)
    periods = q.periods()
    # ab: the period the subscription was activated in (-1 before the range). A churn or price
    # change with ab < b is one of a subscriber active at the period start (revenue retention)
    existing = case((ev.c.kind.in_(("churn", "change")), bucket(ev.c.activated_at, periods)), else_=literal(-1))
    inner = select(
        ev.c.currency, ev.c.plan_id, bucket(ev.c.at, periods).label("b"), existing.label("ab"), ev.c.kind,
        ev.c.cancellation_kind, ev.c.reason_group, ev.c.mrr_minor, ev.c.inv_plan_id, ev.c.amount_minor,
        ev.c.prev_plan_id, ev.c.prev_amount,
    ).subquery("ev_b")
    keys = [c for c in inner.c]
    return select(*keys, func.count().label("n")).group_by(*keys)


def tune(conn: Any) -> None:
    """Per-transaction settings for big reporting queries (PostgreSQL): enough memory for the
    window sorts and hash aggregates not to spill to disk. SET LOCAL ends with the transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL jit = off")  # compiling costs more than it saves here


def plan_codes(conn: Any) -> dict[str, str]:
    """plan id -> code (plans are few: one small query)."""
    return {r.id: r.code for r in conn.execute(select(plans.c.id, plans.c.code))}
