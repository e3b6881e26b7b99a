"""The incremental fold's tools: scratch tables for the keys a fold recomputes, a per-key
table brought to its recomputed rows by difference, and per-cell deltas (reports/rollups.py).

Why by difference: a run-cycle names every renewed subscription, but a renewal changes
almost none of their per-key rows (a subscriber event, a failed invoice, a cohort) and
only the last month of their paying runs. Each per-key table is therefore recomputed for
the keys named into a scratch table, compared with its current rows (``EXCEPT`` both ways)
and only the rows that differ are deleted / inserted; the per-day / per-month sums then
change by exactly those rows -- the days they name are summed again, or, for the per-month
tables whose months hold a large share of all customers, the cells move by the difference
(starts, ends, sizes), never by a whole month summed again.

Every statement is bounded by the keys of the fold (a scratch table, analysed on
PostgreSQL so that the planner probes the indexes instead of scanning the tables).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, delete, except_, insert, select, tuple_, type_coerce
from sqlalchemy.engine import Connection

PREFIX = "report_fold_"
COUNTED = {"preserve_rowcount": True}  # SQLAlchemy keeps an INSERT's rowcount only when asked


class Scratch:
    """Temporary tables of one fold, dropped at its end (``close``; PostgreSQL drops them at
    commit or rollback anyway, SQLite's are undone by a rollback)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.meta = MetaData()
        self.tables: list[Table] = []
        self.count: dict[str, int] = {}
        self.pg = conn.dialect.name == "postgresql"

    def _drop(self, name: str) -> None:
        schema = "pg_temp" if self.pg else "temp"
        self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {schema}.{name}")

    def table(self, name: str, *columns: Column[Any]) -> Table:
        t = Table(PREFIX + name, self.meta, *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DROP")
        if not self.pg:  # (on PostgreSQL the commit or rollback that ended the last fold dropped it)
            self._drop(t.name)
        t.create(self.conn)
        self.tables.append(t)
        return t

    def keys(self, name: str, rows: Any) -> Table:
        """A scratch table of distinct ids (``rows``: a select of one column), analysed;
        ``count[name]``: how many."""
        t = self.table(name, Column("id", String(40), primary_key=True))
        sub = rows.subquery()
        n = self.conn.execute(insert(t).from_select(["id"], select(sub.c[0]).where(sub.c[0].is_not(None))
                                                    .distinct()), execution_options=COUNTED).rowcount
        self.count[name] = int(n)
        if n:
            self.analyze(t)
        return t

    def key_list(self, name: str, ids: Iterable[str]) -> Table:
        """:meth:`keys` from values in hand."""
        t = self.table(name, Column("id", String(40), primary_key=True))
        rows = [(i,) for i in sorted(set(ids))]
        bulk_insert(self.conn, t, ["id"], rows)
        self.count[name] = len(rows)
        if rows:
            self.analyze(t)
        return t

    def like(self, name: str, source: Table, cols: Sequence[str]) -> Table:
        return self.table(name, *[Column(c, source.c[c].type) for c in cols])

    def analyze(self, t: Table) -> None:
        if self.pg:  # autovacuum never analyses a temporary table: the planner would guess
            self.conn.exec_driver_sql(f"ANALYZE {t.name}")

    def close(self) -> None:
        if not self.pg:
            for t in reversed(self.tables):
                self._drop(t.name)
        self.tables.clear()


SMALL = 2_000  # keys up to which a difference is taken in Python (fewer statements than scratch tables)


class Sync:
    """``table``'s rows in ``scope`` made equal to ``new`` (a select of ``cols``, in order),
    touching only the rows that differ. The difference is taken in SQL (``EXCEPT`` both ways
    into scratch tables) for many keys, in Python for a few (``keys``: how many), or given by
    the caller (``rows``: rows gone, rows come). :meth:`apply` writes it; :meth:`rows` reads it."""

    def __init__(self, scratch: Scratch, table: Table, name: str, cols: Sequence[str], pk: Sequence[str],
                 scope: Any, new: Any, *, keys: int = SMALL + 1,
                 rows: tuple[list[Any], list[Any]] | None = None) -> None:
        self.s, self.table, self.name, self.cols, self.pk = scratch, table, name, list(cols), list(pk)
        self.gone: Table | None = None
        self.came: Table | None = None
        conn = scratch.conn
        if rows is None and keys <= SMALL:
            typed = new.subquery()
            fresh = Counter(tuple(r) for r in conn.execute(
                select(*[type_coerce(typed.c[i], table.c[c].type) for i, c in enumerate(self.cols)])))
            have = Counter(tuple(r) for r in conn.execute(select(*[table.c[c] for c in self.cols]).where(scope)))
            rows = (list((have - fresh).elements()), list((fresh - have).elements()))
        if rows is not None:
            self.lists: tuple[list[Any], list[Any]] | None = rows
            self.n_gone, self.n_came = len(rows[0]), len(rows[1])
            if self.n_gone:
                self.gone = scratch.like(name + "_gone", table, self.cols)
                bulk_insert(conn, self.gone, self.cols, rows[0])
            if self.n_came:
                self.came = scratch.like(name + "_came", table, self.cols)
                bulk_insert(conn, self.came, self.cols, rows[1])
        else:
            self.lists = None
            fresh_t = scratch.like(name + "_new", table, self.cols)
            conn.execute(insert(fresh_t).from_select(self.cols, new))
            old = select(*[table.c[c] for c in self.cols]).where(scope)
            cur = select(*[fresh_t.c[c] for c in self.cols])
            self.gone = scratch.like(name + "_gone", table, self.cols)
            self.n_gone = conn.execute(insert(self.gone).from_select(self.cols, except_(old, cur)),
                                       execution_options=COUNTED).rowcount
            self.came = scratch.like(name + "_came", table, self.cols)
            self.n_came = conn.execute(insert(self.came).from_select(self.cols, except_(cur, old)),
                                       execution_options=COUNTED).rowcount
        if self.n_gone and self.gone is not None:  # (the delete below probes the table's key with these rows)
            scratch.analyze(self.gone)

    def apply(self) -> None:
        t, g = self.table, self.gone
        if self.n_gone and g is not None:  # first: a row come may take the key of a row gone
            if len(self.pk) == 1:
                k = self.pk[0]
                self.s.conn.execute(delete(t).where(t.c[k].in_(select(g.c[k]))))
            else:
                self.s.conn.execute(delete(t).where(
                    t.c[self.pk[0]].in_(select(g.c[self.pk[0]])),  # the leading key: an index probe
                    tuple_(*[t.c[k] for k in self.pk]).in_(select(*[g.c[k] for k in self.pk]))))
        if self.n_came and self.came is not None:
            self.s.conn.execute(insert(t).from_select(self.cols, select(*[self.came.c[c] for c in self.cols])))

    def rows(self) -> tuple[list[Any], list[Any]]:
        """The rows gone and come (tuples in the order of ``cols``)."""
        if self.lists is None:
            self.lists = tuple(  # type: ignore[assignment]
                [tuple(r) for r in self.s.conn.execute(select(*[t.c[c] for c in self.cols]))] if n and t is not None
                else [] for t, n in ((self.gone, self.n_gone), (self.came, self.n_came)))
        assert self.lists is not None
        return self.lists

    def values(self, col: str) -> set[Any]:
        """Distinct values of ``col`` over the rows gone and come (None left out)."""
        i = self.cols.index(col)
        gone, came = self.rows()
        return {r[i] for r in (*gone, *came) if r[i] is not None}

    def changed(self) -> bool:
        return bool(self.n_gone or self.n_came)


def bulk_insert(conn: Connection, table: Table, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert plain values (ints and strings): COPY on PostgreSQL (tens of thousands of rows
    in milliseconds, where an executemany spends them binding parameters), executemany else."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        return
    conn.execute(insert(table), [dict(zip(cols, r, strict=True)) for r in rows])


def apply_deltas(conn: Connection, table: Table, key: Sequence[str], value_cols: Sequence[str],
                 deltas: dict[tuple[Any, ...], list[int]], extra: dict[str, Any] | None = None) -> int:
    """Add ``deltas`` (key values -> one delta per value column) to the rows of ``table``
    (a row per key; ``extra``: more key columns with fixed values, e.g. ``day IS NULL``),
    inserting a missing row and deleting a row whose values all became 0. Returns the rows
    touched."""
    extra = extra or {}
    n = 0
    for k, d in deltas.items():
        if not any(d):
            continue
        where = [table.c[c] == v if v is not None else table.c[c].is_(None) for c, v in zip(key, k, strict=True)]
        where += [table.c[c] == v if v is not None else table.c[c].is_(None) for c, v in extra.items()]
        upd = table.update().where(*where).values({c: table.c[c] + dv for c, dv in zip(value_cols, d, strict=True)})
        if conn.execute(upd).rowcount == 0:
            conn.execute(insert(table).values({**dict(zip(key, k, strict=True)), **extra,
                                               **dict(zip(value_cols, d, strict=True))}))
        conn.execute(delete(table).where(*where, *[table.c[c] == 0 for c in value_cols]))
        n += 1
    return n


def add(deltas: dict[tuple[Any, ...], list[int]], rows: Iterable[Any], sign: int, width: int, at: int) -> None:
    """Accumulate ``sign * row[-1]`` into ``deltas[row[:-1]][at]`` (a vector of ``width``)."""
    for r in rows:
        vec = deltas.setdefault(tuple(r[:-1]), [0] * width)
        vec[at] += sign * int(r[-1] or 0)
