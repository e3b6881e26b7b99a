"""billing_engine.rows: a statement built once, read as named tuples -- on PostgreSQL
straight from psycopg's cursor, elsewhere (and whenever something watches the statements)
through SQLAlchemy. Both paths must give the same rows and the same errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, StatementError

from billing_engine import subscriptions
from billing_engine.db import statement_reads, transaction
from billing_engine.rows import PlainSelect
from tests.factories import make_plan, make_subscription

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def _watched(conn: Connection) -> list[str]:
    seen: list[str] = []
    event.listen(conn, "before_cursor_execute", lambda _c, _cu, statement, *_a: seen.append(statement))
    return seen


def _seed(engine: Engine) -> list[str]:
    with transaction(engine) as s:
        plan = make_plan(s, NOW)
        subs = [make_subscription(s, NOW + timedelta(hours=i), plan=plan, email=f"r{i}@example.com") for i in range(4)]
        return [sub.id for sub in subs]


def test_both_paths_read_the_same_rows(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _seed(engine)
    since = (NOW + timedelta(hours=1)).astimezone(timezone(timedelta(hours=2)))  # aware, not UTC: converted
    q = subscriptions._page_select(10, frozenset({"created_gte"}))
    with engine.connect() as conn:
        seen = _watched(conn)
        through_sqlalchemy = q.all(conn, {"created_gte": since})
        assert [st for st in seen if st.startswith("SELECT")] != []
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # the direct path: SQLAlchemy executes nothing
            monkeypatch.setattr(Connection, "execute", lambda *a, **k: pytest.fail("not the direct path"))
        rows = q.all(conn, {"created_gte": since})
    assert rows == through_sqlalchemy and [r.id for r in rows] == ids[1:]
    assert type(rows[0]) is type(through_sqlalchemy[0]) and rows[0].customer_email == "r1@example.com"
    assert rows[0].created_at == NOW + timedelta(hours=1) and rows[0].created_at.tzinfo is UTC
    assert all(r.trial_end is None for r in rows)


def test_a_naive_datetime_is_refused_on_both_paths(engine: Engine) -> None:
    q = subscriptions._page_select(10, frozenset({"created_gte"}))
    with engine.connect() as conn, pytest.raises(StatementError, match="naive datetime"):
        q.all(conn, {"created_gte": datetime(2026, 1, 1)})  # noqa: DTZ001 - the point


def test_rows_in_another_session_time_zone_still_come_back_in_utc(pg_db_url: str) -> None:
    from billing_engine.db import make_engine

    eng = make_engine(pg_db_url, connect_args={"options": "-c TimeZone=Europe/Budapest"})
    try:
        ids = _seed(eng)
        with eng.connect() as conn:
            rows = subscriptions._SHOW_SELECT.all(conn, {"subscription_id": ids[0]})
        assert rows[0].created_at == NOW and rows[0].created_at.tzinfo is UTC
    finally:
        eng.dispose()


def test_statement_reads_leave_no_transaction_open_on_postgresql(pg_db_url: str) -> None:
    from psycopg.pq import TransactionStatus

    from billing_engine.db import make_engine

    eng = make_engine(pg_db_url)
    try:
        ids = _seed(eng)
        reader = statement_reads(eng)
        with transaction(reader) as s:
            conn = s.connection()
            assert [r.id for r in subscriptions._SHOW_SELECT.all(conn, {"subscription_id": ids[0]})] == ids[:1]
            assert conn.connection.dbapi_connection.info.transaction_status == TransactionStatus.IDLE  # type: ignore[union-attr]
    finally:
        eng.dispose()


def test_a_lost_connection_is_sqlalchemys_error_and_is_invalidated(pg_db_url: str) -> None:
    from billing_engine.db import make_engine

    eng = make_engine(pg_db_url)
    q = PlainSelect(subscriptions._ROW_SELECT.limit(1))
    try:
        with eng.connect() as conn:
            q.all(conn)
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with eng.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not _closed(conn):
                time.sleep(0.05)
            with pytest.raises(OperationalError) as err:
                q.all(conn)
            assert err.value.connection_invalidated and conn.invalidated
        with eng.connect() as conn:  # the pool hands out a working connection again
            assert q.all(conn) == []
    finally:
        eng.dispose()


def _closed(conn: Any) -> bool:
    import select

    raw = conn.connection.dbapi_connection
    p = select.poll()
    p.register(raw.fileno(), select.POLLIN)
    return bool(p.poll(0))
