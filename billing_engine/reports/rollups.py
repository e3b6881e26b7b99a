"""Report rollups: small tables the reports read instead of scanning every invoice and
payment attempt, refreshed incrementally -- never written by the charge pipeline.

The source of change is the ``events`` table: append-only (a database trigger refuses
UPDATE / DELETE), one row per state change written in the same transaction as the change,
with a growing id and the subscription / invoice it concerns. :func:`refresh` folds in the
events after the rollup's watermark: every subscription and invoice they name is
recomputed from the raw tables (a refund, a dispute or a late answer that changes the past
writes an event like anything else, so past days are corrected too), and only the rows that
differ are written; the per-day sums are summed again for the days of those rows, the
per-month cells move by them (:mod:`fold`). Two rollups are extended instead of recomputed,
because the set of paid invoices only grows (``paid`` is final, ``paid_at`` never changes)
and an invoice that becomes paid is named by an event: the first payment of a customer and
the runs of paid months. Events of ``plan.*`` (a plan's price) rebuild the price rollup.

Ids are given at INSERT, rows become visible at COMMIT, so a transaction still open could
hold an id below one already seen. The watermark therefore only advances over events
recorded (wall clock) more than ``lag`` ago. The events newer than that are remembered, not
folded again and again: the state keeps the highest id folded (``folded_to``) and how many
events above the watermark were visible then (``folded_count``). Events are never deleted and
ids are unique, so while the count of the events in ``(watermark, folded_to]`` is the same, it
is the same set, and a refresh folds only the events above ``folded_to``; an event committed
late below it changes the count, and the whole window above the watermark is folded again
(recomputing a key is idempotent). The counts and the keys come from one copy of the window
(one snapshot). A transaction that writes events and stays open longer than ``lag``
(default 2 minutes; a batch settles in well under a second) is the one case this misses;
``rebuild`` (``billing report refresh --rebuild``) starts over.

Rollups:

- ``report_off_price``: subscriptions with a paid invoice NOT billed at their own plan's
  price, plan or currency (:func:`sql.off_price_subscriptions`) -- the only ones the MRR
  timelines read invoice by invoice;
- ``report_customer_first_paid``: each customer's first payment ever -- revenue's new
  customers without aggregating every invoice since the beginning;
- ``report_failed_invoices``: one row per invoice with a failed attempt
  (:func:`dunning_facts.failed_invoice_rows`) -- the recovery and funnel reports.

- the per-day / per-month rollups of :mod:`day_rollups` (migration 0013): subscriber events,
  paid and failed invoices per day, paying-month runs and cohort cells, folded here too; the
  reports read them for aligned ranges (docs/reports.md, "Per-day rollups").

Every report refreshes before it reads (cheap when nothing changed: a few index look-ups);
``billing run-cycle`` does not, so the hot path never waits for it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, String, Table, case, delete, func, insert, or_, select, union, union_all
from sqlalchemy.engine import Connection, Engine

from billing_engine.db import writers
from billing_engine.models import ReportCustomerFirstPaid, ReportOffPrice, ReportRollupState
from billing_engine.reports import day_rollups
from billing_engine.reports.dunning_facts import (
    CARD_CHANGED,
    CARD_UPDATED,
    events,
    failed_invoice_rows,
    failed_table,
)
from billing_engine.reports.fold import Scratch, Sync
from billing_engine.reports.sql import invoices, off_price_subscriptions, reason_group, subscriptions, tune


def first_paid_rows(only: Any = None) -> Any:
    """customer_id, first_paid_at: the smallest paid_at of each customer's paid invoices."""
    inv = invoices
    stmt = select(inv.c.customer_id, func.min(inv.c.paid_at).label("first_paid_at")).where(inv.c.status == "paid")
    if only is not None:
        stmt = stmt.where(inv.c.customer_id.in_(only))
    return stmt.group_by(inv.c.customer_id)

