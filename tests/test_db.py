"""Schema: migrations are idempotent, a new SQLite file migrates itself, settings errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from billing_engine.db import current_revision, ensure_schema, head_revision, make_engine, upgrade
from billing_engine.errors import ConfigurationError
from billing_engine.settings import load_settings


def test_brand_new_sqlite_file_is_migrated_on_first_use(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    ensure_schema(eng)
    assert current_revision(eng) == head_revision()
    assert {"subscriptions", "invoices", "payment_attempts", "consents"} <= set(inspect(eng).get_table_names())


def test_upgrade_twice_is_harmless(db_url: str) -> None:
    eng = make_engine(db_url)
    before, after = upgrade(eng)
    assert before == after == head_revision()


def test_invoice_is_unique_per_subscription_period_in_the_schema(db_url: str) -> None:
    eng = make_engine(db_url)
    uniques = inspect(eng).get_unique_constraints("invoices")
    assert any(set(u["column_names"]) == {"subscription_id", "period_start"} for u in uniques)


@pytest.mark.parametrize("env,needle", [
    ({"BILLING_DATABASE_URL": "mysql://x"}, "BILLING_DATABASE_URL"),
    ({"BILLING_GATEWAY": "paypal"}, "BILLING_GATEWAY"),
    ({"BILLING_DUNNING_SCHEDULE_DAYS": "3,1"}, "BILLING_DUNNING_SCHEDULE_DAYS"),
    ({"BILLING_SMTP_PORT": "http"}, "BILLING_SMTP_PORT"),
])
def test_invalid_setting_is_one_readable_line(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigurationError) as exc:
        load_settings()
    assert needle in str(exc.value) and "\n" not in str(exc.value)


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
