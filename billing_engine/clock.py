"""Which instant a run-cycle may run as of.

"Now" is a parameter (``billing run-cycle --at``, ``POST /v1/run-cycle {"at": ...}``) so a
year can be simulated in seconds. With real money that is dangerous: a typo
(2028 for 2026) would bill every subscription hundreds of periods ahead in one call. So
the CLI and API boundary (never ``run_cycle`` itself: the demo drives it directly) check
the instant against the wall clock here:

- an instant in the past is allowed (catch-up after cron was down);
- an instant later than the wall clock by more than :data:`FUTURE_TOLERANCE` is refused
  unless the caller asks for a simulation explicitly (``--simulate`` / ``"simulate": true``),
  except with the fake gateway outside production (demo, tests, development: no money moves);
- an instant outside :data:`EARLIEST` .. :data:`LATEST` is refused whatever the flags
  (calendar arithmetic would overflow; 422, never 500).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from billing_engine.errors import ValidationError

FUTURE_TOLERANCE = timedelta(minutes=5)  # clock skew between the caller and this host
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # as the API schemas (api/schemas.py)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)  # exclusive


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def check_run_instant(at: datetime, wall_now: datetime, *, gateway_name: str, simulate: bool,
                      production: bool = False, field: str = "at") -> None:
    """Refuse (``ValidationError`` naming ``field``) an instant a run-cycle must not run as of."""
    if not EARLIEST <= at < LATEST:
        raise ValidationError(f"{_iso(at)} is outside the supported range "
                              f"{EARLIEST.year}-01-01 .. {LATEST.year - 1}-12-31", field=field)
    ahead = at - wall_now
    if ahead <= FUTURE_TOLERANCE or simulate:
        return
    if gateway_name == "fake" and not production:
        return
    minutes = int(FUTURE_TOLERANCE.total_seconds() // 60)
    flag = "--simulate" if field.startswith("--") else '"simulate": true'
    raise ValidationError(
        f"{_iso(at)} is {_ahead(ahead)} after the current time {_iso(wall_now)} (more than {minutes} minutes): "
        f"a run-cycle with the {gateway_name} gateway would charge renewals before they are due; "
        f"pass {flag} to simulate on purpose", field=field)


def _ahead(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{delta.days} days"
    if delta >= timedelta(hours=2):
        return f"{int(delta.total_seconds() // 3600)} hours"
    return f"{int(delta.total_seconds() // 60)} minutes"


__all__ = ["EARLIEST", "FUTURE_TOLERANCE", "LATEST", "check_run_instant"]
