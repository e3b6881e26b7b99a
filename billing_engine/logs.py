"""Structured logs (structlog over the standard ``logging`` module).

One configuration for the CLI and ``billing serve``: every record -- the engine's own
``logging.getLogger(...)`` calls, uvicorn's, SQLAlchemy's -- goes through the same chain:
context variables (``run_id``, ``worker_id`` bound by the run-cycle), ``extra=`` fields
(``subscription_id``, ``attempt_id`` on the charge path), level, logger, UTC timestamp,
then :class:`Redact`, then JSON (``BILLING_LOG_FORMAT=json``, the default when stderr
is not a terminal) or a readable console line.

Secrets and capability tokens never reach a line: configured secrets (admin tokens,
signing keys, the Stripe key, the webhook secret, the SMTP password) are masked
anywhere, and so are the shapes of such values whatever their source -- Stripe keys
(``sk_live_...``, ``rk_...``, ``whsec_...``), card tokens (``tok_...``, ``card_...``,
gateway ``pm_...`` tokens; the engine's own ``pm_<ULID>`` ids stay readable), signed
cancel links (``/cancel/<token>``), ``token=``-style query parameters, Bearer
credentials -- and the value of any field named like a secret (``token``, ``password``...).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import IO, Any

import structlog

MASK = "[redacted]"
HANDLER_NAME = "billing"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(/cancel/)[^/?#\s\"']+"), rf"\g<1>{MASK}"),
    (re.compile(r"([?&;](?:token|access_token|admin_token|api_key|apikey|key|secret|password|auth|authorization|"
                r"signature|sig)=)[^&;#\s\"']*", re.IGNORECASE), rf"\g<1>{MASK}"),
    (re.compile(r"(\bBearer\s+)[^\s\"',;]+", re.IGNORECASE), rf"\g<1>{MASK}"),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+"), MASK),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), MASK),
    (re.compile(r"\b(?:tok|card|src)_[A-Za-z0-9_]+"), MASK),
    (re.compile(r"\bpm_(?![0-9A-HJKMNP-TV-Z]{26}\b)[A-Za-z0-9_]+"), MASK),  # a gateway token, not our pm_<ULID>
)
SECRET_FIELDS = frozenset({
    "token", "tokens", "admin_token", "admin_tokens", "api_key", "stripe_api_key", "secret", "secret_key",
    "secret_keys", "password", "smtp_password", "authorization", "card_token", "gateway_token", "cancel_url",
    "cancel_link", "link", "webhook_secret", "stripe_webhook_secret", "signature",
})


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every configured secret and every secret-shaped value masked."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class Redact:
    """structlog processor: mask secrets in every value (and whole secret-named fields)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so a secret that contains another is masked whole
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value, self.secrets)
        if isinstance(value, dict):
            return {k: MASK if str(k).lower() in SECRET_FIELDS else self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def __call__(self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.startswith("_"):  # structlog's own bookkeeping (_record, _from_structlog)
                continue
            if key.lower() in SECRET_FIELDS:
                event_dict[key] = MASK
            else:
                event_dict[key] = self._clean(event_dict[key])
        return event_dict


def settings_secrets() -> list[str]:
    """Every secret the settings hold (masked wherever it would appear)."""
    try:
        from billing_engine.settings import get_settings

        s = get_settings()
    except Exception:  # invalid settings are reported elsewhere; logging must still work
        return []
    values = [*s.admin_secrets(), *s.signing_keys()]
    for secret in (s.stripe_api_key, s.stripe_webhook_secret, s.smtp_password, s.metrics_token):
        if secret is not None:
            values.append(secret.get_secret_value())
    return [v for v in values if v]


def _drop_color_message(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """uvicorn passes ``color_message`` (its message with ANSI colour codes) as an extra: a
    second, escape-laden copy of ``event`` in every JSON line of ``billing serve``."""
    event_dict.pop("color_message", None)
    return event_dict


def _pre_chain(secrets: Iterable[str]) -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        Redact(secrets),
    ]


def formatter(*, json: bool, secrets: Iterable[str] = ()) -> structlog.stdlib.ProcessorFormatter:
    """The ``logging.Formatter`` of every handler (also used by ``billing serve``'s uvicorn config)."""
    renderer: Any = (structlog.processors.JSONRenderer(sort_keys=False) if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_pre_chain(secrets),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def wants_json(fmt: str, stream: IO[str]) -> bool:
    """``auto``: JSON unless the stream is a terminal."""
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


_json_enabled = False


def json_enabled() -> bool:
    """Whether :func:`configure` sends JSON lines (stderr is not a terminal, or
    ``BILLING_LOG_FORMAT=json``): then a command's warnings must be log lines too, or a log
    file (cron, systemd, containers) stops being one JSON object per line."""
    return _json_enabled


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (test runners and
    progress bars swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def configure(*, level: str | None = None, fmt: str = "auto", secrets: Iterable[str] | None = None,
              stream: IO[str] | None = None) -> None:
    """Send every log record to ``stream`` (stderr) through the structlog chain. Idempotent:
    the handler it installs replaces the one a previous call installed.

    ``level`` None: INFO when the logs go to a pipe or file (cron, systemd, containers),
    WARNING on a terminal (where the command prints its own summary)."""
    global _json_enabled
    json = wants_json(fmt, stream or sys.stderr)
    _json_enabled = json
    secrets = list(settings_secrets() if secrets is None else secrets)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(json=json, secrets=secrets))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or ("INFO" if json else "WARNING")).upper())
    # alembic says "Context impl ..." each time a command checks the schema: noise below debug
    logging.getLogger("alembic").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