state_table: Table = ReportRollupState.__table__  # type: ignore[attr-defined]
off_price_table: Table = ReportOffPrice.__table__  # type: ignore[attr-defined]
first_paid_table: Table = ReportCustomerFirstPaid.__table__  # type: ignore[attr-defined]

ROLLUP_TABLES = ("report_off_price", "report_customer_first_paid", "report_failed_invoices", "report_sub_events",
                 "report_sub_event_days", "report_paid_days", "report_failed_days", "report_paying_runs",
                 "report_paying_months", "report_customer_cohorts", "report_active_runs", "report_cohort_cells")
NAME = "events"
LAG = timedelta(minutes=2)
LOCK_KEY = 0x7265706F7274  # pg_advisory_xact_lock: one refresh at a time


@dataclass(frozen=True)
class Refreshed:
    rebuilt: bool
    from_event_id: int
    to_event_id: int  # the new watermark
    folded_after: int = 0  # the events folded in by this refresh: ids in (folded_after, folded_to]
    folded_to: int = 0
    folded: int = 0  # how many events this refresh folded in (a rebuild: every event up to folded_to)
    provisional: int = 0  # of the events folded so far, those above the watermark (recorded less than
    # ``lag`` ago): counted in the rollups, and checked again by the next refresh (folded again
    # if one below them was committed late)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_KEY})")


def _rebuild(conn: Connection) -> None:
    conn.execute(delete(off_price_table))
    conn.execute(insert(off_price_table).from_select(["subscription_id"], off_price_subscriptions()))
    conn.execute(delete(first_paid_table))
    conn.execute(insert(first_paid_table).from_select(["customer_id", "first_paid_at"], first_paid_rows()))
    rows = failed_invoice_rows(conn)
    conn.execute(delete(failed_table))
    conn.execute(insert(failed_table).from_select([c.name for c in rows.selected_columns], rows))
    day_rollups.rebuild_sub_events(conn)
    day_rollups.rebuild_paid_days(conn)
    day_rollups.rebuild_failed_days(conn, failed_table)
    day_rollups.rebuild_paying(conn)
    day_rollups.rebuild_cohorts(conn)
    if conn.dialect.name == "postgresql":  # fresh statistics for the fold's and the reports' plans
        for t in ROLLUP_TABLES:
            conn.exec_driver_sql(f"ANALYZE {t}")


