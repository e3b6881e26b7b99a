"""Engine, sessions and schema migrations.

- SQLite: WAL, foreign keys on, a busy timeout, and every transaction opened with
  ``BEGIN IMMEDIATE`` so concurrent writers serialise instead of failing half-way.
  A brand-new SQLite file is migrated to the latest schema on first use.
- PostgreSQL (``postgresql+psycopg://``): the schema is managed with
  ``billing db upgrade`` (Alembic); the engine refuses to run on an old schema.
"""

from __future__ import annotations

import json
import select
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import String, bindparam, create_engine, event, inspect
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import NullType, TypeDecorator, UserDefinedType
from sqlmodel import Session

from billing_engine.errors import ConfigurationError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str, *, echo: bool = False, pool_size: int | None = None, **kwargs: Any) -> Engine:
    """Create an engine with the per-backend settings the engine relies on (``pool_size``:
    PostgreSQL connections kept, and the most open at once; default ``POOL_SIZE``)."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False, "timeout": 30},
                **kwargs,
            )
            _configure_sqlite(engine)
        else:
            # Pool: 15 connections kept (was 5 kept + 10 opened and closed again under load):
            # the same cap, but a busy `billing serve` worker no longer opens and closes a
            # connection per ~2 requests (15/s at 50 clients: a backend fork, and statements
            # parsed and planned afresh on each new connection).
            kwargs["pool_size"] = pool_size or POOL_SIZE
            kwargs.setdefault("max_overflow", 0)
            # Dead connections (a restarted or terminated server) are caught at checkout
            # without a round trip: see `_discard_dead_connections`.
            ping_every_checkout = kwargs.setdefault("pool_pre_ping", False)
            # the session's time zone is UTC: timestamps then come back with ``datetime.UTC``
            # as their tzinfo, and UTCDateTime has nothing to convert (a run-cycle reads
            # ~20 timestamps per renewal)
            # (added to any ``options`` the URL or the caller give, which would otherwise be replaced)
            connect_args = dict(kwargs.pop("connect_args", {}))
            given = connect_args.get("options") or make_url(url).query.get("options") or ""
            if isinstance(given, tuple):
                given = " ".join(given)
            if "timezone" not in given.lower():
                connect_args["options"] = f"{given} -c TimeZone=UTC".strip()
            engine = create_engine(url, echo=echo, connect_args=connect_args, **kwargs)
            if not ping_every_checkout:
                _discard_dead_connections(engine)
    except Exception as exc:  # bad URL, missing driver
        raise ConfigurationError(f"invalid BILLING_DATABASE_URL: {exc}") from None
    return engine


POOL_SIZE = 15
IDLE_PING_SECONDS = 10.0
_CHECKED_IN = "billing_checked_in"


def _discard_dead_connections(engine: Engine) -> None:
    """At checkout, a PostgreSQL connection the server has closed is replaced by a fresh
    one (what ``pool_pre_ping`` did with a round trip -- an empty query -- per checkout,
    i.e. per request). A server that restarts, or terminates a backend, sends it a message
    and closes the socket: an idle connection with something to read is dead (a live one
    has nothing pending between transactions), which ``select`` sees without asking the
    server. Such a connection -- or one idle for more than ``IDLE_PING_SECONDS``, which a
    firewall may have dropped without a word -- is pinged as before; a failed ping makes
    the pool discard it and connect again (``DisconnectionError``)."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_CHECKED_IN)
        if idle_since is None:  # a connection just opened
            return
        try:
            stale = time.monotonic() - idle_since > IDLE_PING_SECONDS or _has_pending_input(dbapi_conn)
            if stale:
                engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"connection found dead at checkout: {exc}") from exc


def _has_pending_input(dbapi_conn: Any) -> bool:
    """Whether the server sent something to an idle connection (closed it, mostly)."""
    if dbapi_conn.closed:
        return True
    poller = select.poll()  # not select.select: it fails on descriptors above 1023
    poller.register(dbapi_conn.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # take transaction control away from pysqlite so we can BEGIN IMMEDIATE
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # readers (see `readers`) take no lock up front: in WAL mode they read a snapshot
        # while one writer writes, instead of queueing for the write lock
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READS_OPTION) else "BEGIN IMMEDIATE")


