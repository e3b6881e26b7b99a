"""`billing serve`: the HTTP API (admin REST API, customer cancel pages, Stripe webhook)."""

from __future__ import annotations

import copy
from typing import Any

import typer

from cli.common import checked_settings, err_console, handle_errors, warn_branding


def log_config(log_level: str, secrets: list[str]) -> dict[str, Any]:
    """uvicorn's logging, with :class:`api.redaction.RedactTokens` on every handler (the
    access log included) and the application's own loggers sent to the same stderr."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": "api.redaction.RedactTokens", "secrets": list(secrets)}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_tokens"]
    config["root"] = {"handlers": ["default"], "level": log_level.upper()}
    return config


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @handle_errors
    def serve(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all; put TLS in front)."),
        port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
        workers: int = typer.Option(1, min=1, max=64, help="Worker processes."),
        log_level: str = typer.Option("info", help="critical | error | warning | info | debug."),
        proxy_headers: bool = typer.Option(False, help="Trust X-Forwarded-* from the reverse proxy."),
    ) -> None:
        """Serve the API with uvicorn. Admin endpoints need BILLING_ADMIN_TOKENS."""
        import uvicorn

        from api.app import create_app

        settings = checked_settings(serving_api=True)  # production: keys, admin tokens, gateway
        if log_level not in {"critical", "error", "warning", "info", "debug"}:
            from billing_engine.errors import ValidationError

            raise ValidationError("must be critical, error, warning, info or debug", field="--log-level")
        warn_branding(settings)
        if not settings.admin_secrets():
            err_console.print("[yellow]warning:[/] BILLING_ADMIN_TOKENS is not set: the admin API answers 503 "
                              "until it is (cancel pages and webhooks still work).", highlight=False)
        logging = log_config(log_level, settings.admin_secrets())
        if workers > 1:
            uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers,
                        log_level=log_level, proxy_headers=proxy_headers, log_config=logging)
        else:
            uvicorn.run(create_app(settings=settings), host=host, port=port, log_level=log_level,
                        proxy_headers=proxy_headers, log_config=logging)
