"""`billing serve` never writes a cancel token or an admin token to its logs."""

from __future__ import annotations

import logging
import logging.config
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli.serve import log_config

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "adm1n-t0ken-secret-xyz"
CANCEL_TOKEN = "eyJzdWIiOiJzdWJfMSJ9.ZXhwaXJlcw.c2lnbmF0dXJlLXNlY3JldA"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_access_log_of_billing_serve_has_no_tokens(tmp_path: Path) -> None:
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT),
           "BILLING_ADMIN_TOKENS": ADMIN_TOKEN}
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--log-level", "info"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        httpx.get(f"{base}/cancel/{CANCEL_TOKEN}")
        httpx.post(f"{base}/cancel/{CANCEL_TOKEN}/undo")
        httpx.get(f"{base}/v1/plans?token={ADMIN_TOKEN}")
        httpx.get(f"{base}/v1/plans?limit=1&x={ADMIN_TOKEN}")
        time.sleep(0.5)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    logs = out + err
    assert "/cancel/" in logs and "/v1/plans" in logs  # the requests were logged...
    assert CANCEL_TOKEN not in logs and ADMIN_TOKEN not in logs  # ...without their tokens
    assert "/cancel/[redacted]/undo" in logs


def test_every_handler_of_the_serve_log_config_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    config = log_config("info", [ADMIN_TOKEN])
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    before = logging.getLogger("uvicorn.access").handlers[:]
    logging.config.dictConfig(config)
    try:
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET",
                                                 f"/cancel/{CANCEL_TOKEN}?auth={ADMIN_TOKEN}", "1.1", 200)
        logging.getLogger("billing_engine.test").warning("Authorization: Bearer %s", "s3cr3t-bearer")
        logging.getLogger("uvicorn.error").info("hit /v1/x?key=abcd1234")
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "root": {"handlers": [], "level": "WARNING"}})
        logging.getLogger("uvicorn.access").handlers = before
    err = capsys.readouterr().err
    assert CANCEL_TOKEN not in err and ADMIN_TOKEN not in err
    assert "s3cr3t-bearer" not in err and "abcd1234" not in err
    assert "/cancel/[redacted]" in err and "200" in err
