"""`billing serve`: the HTTP API (admin REST API, customer cancel pages, Stripe webhook)."""

from __future__ import annotations

import copy
from typing import Any

import typer

from billing_engine.errors import ConfigurationError
from cli.common import checked_settings, handle_errors, warn, warn_branding

# the documented defaults (README "Serving"); api.serving is imported only by `billing serve`
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE = 5
DEFAULT_GRACEFUL_TIMEOUT = 30


def log_config(log_level: str, secrets: list[str], *, json: bool | None = None) -> dict[str, Any]:
    """uvicorn's logging, with :class:`api.redaction.RedactTokens` on every handler (the
    access log included), every line rendered by :mod:`billing_engine.logs` (JSON when
    stderr is not a terminal, see ``BILLING_LOG_FORMAT``) and the application's own
    loggers sent to the same stderr."""
    import sys

    from uvicorn.config import LOGGING_CONFIG

    from billing_engine import logs
    from billing_engine.settings import get_settings

    if json is None:
        json = logs.wants_json(get_settings().log_format, sys.stderr)
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": "api.redaction.RedactTokens", "secrets": list(secrets)}}
    structured = {"()": "billing_engine.logs.formatter", "json": json, "secrets": list(secrets)}
    config["formatters"] = {"default": structured, "access": dict(structured)}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_tokens"]
        handler["stream"] = "ext://sys.stderr"
    config["root"] = {"handlers": ["default"], "level": log_level.upper()}
    return config


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @handle_errors
    def serve(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all; put TLS in front)."),
        port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
        workers: int = typer.Option(
            1, min=1, max=64, help="Worker processes (default 1). Use one per CPU core (2 on a 2-core machine) on "
            "PostgreSQL and on a SQLite file (WAL: reads run in parallel, writes serialise whatever the count); "
            "never more than 1 for an in-memory SQLite database."),
        log_level: str = typer.Option("info", help="critical | error | warning | info | debug."),
        proxy_headers: bool = typer.Option(False, help="Trust X-Forwarded-* from the reverse proxy."),
        read_timeout: float = typer.Option(
            DEFAULT_READ_TIMEOUT, min=1, max=600,
            help="Seconds a client has to send a whole request (headers and body) from its first byte; "
            "slower ones are cut off."),
        keep_alive: int = typer.Option(DEFAULT_KEEP_ALIVE, min=1, max=600,
                                       help="Seconds an idle keep-alive connection stays open."),
        graceful_timeout: int = typer.Option(
            DEFAULT_GRACEFUL_TIMEOUT, min=1, max=3600,
            help="On SIGTERM: seconds in-flight requests may still take before they are cancelled."),
        limit_concurrency: int | None = typer.Option(
            None, min=1, help="Answer 503 beyond this many open connections per worker (default: no limit)."),
    ) -> None:
        """Serve the API with uvicorn. Admin endpoints need BILLING_ADMIN_TOKENS.

        SIGTERM/SIGINT drain: no new connections, in-flight requests finish (at most
        --graceful-timeout s), exit 0."""
        import gc

        gc.disable()  # while importing the server and the app: see cli/main.py
        try:
            from uvicorn.config import STARTUP_FAILURE
            from uvicorn.supervisors import Multiprocess

            from api import serving
            from api.app import create_app
        finally:
            gc.enable()

        settings = checked_settings(serving_api=True)  # production: keys, admin tokens, gateway
        if log_level not in {"critical", "error", "warning", "info", "debug"}:
            from billing_engine.errors import ValidationError

            raise ValidationError("must be critical, error, warning, info or debug", field="--log-level")
        # the branding warnings: each worker's app logs them at start-up (api.app.create_app); on a
        # terminal the supervisor says them once more, in plain words, before the workers' lines
        from billing_engine import logs

        if not logs.json_enabled():
            warn_branding(settings)
        if not settings.admin_secrets():
            warn("BILLING_ADMIN_TOKENS is not set: the admin API answers 503 until it is (cancel pages and "
                 "webhooks still work).")
        secrets = settings.admin_secrets() + ([settings.metrics_token.get_secret_value()]
                                              if settings.metrics_token else [])
        options: dict[str, Any] = {
            "host": host, "port": port, "workers": workers, "log_level": log_level, "proxy_headers": proxy_headers,
            "log_config": log_config(log_level, secrets), "timeout_keep_alive": keep_alive,
            "timeout_graceful_shutdown": graceful_timeout, "limit_concurrency": limit_concurrency,
        }
        if workers > 1:
            from api.app import check_can_start

            check_can_start(settings)  # what each worker does first: a bad setting fails here, once, exit 78
            # a worker answers the supervisor's health ping only once it has imported and built the app:
            # uvicorn's 5 s kills slow starters on a busy machine, over and over
            cfg = serving.config("api.serving:worker_app", factory=True, read_timeout=read_timeout,
                                 timeout_worker_healthcheck=60, **options)
            spread = serving.reuse_port_sockets(cfg, workers)  # one socket per worker (Linux), see there
            supervisor = (serving.SpreadMultiprocess(cfg, spread) if spread is not None
                          else Multiprocess(cfg, sockets=[cfg.bind_socket()]))
            supervisor.run()
            if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
                raise ConfigurationError("a worker could not start (its error is in the log above); the server stopped")
        else:
            cfg = serving.config(serving.freeze_heap(create_app(settings=settings)), read_timeout=read_timeout, **options)
            server = serving.DrainingServer(cfg)
            server.run()
            if not server.started:
                raise ConfigurationError(f"could not start the server on {host}:{port} (see the log)")