def _fold(s: Scratch, window: Table, lo: int) -> None:
    """Recompute the keys named by the events of ``window`` (a scratch copy of the events
    after the watermark) with an id above ``lo``: only the rows that differ are written, and
    the per-day / per-month sums move by them (:mod:`fold`)."""
    conn, w, inv, sub, f = s.conn, window, invoices, subscriptions, failed_table
    new = w.c.id > lo
    invs = s.keys("invs", select(w.c.invoice_id).where(new))
    named = s.keys("named_subs", union(select(w.c.subscription_id).where(new),
                                       select(inv.c.subscription_id).where(inv.c.id.in_(select(invs.c.id)))))
    custs = s.keys("custs", union(select(w.c.customer_id).where(new),
                                  select(sub.c.customer_id).where(sub.c.id.in_(select(named.c.id))),
                                  select(inv.c.customer_id).where(inv.c.id.in_(select(invs.c.id)))))
    # every subscription of each customer named (a reactivation depends on the others)
    subs = s.keys("subs", select(sub.c.id).where(sub.c.customer_id.in_(select(custs.c.id))))
    # a customer's first payment: the earliest of the one known and the invoices named that are
    # paid (the paid invoices only grow, each named by an event when it becomes paid)
    fp = first_paid_table
    payers = s.keys("paid_custs", select(inv.c.customer_id).where(inv.c.id.in_(select(invs.c.id)),
                                                                  inv.c.status == "paid"))
    paid_custs = select(payers.c.id)
    both = union_all(select(inv.c.customer_id, inv.c.paid_at.label("t"))
                     .where(inv.c.id.in_(select(invs.c.id)), inv.c.status == "paid", inv.c.paid_at.is_not(None)),
                     select(fp.c.customer_id, fp.c.first_paid_at).where(fp.c.customer_id.in_(paid_custs))).subquery()
    Sync(s, fp, "first_paid", ["customer_id", "first_paid_at"], ["customer_id"], fp.c.customer_id.in_(paid_custs),
         select(both.c.customer_id, func.min(both.c.t)).group_by(both.c.customer_id),
         keys=s.count["paid_custs"]).apply()
    if conn.execute(select(func.count()).where(new, w.c.type.like("plan.%"))).scalar_one():
        conn.execute(delete(off_price_table))
        conn.execute(insert(off_price_table).from_select(["subscription_id"], off_price_subscriptions()))
        day_rollups.rebuild_sub_events(conn)  # a plan's price: every "billed at its plan's price" test
    else:
        Sync(s, off_price_table, "off_price", ["subscription_id"], ["subscription_id"],
             off_price_table.c.subscription_id.in_(select(named.c.id)),
             off_price_subscriptions(only=select(named.c.id)), keys=s.count["named_subs"]).apply()
        day_rollups.fold_sub_events(s, subs)
    # the failed invoices to recompute: those named (every change to an invoice or its attempts
    # names it), those whose subscription's cancellation changed, and those whose recovery
    # method reads a card event of the window (dunning_facts: the subscription's card switched,
    # the card updater's change for the customer)
    changed_dims = (select(f.c.invoice_id).select_from(f.join(sub, sub.c.id == f.c.subscription_id))
                    .where(f.c.subscription_id.in_(select(named.c.id)),
                           or_(f.c.cancellation_kind.is_distinct_from(sub.c.cancellation_kind),
                               f.c.reason_group.is_distinct_from(reason_group(sub.c.cancellation_reason)))))
    card_switched = select(f.c.invoice_id).where(f.c.subscription_id.in_(
        select(w.c.subscription_id).where(new, w.c.type == CARD_CHANGED)))
    card_updated = (select(f.c.invoice_id).select_from(f.join(inv, inv.c.id == f.c.invoice_id))
                    .where(inv.c.customer_id.in_(select(w.c.customer_id).where(new, w.c.type == CARD_UPDATED))))
    scope = s.keys("failed_scope", union(select(invs.c.id), changed_dims, card_switched, card_updated))
    rows = failed_invoice_rows(conn, only_invoices=select(scope.c.id))
    day_rollups.fold_failed(s, f, scope, rows)
    day_rollups.fold_paying(s, invs, payers)
    cohort_days = day_rollups.fold_cohorts(s, custs)
    day_rollups.fold_days(s, day_rollups.paid_days_of(conn, invs), cohort_days)


def ready(conn: Connection) -> bool:
    """True once the rollups were built (the per-day rollups are then complete)."""
    return conn.execute(select(state_table.c.last_event_id).where(state_table.c.name == NAME)).first() is not None


def _window(s: Scratch, after: int, top: int) -> Table:
    """A scratch copy of the events in ``(after, top]`` visible now: one snapshot for the counts
    and the keys of this refresh."""
    ev = events
    w = s.table("events", Column("id", BigInteger, primary_key=True), Column("type", String(60)),
                Column("subscription_id", String(40)), Column("customer_id", String(40)),
                Column("invoice_id", String(40)))
    cols = ["id", "type", "subscription_id", "customer_id", "invoice_id"]
    s.conn.execute(insert(w).from_select(cols, select(*[ev.c[c] for c in cols]).where(ev.c.id > after,
                                                                                      ev.c.id <= top)))
    s.analyze(w)
    return w


