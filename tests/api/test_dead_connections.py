"""PostgreSQL: the pool's connections die (server restart, ``pg_terminate_backend``) and
the API keeps answering -- without the round trip per request that ``pool_pre_ping`` cost.

A checkout now looks at the connection's socket instead (``billing_engine.db``): a backend
that was terminated, or a server that restarted, sent a message and closed it, so an idle
connection with something to read is dead and replaced before any query; a connection idle
for longer than ``IDLE_PING_SECONDS`` is pinged as before."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from billing_engine import db
from tests.api.conftest import AUTH, Clock, create_plan, make_client, subscribe


@pytest.fixture
def pings(pg_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The pings the pool sends (each one a round trip)."""
    sent: list[Any] = []
    real = pg_engine.dialect.do_ping

    def counting(dbapi_conn: Any) -> bool:
        sent.append(dbapi_conn)
        return real(dbapi_conn)

    monkeypatch.setattr(pg_engine.dialect, "do_ping", counting)
    return sent


def _terminate_backends(url: str) -> int:
    """pg_terminate_backend of every other connection to the test database (the pool's),
    waiting until each backend has exited (PostgreSQL >= 14: the timeout argument), so its
    goodbye is on the socket before the next request -- without the wait the request could
    race the signal, and then even the old per-checkout ping would have been too early."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            return len(c.execute(text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all())
    finally:
        admin.dispose()


def _hold_connections(engine: Engine, count: int) -> None:
    """Open ``count`` pool connections at once, so the pool keeps that many."""
    ready, release = threading.Barrier(count + 1), threading.Event()

    def hold() -> None:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
            ready.wait()
            release.wait()

    threads = [threading.Thread(target=hold) for _ in range(count)]
    for t in threads:
        t.start()
    ready.wait()
    release.set()
    for t in threads:
        t.join()


def test_requests_after_the_backends_are_terminated_get_200(pg_engine: Engine, pg_db_url: str, pings: list[Any],
                                                             gateway: Any, clock: Clock) -> None:
    with make_client(pg_engine, gateway, clock) as client:
        client.headers.update(AUTH)
        create_plan(client)
        sub = subscribe(client, email="dead@example.com")
        _hold_connections(pg_engine, 4)
        assert client.get("/v1/subscriptions").status_code == 200
        pings.clear()
        assert client.get(f"/v1/subscriptions/{sub['id']}").status_code == 200
        assert pings == []  # a live, recently used connection: no round trip before the query

        assert _terminate_backends(pg_db_url) >= 4
        # every request below may get a dead connection from the pool: none may fail
        for path in ["/v1/subscriptions", f"/v1/subscriptions/{sub['id']}", "/v1/plans", "/v1/subscriptions",
                     f"/v1/subscriptions/{sub['id']}", "/v1/plans"]:
            r = client.get(path)
            assert r.status_code == 200, r.text
        r = client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"kind": "voluntary", "reason": "other"})
        assert r.status_code == 200, r.text
        assert client.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "canceled"


def test_a_connection_idle_for_long_is_pinged_a_busy_one_is_not(pg_engine: Engine, pings: list[Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pg_engine.connect() as c:
        c.execute(text("SELECT 1"))
    with pg_engine.connect() as c:
        c.execute(text("SELECT 1"))
    assert pings == []
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    with pg_engine.connect() as c:
        c.execute(text("SELECT 1"))
    assert len(pings) == 1


def test_a_busy_server_keeps_its_connections(pg_engine: Engine) -> None:
    """The pool keeps what it opened (no connection opened and closed per request under load):
    20 threads asking at once get at most POOL_SIZE connections, all kept afterwards."""
    _hold_connections(pg_engine, db.POOL_SIZE)
    assert pg_engine.pool.checkedin() == db.POOL_SIZE  # type: ignore[attr-defined]
    opened: list[Any] = []
    event.listen(pg_engine, "connect", lambda *a: opened.append(a))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                with pg_engine.connect() as c:
                    c.execute(text("SELECT pg_sleep(0.005)"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert opened == []
    assert pg_engine.pool.checkedin() == db.POOL_SIZE  # type: ignore[attr-defined]


def test_list_and_show_read_without_begin_and_commit_on_postgresql(pg_engine: Engine, gateway: Any,
                                                                    clock: Clock) -> None:
    """Each statement of the list and show reads its own snapshot at READ COMMITTED, in a
    transaction or not: they run in autocommit mode, two round trips fewer."""
    with make_client(pg_engine, gateway, clock) as client:
        client.headers.update(AUTH)
        create_plan(client)
        sub = subscribe(client, email="rt@example.com")
        status: list[Any] = []
        event.listen(pg_engine, "before_cursor_execute",
                     lambda conn, cur, *a: status.append(conn.connection.dbapi_connection.autocommit))
        assert client.get("/v1/subscriptions").status_code == 200
        assert client.get(f"/v1/subscriptions/{sub['id']}").status_code == 200
        assert status and all(status)  # every statement in autocommit mode: no BEGIN sent
        status.clear()
        assert client.get("/v1/plans").status_code == 200  # other reads: transactions as before
        assert status and not any(status)


def test_the_pool_size_setting_caps_a_process_s_connections(pg_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """BILLING_DB_POOL_SIZE: the connections each process keeps and the most it opens (the
    sum over API workers and run-cycles must fit the server's max_connections)."""
    from billing_engine.settings import get_settings

    monkeypatch.setenv("BILLING_DB_POOL_SIZE", "4")
    get_settings.cache_clear()
    try:
        eng = db.get_engine(pg_db_url)
    finally:
        get_settings.cache_clear()
    try:
        opened: list[Any] = []
        event.listen(eng, "connect", lambda *a: opened.append(a))

        def work() -> None:
            with eng.connect() as c:
                c.execute(text("SELECT pg_sleep(0.05)"))

        threads = [threading.Thread(target=work) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(opened) <= 4  # twelve at once: four connections (one may be open from the schema check)
        assert eng.pool.checkedin() == 4  # type: ignore[attr-defined]
    finally:
        db._engines.pop(pg_db_url, None)
        eng.dispose()
