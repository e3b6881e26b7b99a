"""The import verbs the CLI and the API call: validate everything, then write in one
transaction (CSV) or page by page with a persisted cursor (Stripe)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from billing_engine.db import transaction
from billing_engine.imports import csv_source, writer


@dataclass
class Report:
    source: str
    dry_run: bool
    result: writer.Result
    unsupported: list[dict[str, Any]] = field(default_factory=list)  # objects that cannot be mapped, with why
    resumed_from: str | None = None
    charge_from: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "dry_run": self.dry_run, **self.result.as_dict(),
                "unsupported": self.unsupported, "resumed_from": self.resumed_from, "charge_from": self.charge_from,
                "would_create" if self.dry_run else "subscriptions_created": self.result.planned}


def import_csv(engine: Engine, text: str, *, now: datetime, default_gateway: str, dry_run: bool = False,
               charge_from: datetime | None = None, actor: str = "admin:import") -> Report:
    """Validate every row (:class:`csv_source.ImportInvalid` lists the bad ones, nothing
    written), then create what is missing in ONE transaction: all or nothing."""
    with transaction(engine) as session:
        records = csv_source.parse(session, text, default_gateway=default_gateway, charge_from=charge_from)
        result = writer.write(session, records, now=now, dry_run=dry_run, actor=actor,
                              plan_details=len(records) <= 200)
        if dry_run:
            session.rollback()
    return Report(source="csv", dry_run=dry_run, result=result, charge_from=charge_from)