READS_OPTION = "billing_reads"


def readers(engine: Engine) -> Engine:
    """``engine`` for reads: on SQLite its transactions begin DEFERRED (no write lock; WAL
    lets them read while a writer writes; a write in one must go through :func:`writers`);
    on PostgreSQL reads never block anyway. Used by every GET of the API."""
    return engine.execution_options(**{READS_OPTION: True})


def writers(engine: Engine) -> Engine:
    """``engine`` for a transaction that writes, even when handed its :func:`readers` form:
    on SQLite it begins IMMEDIATE (waits for the write lock up front, within the busy
    timeout). A DEFERRED transaction that reads and then writes fails at once ("database is
    locked") if another writer committed after its first read: SQLite cannot upgrade a
    stale snapshot, and the busy timeout does not apply."""
    return engine.execution_options(**{READS_OPTION: False}) if engine.get_execution_options().get(READS_OPTION) \
        else engine


_statement_readers: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def statement_reads(engine: Engine) -> Engine:
    """``engine`` for a read of a few SELECTs that need no snapshot in common -- on
    PostgreSQL at READ COMMITTED, where each statement takes its own snapshot even inside a
    transaction -- in autocommit mode: the same rows, without the BEGIN and the COMMIT (two
    round trips of a 4-6 query read; used by the API's subscription list and show). Any
    other database or isolation level: ``engine`` itself, in transactions as before."""
    cached = _statement_readers.get(engine)
    if cached is not None:
        return cached
    dialect = engine.dialect
    if dialect.name != "postgresql" or not hasattr(dialect, "default_isolation_level"):
        return engine  # SQLite; or not connected yet (the level is read at the first connect)
    levels = {dialect.default_isolation_level, engine.get_execution_options().get("isolation_level", "READ COMMITTED"),
              getattr(dialect, "_on_connect_isolation_level", None) or "READ COMMITTED"}
    reader = engine.execution_options(isolation_level="AUTOCOMMIT") if levels == {"READ COMMITTED"} else engine
    _statement_readers[engine] = reader
    return reader


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision`` (idempotent). Returns (before, after)."""
    before = current_revision(engine)
    _migrate(engine, command.upgrade, revision)
    return before, current_revision(engine)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate back to ``revision`` (tests and emergencies; data in dropped columns is lost)."""
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, step: Any, revision: str) -> None:
    """One transaction. On SQLite with foreign keys off for its duration: a migration that
    rebuilds a table (copy, drop, rename: SQLite's only way to change a constraint) would
    otherwise fail on the rows of other tables that point at it -- the checks come back on
    afterwards, and every reference is verified before the commit."""
    cfg = alembic_config(engine)
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:  # a PRAGMA that only works outside a transaction: on the raw connection
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                step(cfg, revision)
                if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").all()):
                    raise ConfigurationError(f"migration to {revision} left broken references: {broken[:5]}")
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def ensure_schema(engine: Engine) -> None:
    """Brand-new SQLite file: create the schema. Otherwise: refuse an outdated schema."""
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise ConfigurationError(f"cannot open the database: {exc.orig}") from None
    head = head_revision()
    if current == head:
        return
    if engine.dialect.name == "sqlite":
        # Processes starting together on a new file (`billing serve --workers 2`) race:
        # the first migrates (one transaction: its tables and its history appear
        # together), the others wait for its lock in upgrade() and find nothing to do.
        # One that read "no history" just before that commit and "tables" just after
        # must read the history again before calling the file foreign.
        if current is None and _has_tables(engine) and (current := current_revision(engine)) is None:
            raise ConfigurationError(
                "the SQLite database has tables but no migration history; use a new file"
            )
        if current != head:
            upgrade(engine)
        return
    if current is None:
        raise ConfigurationError("the database has no schema yet: run `billing db upgrade`")
    raise ConfigurationError(
        f"the database schema is at {current}, this version needs {head}: run `billing db upgrade`"
    )


def _has_tables(engine: Engine) -> bool:
    return bool([t for t in inspect(engine).get_table_names() if t != "alembic_version"])