def refresh(engine: Engine, *, lag: timedelta = LAG, rebuild: bool = False,
            wall_clock: datetime | None = None) -> Refreshed:
    """Bring the rollups up to date with the events table (its own transaction)."""
    now = wall_clock or datetime.now(UTC)
    with writers(engine).begin() as conn:  # a report served by a GET hands in the reader engine
        _lock(conn)
        tune(conn)  # a rebuild sorts and hashes millions of rows
        st = state_table.c
        state = conn.execute(select(st.last_event_id, st.folded_to, st.folded_count).where(st.name == NAME)).first()
        top = int(conn.execute(select(func.max(events.c.id))).scalar_one() or 0)
        settled = conn.execute(select(func.max(events.c.id)).where(events.c.recorded_at < now - lag)).scalar_one()
        mark = int(settled or 0)
        if state is None or rebuild:
            # counted before the rebuild reads anything: each of these events' changes is seen by it
            every, seen = conn.execute(select(func.count(), func.coalesce(func.sum(case((events.c.id > mark, 1),
                                                                                        else_=0)), 0))
                                       .where(events.c.id <= top)).one()
            _rebuild(conn)
            conn.execute(delete(state_table).where(st.name == NAME))
            conn.execute(insert(state_table).values(name=NAME, last_event_id=mark, refreshed_at=now,
                                                    folded_to=top, folded_count=int(seen)))
            return Refreshed(rebuilt=True, from_event_id=0, to_event_id=mark, folded_after=0, folded_to=top,
                             folded=int(every), provisional=int(seen))
        after = int(state[0])
        folded_to, folded_count = int(state[1] if state[1] is not None else after), int(state[2] or 0)
        if folded_to > top or folded_to < after:  # not a state this code wrote: fold the whole window
            folded_to, folded_count = after, 0
        mark = max(mark, after)
        if top <= after:
            return Refreshed(rebuilt=False, from_event_id=after, to_event_id=after, folded_after=top, folded_to=top)
        if top == folded_to:  # nothing above the last fold: two counts, no scratch table
            ev = events.c
            again, keep = conn.execute(select(func.coalesce(func.sum(case((ev.id <= folded_to, 1), else_=0)), 0),
                                              func.coalesce(func.sum(case((ev.id > mark, 1), else_=0)), 0))
                                       .where(ev.id > after, ev.id <= top)).one()
            if int(again) == folded_count:
                if mark > after:
                    conn.execute(state_table.update().where(st.name == NAME).values(
                        last_event_id=mark, refreshed_at=now, folded_count=int(keep)))
                return Refreshed(rebuilt=False, from_event_id=after, to_event_id=mark, folded_after=top,
                                 folded_to=top, provisional=int(keep))
        s = Scratch(conn)
        if s.pg:  # the fold reads the few rows of the keys named: index probes, not scans of
            # whole tables (the default cost of a random page assumes a disk, not the cache),
            # nor merge joins walking a whole primary key to meet a few thousand keys
            conn.exec_driver_sql("SET LOCAL random_page_cost = 1.1")
            conn.exec_driver_sql("SET LOCAL enable_mergejoin = off")
        try:
            w = _window(s, after, top)
            # in one snapshot: the events at or below folded_to visible now -- the same set as the
            # last fold's when the count is (events are never deleted; ids are unique), so only
            # those above it are new; a different count means one committed late below it, and
            # the whole window is folded again -- and the events the new watermark leaves inside
            again, keep, seen = conn.execute(select(
                func.coalesce(func.sum(case((w.c.id <= folded_to, 1), else_=0)), 0),
                func.coalesce(func.sum(case((w.c.id > mark, 1), else_=0)), 0), func.count())).one()
            lo = folded_to if int(again) == folded_count else after
            folded = int(seen) - (int(again) if lo == folded_to else 0)
            if top > lo:
                _fold(s, w, lo)
            if top > lo or mark > after:
                conn.execute(state_table.update().where(st.name == NAME).values(
                    last_event_id=mark, refreshed_at=now, folded_to=top, folded_count=int(keep)))
        finally:
            s.close()
        return Refreshed(rebuilt=False, from_event_id=after, to_event_id=mark, folded_after=lo, folded_to=top,
                         folded=folded, provisional=int(keep))


