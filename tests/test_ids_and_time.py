"""Ids (ULIDs) and timestamps as the batch paths produce and read them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_engine.db import make_engine
from billing_engine.models import Event, new_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def test_an_id_is_the_prefix_and_a_ulid_of_its_creation_time() -> None:
    before = int(time.time() * 1000)
    value = new_id("pay")
    after = int(time.time() * 1000)
    prefix, ulid = value.split("_")
    assert prefix == "pay" and len(ulid) == 26 and set(ulid) <= set(CROCKFORD)
    n = 0
    for ch in ulid:
        n = n * 32 + CROCKFORD.index(ch)
    assert n < 2**128
    assert before <= n >> 80 <= after  # the first 48 bits are the milliseconds


def test_ids_made_later_sort_later_and_never_repeat() -> None:
    first = [new_id("in") for _ in range(2000)]
    time.sleep(0.002)
    later = new_id("in")
    assert len(set(first)) == 2000
    assert later > max(first)


def test_a_forked_worker_and_its_parent_never_draw_the_same_random_bits() -> None:
    """Ids take their random bits from a pool read ahead from the OS; a process forked
    after the pool was filled (multiprocessing's fork, a pre-forking server) starts its own."""
    import multiprocessing

    new_id("in")  # the parent's pool is now filled
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()

    def child() -> None:
        child_end.send([new_id("in")[-16:] for _ in range(100)])

    proc = ctx.Process(target=child)
    proc.start()
    from_child = parent_end.recv()
    proc.join(30)
    mine = [new_id("in")[-16:] for _ in range(100)]  # the last 16 digits: 80 random bits
    assert set(from_child).isdisjoint(mine)


def test_timestamps_come_back_in_utc_whatever_the_backend(engine: Engine) -> None:
    at = datetime(2026, 3, 15, 9, 0, 0, 123456, tzinfo=UTC)
    with Session(engine) as s:
        s.add(Event(type="test", actor="test", payload="{}", occurred_at=at, created_at=at,
                    recorded_at=at + timedelta(hours=1)))
        s.commit()
    with Session(engine) as s:
        got = s.connection().execute(Event.__table__.select()).one()  # type: ignore[attr-defined]
    assert got.occurred_at == at and got.occurred_at.tzinfo is UTC
    assert got.recorded_at.isoformat() == "2026-03-15T10:00:00.123456+00:00"


def test_sqlite_timestamps_in_other_text_forms_are_read_as_utc() -> None:
    """SQLAlchemy writes ``YYYY-MM-DD HH:MM:SS.ffffff`` (the fast path); rows written by hand
    or by a migration in another form still come back as the same instant, aware, in UTC."""
    engine = make_engine("sqlite://")
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (n INTEGER, at DATETIME)")
        c.exec_driver_sql("INSERT INTO t VALUES (1, '2026-03-15 09:00:00.000001'), (2, '2026-03-15 09:00:00'), "
                          "(3, '2026-03-15'), (4, '2026-03-15T09:00:00.500000'), (5, NULL), "
                          "(6, '2026-12-31 23:59:59.999999')")
        table = Event.__table__  # type: ignore[attr-defined]
        got = [r[0] for r in c.execute(text("SELECT at FROM t ORDER BY n").columns(table.c.occurred_at))]
    assert got == [datetime(2026, 3, 15, 9, 0, 0, 1, tzinfo=UTC), datetime(2026, 3, 15, 9, tzinfo=UTC),
                   datetime(2026, 3, 15, tzinfo=UTC), datetime(2026, 3, 15, 9, 0, 0, 500000, tzinfo=UTC), None,
                   datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    assert all(g.tzinfo is UTC for g in got if g is not None)


def test_postgresql_sessions_keep_the_urls_own_options(pg_db_url: str) -> None:
    eng = make_engine(f"{pg_db_url}?options=-c%20application_name%3Dbilling-test")
    try:
        with eng.connect() as c:
            assert c.execute(text("SHOW TimeZone")).scalar() == "UTC"
            assert c.execute(text("SHOW application_name")).scalar() == "billing-test"
    finally:
        eng.dispose()