def locks_rows(session: Session) -> bool:
    """Whether ``SELECT ... FOR UPDATE`` means anything here: on PostgreSQL it locks the
    rows; SQLite serialises every writer (``BEGIN IMMEDIATE``) and needs no row locks."""
    return session.get_bind().dialect.name == "postgresql"


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


_engines: dict[str, Engine] = {}


def get_engine(url: str | None = None, *, pool_size: int | None = None) -> Engine:
    """Process-wide engine for ``url`` (default: settings), schema checked once; ``pool_size``
    (default: settings): see :func:`make_engine`."""
    if url is None or pool_size is None:
        from billing_engine.settings import get_settings

        settings = get_settings()
        url, pool_size = url or settings.database_url, pool_size or settings.db_pool_size
    engine = _engines.get(url)
    if engine is None:
        engine = make_engine(url, pool_size=pool_size)
        ensure_schema(engine)
        _engines[url] = engine
    return engine


# --------------------------------------------------------------------------- id lists


class _VarcharArray(UserDefinedType[str]):
    """A bind parameter typed ``VARCHAR[]`` in the statement (``$1::VARCHAR[]``) whose
    value is an array literal (a string): PostgreSQL reads the literal ONCE, when the
    statement's parameters arrive, as a constant array."""

    cache_ok = True
    render_bind_cast = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "VARCHAR[]"


class _IdList(TypeDecorator[list[str]]):
    """A list of strings as ONE bind parameter, sent as ONE string: a PostgreSQL array
    literal (``{"a","b"}``, typed ``VARCHAR[]`` in the statement), a JSON array elsewhere
    (read back with ``json_each``). Not a Python list on PostgreSQL: psycopg dumps a list
    element by element in Python (~2 us each; the run-cycle sends lists of 500 ids a dozen
    times per batch).

    Typed as an array, not as text converted in the statement: ``CAST($1::VARCHAR AS
    VARCHAR[])`` is not a constant to the planner (text-to-array conversion is only
    "stable"), so wherever the condition is checked row by row -- a sequential scan of a
    small or new table, a join's filter -- the 500-id literal was parsed again for every
    row: 0.7 s instead of 2 ms to scan 10,000 payment attempts; a quarter of the database's
    time in a run of 10,000 renewals on fresh tables. A constant array is also hashed for
    such checks and its length is known to the planner."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        return dialect.type_descriptor(_VarcharArray() if dialect.name == "postgresql" else String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        values = [v if type(v) is str else str(v) for v in value]
        if dialect.name != "postgresql":
            return json.dumps(values)
        return pg_array_literal(values)


def pg_array_literal(values: list[str]) -> str:
    """``values`` as a PostgreSQL array literal, every element quoted (so that ``NULL`` or
    a comma is an ordinary string)."""
    joined = "".join(values)
    if "\\" in joined or '"' in joined:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + '","'.join(values) + '"}' if values else "{}"


class _Among(FunctionElement[bool]):
    type = NullType()  # type: ignore[assignment]  # not Boolean: SQLite would get "... = 1", which no index serves
    inherit_cache = True
    name = "among"


@compiles(_Among)
def _among_default(element: _Among, compiler: Any, **kw: Any) -> str:
    column, values = list(element.clauses)
    return f"{compiler.process(column, **kw)} IN (SELECT value FROM json_each({compiler.process(values, **kw)}))"


@compiles(_Among, "postgresql")
def _among_postgresql(element: _Among, compiler: Any, **kw: Any) -> str:
    column, values = list(element.clauses)
    return f"{compiler.process(column, **kw)} = ANY({compiler.process(values, **kw)})"


def among(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """``column IN values`` with the whole list as one parameter.

    The batch paths select hundreds of rows by id; ``IN (:p1, ..., :p500)`` costs the
    driver a fresh parse of a long statement on every call (psycopg caches only short
    ones) -- a fifth of the run-cycle's CPU. ``= ANY(:ids)`` is one parameter, one short
    statement, and uses the same index."""
    return _Among(column, bindparam(None, list(values), type_=_IdList()))


def among_param(column: Any, name: str) -> ColumnElement[bool]:
    """:func:`among` with the list given at execution time as parameter ``name``: for a
    statement built once and run with ``{name: [...]}`` (no statement or cache key to
    build per call)."""
    return _Among(column, bindparam(name, type_=_IdList()))