def refresh_if_built(engine: Engine) -> Refreshed | None:
    """:func:`refresh`, but never the first build (None then): after a run-cycle, a fold is
    proportional to the run, while a first build reads every invoice (minutes at 1 M
    subscriptions) and is left to ``billing report refresh`` or the first report."""
    with engine.connect() as conn:
        built = conn.execute(select(state_table.c.name).where(state_table.c.name == NAME)).first()
    return refresh(engine) if built is not None else None


def differences(engine: Engine) -> list[str]:
    """Rows in which the rollups differ from a recomputation over the raw tables ([] = equal)."""
    out: list[str] = []
    with engine.connect() as conn:
        have = {r[0] for r in conn.execute(select(off_price_table.c.subscription_id))}
        want = {r[0] for r in conn.execute(off_price_subscriptions())}
        if have != want:
            out.append(f"report_off_price: missing {sorted(want - have)[:5]}, extra {sorted(have - want)[:5]}")
        have_first = {r[0]: r[1] for r in conn.execute(select(first_paid_table))}
        want_first = {r[0]: r[1] for r in conn.execute(first_paid_rows())}
        if have_first != want_first:
            diff = sorted(k for k in set(have_first) | set(want_first) if have_first.get(k) != want_first.get(k))
            out.append(f"report_customer_first_paid differs for {diff[:5]}")
        cols = [c.name for c in failed_table.c]

        def norm(r: Any) -> tuple[Any, ...]:
            return tuple(r._mapping[c] for c in cols)

        got = {r.invoice_id: norm(r) for r in conn.execute(select(failed_table))}
        raw = failed_invoice_rows(conn).subquery("raw")
        exp = {r.invoice_id: norm(r) for r in conn.execute(select(*[raw.c[c] for c in cols]))}
        for k in sorted(set(got) | set(exp)):
            if got.get(k) != exp.get(k):
                out.append(f"report_failed_invoices[{k}]: rollup {got.get(k)} != raw {exp.get(k)}")
    out += _day_differences(engine)
    return out


def _snapshot(conn: Connection) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every row of the per-day rollups (and the per-subscription events, without their
    ordinal) as a multiset of tuples, surrogate ids left out."""
    snap: dict[str, Counter[tuple[Any, ...]]] = {}
    for t in (day_rollups.sub_events_table, day_rollups.sub_event_days_table, day_rollups.paid_days_table,
              day_rollups.failed_days_table, day_rollups.paying_runs_table, day_rollups.paying_months_table,
              day_rollups.cohorts_table, day_rollups.active_runs_table, day_rollups.cohort_cells_table):
        cols = [c for c in t.c if c.name not in ("id", "seq")]
        snap[t.name] = Counter(tuple(r) for r in conn.execute(select(*cols)))
    return snap


def _day_differences(engine: Engine) -> list[str]:
    """The per-day rollups as maintained vs. as rebuilt from the raw tables now (the rebuild
    runs in a transaction that is rolled back)."""
    out: list[str] = []
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            have = _snapshot(conn)
            day_rollups.rebuild_sub_events(conn)
            day_rollups.rebuild_paid_days(conn)
            day_rollups.rebuild_failed_days(conn, failed_table)
            day_rollups.rebuild_paying(conn)
            day_rollups.rebuild_cohorts(conn)
            want = _snapshot(conn)
        finally:
            trans.rollback()
    for name in have:
        if have[name] != want[name]:
            extra, missing = have[name] - want[name], want[name] - have[name]
            out.append(f"{name}: extra {sorted(extra, key=repr)[:3]}, missing {sorted(missing, key=repr)[:3]}")
    return out
