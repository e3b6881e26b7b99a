"""Shared fixtures.

Database tests run on SQLite always and on PostgreSQL when BILLING_TEST_DATABASE_URL is
set (``.ci/run`` sets it). Without it they skip with a reason locally; under CI=true a
missing PostgreSQL is a failure, never a skip.

Each pytest process gets its own PostgreSQL database (created from the URL's server,
migrated once, emptied between tests), so parallel runs never see each other's rows.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from billing_engine import logs
from billing_engine.db import make_engine, upgrade
from tests.dbreset import empty_postgresql

# The suite runs in test mode: the production checks (public signing key, unset gateway,
# ...; billing_engine.settings.Mode) do not apply, here or in the `billing` processes the
# tests spawn (they inherit this environment). Tests of the checks themselves override it.
os.environ["BILLING_ENV"] = "test"

# Compiled modules are cached (__pycache__, git-ignored) even where the environment says not
# to (PYTHONDONTWRITEBYTECODE=1, as in many container images): otherwise every `billing`
# process a test starts compiles the engine's sources again (~0.3 s of CPU each), and every
# pytest process re-does the assertion rewriting of every test module (~4 s each). For this
# process, its xdist workers and the processes the tests start (they inherit os.environ).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    """Collection imports the engine, the API, schemathesis, hypothesis ...: hundreds of
    thousands of objects that live as long as the process. The collector is off meanwhile,
    and at the end they are frozen (gc.freeze: left out of every later collection), or each
    full collection during the tests re-scans them all (~20 % of the CPU of in-process tests)."""
    gc.disable()
    try:
        return (yield)
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()


PG_ENV = "BILLING_TEST_DATABASE_URL"
NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def _pg_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        return None
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


_LOGGING_AT_START = (logging.getLogger().level, logging.getLogger("alembic").level, structlog.get_config())


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A command run in the test process (typer's CliRunner) configures logging as its own
    process would (``billing_engine.logs.configure``: a stderr handler on the root logger,
    INFO, structlog's chain). After every test that did, that handler goes and the levels
    and structlog are as at the start, or a later test in the same worker inherits the
    handler and finds a JSON log line in the stderr it checks. (pytest's own capture
    handlers are left alone.)"""
    yield
    root = logging.getLogger()
    ours = [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]
    if ours:
        for h in ours:
            root.removeHandler(h)
        root.setLevel(_LOGGING_AT_START[0])
        logging.getLogger("alembic").setLevel(_LOGGING_AT_START[1])
        structlog.configure(**_LOGGING_AT_START[2])


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    eng = make_engine(f"sqlite:///{path}")
    upgrade(eng)
    eng.dispose()
    return path


@pytest.fixture(scope="session")
def _pg_database() -> Iterator[str | None]:
    base = _pg_url()
    if base is None:
        yield None
        return
    name = f"billing_t_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server down / no rights
        admin.dispose()
        if os.environ.get("CI"):
            raise RuntimeError(f"{PG_ENV} is set but PostgreSQL is unusable: {exc}") from exc
        yield None
        return
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    eng = make_engine(url)
    upgrade(eng)
    eng.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def fresh_database_url(request: pytest.FixtureRequest, backend: str, directory: Path) -> str:
    """A migrated, empty database on ``backend`` (skips/fails for a missing PostgreSQL)."""
    if backend == "sqlite":
        tpl = request.getfixturevalue("_sqlite_template")
        path = directory / "billing.db"
        shutil.copy(tpl, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("_pg_database")
    if url is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: set {PG_ENV}")
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    eng = make_engine(url)
    empty_postgresql(eng)  # tests/dbreset.py: the tables that hold rows, not a TRUNCATE of all
    eng.dispose()
    return str(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database URL on each backend."""
    yield fresh_database_url(request, request.param, tmp_path)


@pytest.fixture
def pg_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty PostgreSQL database URL, for tests that only make sense there
    (skips locally without PostgreSQL, fails under CI) -- rather than skipping a SQLite variant."""
    return fresh_database_url(request, "postgresql", tmp_path)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def pg_engine(pg_db_url: str) -> Iterator[Engine]:
    """PostgreSQL only (pools, parallel workers): skips locally without it, fails under CI."""
    eng = make_engine(pg_db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path, _sqlite_template: Path) -> Iterator[Engine]:
    """SQLite only (for tests that do not need to run on both backends)."""
    path = tmp_path / "billing.db"
    shutil.copy(_sqlite_template, path)
    eng = make_engine(f"sqlite:///{path}")
    yield eng
    eng.dispose()


@pytest.fixture
def now() -> datetime:
    return NOW


# The tests that take tens of seconds each on the 2-core CI machine, longest first. They
# run first: pytest-xdist (--dist worksteal) hands each worker a contiguous share of the
# collection and idle workers steal from the end of the others' queues, so a long test left
# at the end of the collection is a tail one worker runs alone while the other waits.
SLOW_FIRST = (
    "tests/test_crash_suite.py::",
    "tests/reports/test_rollups.py::",
    "tests/test_lifecycle_state_machine.py::test_the_lifecycle_keeps_its_invariants",
    "tests/reports/test_fold.py::",
    "tests/cli/test_cli.py::test_run_cycle_folds",
    "tests/api/test_schemathesis.py::",
)


def _slow_rank(nodeid: str) -> int:
    for rank, prefix in enumerate(SLOW_FIRST):
        if nodeid.startswith(prefix):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        if "db_url" in getattr(item, "fixturenames", ()) and "[postgresql" in item.nodeid:
            item.add_marker(pytest.mark.postgres)
    items.sort(key=lambda item: _slow_rank(item.nodeid))  # stable: the rest keep their order
