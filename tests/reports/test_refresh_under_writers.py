"""A report served by a GET (the API's reader engine) brings the rollups up to date while
a run-cycle or another export writes: on SQLite it waits for the writer, it does not fail."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import Engine

from billing_engine.db import readers, transaction
from billing_engine.reports import rollups
from tests.factories import make_plan, make_subscription


def test_a_refresh_on_the_reader_engine_waits_for_a_writer_instead_of_failing(sqlite_engine: Engine,
                                                                              now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        plan = make_plan(s, now)
        make_subscription(s, now, plan=plan)
    rollups.refresh(sqlite_engine)  # the first build
    with transaction(sqlite_engine) as s:
        make_subscription(s, now, plan=plan, email="bo@example.com")  # new events: the next refresh folds them
    holding, done = threading.Event(), threading.Event()

    def writer() -> None:  # a run-cycle batch: holds the write lock for a moment, then commits
        with sqlite_engine.begin() as conn:
            conn.execute(text("UPDATE customers SET name = name"))
            holding.set()
            time.sleep(0.5)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert holding.wait(10)
    try:
        refreshed = rollups.refresh(readers(sqlite_engine), wall_clock=now + timedelta(days=1))
    finally:
        t.join()
    assert done.is_set()
    assert refreshed.folded > 0 and refreshed.folded_to > refreshed.folded_after  # it did fold the new events
    assert rollups.differences(sqlite_engine) == []
