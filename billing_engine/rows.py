"""Plain rows of a SELECT built once, read the cheapest way the database allows.

The API's subscription list and show read a page in four statements (the page, its plans,
their price changes, its coupons). Through SQLAlchemy's execution path each statement cost
~0.15-0.3 ms of CPU before its rows were even built (the compiled-statement lookup, the
execution context, parameter and result processing, rows fetched one ``fetchone`` at a
time): half of a page's time in the database layer. :class:`PlainSelect` keeps the
statement compiled once per dialect and, on PostgreSQL with psycopg, runs it on the
connection's DBAPI cursor directly, fetching all rows at once:

- the same SQL text and the same bind parameters SQLAlchemy would send (its compiled
  parameters, passed through the statement's bind processors);
- rows as named tuples (attribute access like a ``Row``, a tenth of its cost to build);
- the columns' result processors applied as SQLAlchemy would, except :class:`UTCDateTime`'s
  when the session's time zone is UTC (``db.make_engine`` sets it): psycopg then returns
  aware UTC datetimes, which that processor returns untouched;
- a DBAPI error is raised as SQLAlchemy's ``DBAPIError`` (the API answers 503 for an
  unreachable database, as before), and a lost connection is invalidated so the pool
  does not hand it out again.

Anywhere else -- SQLite, another driver, a statement the direct path does not cover
(expanding ``IN``, escaped names), or a connection with event listeners (``echo``,
instrumentation, the tests' statement counters) -- it is ``connection.execute`` with the
rows converted to the same named tuples, so callers see one row type.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

from billing_engine.models import UTCDateTime

TIMESTAMPTZ_OID = 1184  # PostgreSQL's type of a UTCDateTime column (``timestamp with time zone``)


class PlainSelect:
    """``stmt`` (built once, module level), read as a list of named tuples with
    :meth:`all`; its columns' keys must be valid, distinct identifiers."""

    def __init__(self, stmt: Select[Any], name: str = "Row") -> None:
        self.stmt = stmt
        self.keys: tuple[str, ...] = tuple(stmt.selected_columns.keys())
        self.row: Any = namedtuple(name, self.keys)  # type: ignore[misc]  # noqa: PYI024
        self._direct: dict[Dialect, _Direct | None] = {}

    def all(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The rows of the statement with ``params``, on ``conn`` (e.g. ``session.connection()``)."""
        dialect = conn.dialect
        try:
            direct = self._direct[dialect]
        except KeyError:
            direct = self._direct[dialect] = _Direct.build(self, dialect)
        if direct is not None and not _observed(conn):
            try:
                values = direct.params(params or {})
            except Exception:  # noqa: BLE001 - a value the bind processors refuse: SQLAlchemy raises its error
                values = None
            if values is not None:
                return direct.all(conn, values)
        make = self.row._make
        return [make(r) for r in conn.execute(self.stmt, dict(params or {})).all()]


def _observed(conn: Connection) -> bool:
    """Whether something watches this connection's statements: ``echo``, listeners of the
    execute events (instrumentation, the tests' statement counters), dialect events such as
    ``handle_error``. They are SQLAlchemy's to call, so such a connection takes its path.
    (Not ``_has_events``: an engine with ``isolation_level`` in its execution options has an
    ``engine_connect`` listener, which says nothing about statements.)"""
    d = conn.dispatch
    return bool(conn._echo or d.before_execute or d.after_execute or d.before_cursor_execute
                or d.after_cursor_execute or conn.dialect._has_events)


class _Direct:
    """The psycopg path of one :class:`PlainSelect` on one dialect."""

    def __init__(self, owner: PlainSelect, dialect: Dialect, sql: str,
                 params: Callable[[Mapping[str, Any]], Any]) -> None:
        self.owner, self.dialect, self.sql, self.params = owner, dialect, sql, params
        # known after the first run (they depend on the columns' types as the server sends them):
        self.processors: list[tuple[int, Callable[[Any], Any]]] | None = None
        self.in_utc_processors: list[tuple[int, Callable[[Any], Any]]] = []
        self.error = dialect.loaded_dbapi.Error

    @classmethod
    def build(cls, owner: PlainSelect, dialect: Dialect) -> _Direct | None:
        if dialect.name != "postgresql" or dialect.driver != "psycopg":
            return None
        compiled: Any = owner.stmt.compile(dialect=dialect)
        if (compiled.positional or compiled.escaped_bind_names or compiled.post_compile_params
                or compiled.literal_execute_params or getattr(compiled, "_render_postcompile", False)):
            return None  # SQLAlchemy rewrites the SQL or the parameters per execution: its path
        binds = dict(compiled._bind_processors)
        construct = compiled.construct_params

        def params(given: Mapping[str, Any]) -> dict[str, Any]:
            values: dict[str, Any] = construct(given)
            for name, process in binds.items():
                if name in values:
                    values[name] = process(values[name])
            return values

        return cls(owner, dialect, compiled.string, params)

    def all(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        """The rows for ``params`` (from :attr:`params`)."""
        raw: Any = conn.connection.dbapi_connection
        try:
            with raw.cursor() as cur:
                cur.execute(self.sql, params)
                data = cur.fetchall()
                if self.processors is None:
                    self.processors = self._processors(cur.description)
                in_utc = raw.info.timezone is UTC
        except self.error as e:
            disconnected = self.dialect.is_disconnect(e, raw, None)
            if disconnected:
                conn.invalidate(e)
            raise DBAPIError.instance(self.sql, params, e, self.error, connection_invalidated=disconnected,
                                      dialect=self.dialect) from e
        processors = self.in_utc_processors if in_utc else self.processors
        make = self.owner.row._make
        if not processors:
            return [make(r) for r in data]
        out = []
        for r in data:
            values = list(r)
            for i, p in processors:
                values[i] = p(values[i])
            out.append(make(values))
        return out

    def _processors(self, description: Any) -> list[tuple[int, Callable[[Any], Any]]]:
        """The columns' result processors; and, in :attr:`in_utc_processors`, those left
        when the session's time zone is UTC: a :class:`UTCDateTime` read as ``timestamptz``
        then comes back aware in UTC, which its processor returns as it is."""
        names = tuple(d[0] for d in description)
        if names != self.owner.keys:  # pragma: no cover - labels are the keys (SELECT ... AS key)
            raise RuntimeError(f"unexpected columns {names} for {self.owner.keys}")
        out: list[tuple[int, Callable[[Any], Any]]] = []
        in_utc: list[tuple[int, Callable[[Any], Any]]] = []
        for i, (column, d) in enumerate(zip(self.owner.stmt.selected_columns, description, strict=True)):
            process = column.type._cached_result_processor(self.dialect, d[1])
            if process is not None:
                out.append((i, process))
                if not (isinstance(column.type, UTCDateTime) and d[1] == TIMESTAMPTZ_OID):
                    in_utc.append((i, process))
        self.in_utc_processors = in_utc
        return out
