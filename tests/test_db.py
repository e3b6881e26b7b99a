"""Schema: migrations are idempotent, a new SQLite file migrates itself, models match migrations."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from billing_engine import db
from billing_engine.db import current_revision, ensure_schema, head_revision, make_engine, upgrade
from billing_engine.errors import ConfigurationError


def test_brand_new_sqlite_file_is_migrated_on_first_use(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    ensure_schema(eng)
    assert current_revision(eng) == head_revision()
    assert {"subscriptions", "invoices", "payment_attempts", "consents"} <= set(inspect(eng).get_table_names())


def test_a_worker_that_reads_the_history_just_before_another_migrates_starts_anyway(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`billing serve --workers 2` on a new SQLite file: both workers check the schema at
    once. One read "no migration history" just before the other's migration committed and
    "tables" just after, and refused the file as foreign ("has tables but no migration
    history"): the worker died at start-up (a full suite run saw the server then take
    60 s to stop). It now reads the history again."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    upgrade(make_engine(url))  # what the other worker just committed
    real = db.current_revision
    calls: list[int] = []

    def stale_first(engine: Engine) -> str | None:
        calls.append(1)
        return None if len(calls) == 1 else real(engine)  # the first read came before that commit

    monkeypatch.setattr(db, "current_revision", stale_first)
    ensure_schema(make_engine(url))
    assert real(make_engine(url)) == head_revision() and len(calls) == 2


def test_workers_opening_a_new_sqlite_file_together_all_start(tmp_path: Path) -> None:
    """Four processes check the schema of one new SQLite file at the same moment: the
    first migrates, the others wait for its lock and find nothing to do; none fails."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code = ("import sys; from billing_engine.db import ensure_schema, make_engine; "
            "ensure_schema(make_engine(sys.argv[1])); print('ok')")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code, url], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-600:] for _out, err in outs]
    assert current_revision(make_engine(url)) == head_revision()


def test_a_sqlite_file_with_tables_but_no_migration_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE customers (id TEXT PRIMARY KEY)")
    with pytest.raises(ConfigurationError, match="no migration history"):
        ensure_schema(make_engine(f"sqlite:///{path}"))


def test_upgrade_twice_is_harmless(db_url: str) -> None:
    eng = make_engine(db_url)
    before, after = upgrade(eng)
    assert before == after == head_revision()


def test_invoice_is_unique_per_subscription_period_in_the_schema(db_url: str) -> None:
    eng = make_engine(db_url)
    uniques = inspect(eng).get_unique_constraints("invoices")
    assert any(set(u["column_names"]) == {"subscription_id", "period_start"} for u in uniques)


def test_migrations_match_the_models(db_url: str) -> None:
    """A model change without a migration is caught here (autogenerate finds no diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    import billing_engine.models  # noqa: F401

    eng = make_engine(db_url)
    with eng.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == []


def test_among_matches_exactly_the_listed_strings_whatever_they_contain(engine: Engine) -> None:
    """``among`` sends the list as one parameter (an array literal on PostgreSQL): a value
    with a quote, a backslash, a comma, braces, spaces or the word NULL is matched as
    itself, and an empty list matches nothing."""
    import sqlalchemy as sa

    from billing_engine.db import among

    odd = ['a"b', "c\\d", "e,f", "{g}", " h ", "NULL", "null", "ü", "plain_1"]
    t = sa.Table(f"t_among_{uuid.uuid4().hex[:8]}", sa.MetaData(), sa.Column("v", sa.String(40)))
    t.create(engine)
    try:
        with engine.begin() as c:
            c.execute(t.insert(), [{"v": v} for v in [*odd, "other", "a", "b"]])
            got = sorted(r[0] for r in c.execute(sa.select(t.c.v).where(among(t.c.v, odd))))
            assert got == sorted(odd)
            assert c.execute(sa.select(t.c.v).where(among(t.c.v, []))).all() == []
            assert [r[0] for r in c.execute(sa.select(t.c.v).where(among(t.c.v, ["a"])))] == ["a"]
    finally:
        t.drop(engine)


def test_among_gives_postgresql_the_list_as_a_constant_array(pg_engine: Engine) -> None:
    """On PostgreSQL the list arrives as an array the planner sees, once: its length is
    known (300 ids of a unique column: 300 rows expected) and a row-by-row check of the
    condition (a sequential scan) does not convert the literal again for every row. It
    was text cast to an array in the statement: not a constant to the planner, which then
    guessed the list's length and, scanning a table, parsed the 500-id literal once per
    row (0.7 s instead of 2 ms for 10,000 payment attempts)."""
    import sqlalchemy as sa

    from billing_engine.db import among

    engine = pg_engine
    t = sa.Table(f"t_among_{uuid.uuid4().hex[:8]}", sa.MetaData(), sa.Column("v", sa.String(40), primary_key=True))
    t.create(engine)
    try:
        with engine.begin() as c:
            c.execute(t.insert(), [{"v": f"id_{i:05d}"} for i in range(2000)])
            c.exec_driver_sql(f"ANALYZE {t.name}")
            wanted = [f"id_{i:05d}" for i in range(0, 1800, 6)]
            stmt = sa.select(t.c.v).where(among(t.c.v, wanted)).compile(c)
            plan = c.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(stmt), stmt.params).scalar_one()[0]["Plan"]
            assert plan["Plan Rows"] == 300
            c.exec_driver_sql("SET LOCAL enable_indexscan = off")
            c.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            plan = c.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(stmt), stmt.params).scalar_one()[0]["Plan"]
            assert plan["Node Type"] == "Seq Scan" and "cstring" not in plan["Filter"], plan["Filter"][-120:]
            assert len(c.execute(sa.select(t.c.v).where(among(t.c.v, wanted))).all()) == 300
    finally:
        t.drop(engine)
