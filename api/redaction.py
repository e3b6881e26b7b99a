"""Secrets never reach a log line: :class:`RedactTokens` is a ``logging.Filter`` that
``billing serve`` installs on every log handler (uvicorn's access log included).

It masks the customer's signed token in ``/cancel/<token>/...`` paths, the value of
secret-looking query parameters (``token=``, ``access_token=``, ``key=``, ...), Bearer
credentials, and -- anywhere in the line -- every configured admin token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

MASK = "[redacted]"
_CANCEL = re.compile(r"(/cancel/)[^/?#\s\"']+")
_QUERY = re.compile(
    r"([?&;](?:token|access_token|admin_token|api_key|apikey|key|secret|password|auth|authorization|"
    r"signature|sig)=)[^&;#\s\"']*",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(\bBearer\s+)[^\s\"',;]+", re.IGNORECASE)


class RedactTokens(logging.Filter):
    def __init__(self, name: str = "", secrets: Iterable[str] = ()) -> None:
        super().__init__(name)
        # longest first, so a token that contains another is masked whole
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        text = _CANCEL.sub(rf"\g<1>{MASK}", text)
        text = _QUERY.sub(rf"\g<1>{MASK}", text)
        return _BEARER.sub(rf"\g<1>{MASK}", text)

    def _value(self, value: Any) -> Any:
        return self.redact(value) if isinstance(value, str) else value

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # uvicorn's access formatter reads the args (client, method, path, version, status)
            record.args = tuple(self._value(a) for a in record.args)
        else:  # a secret may straddle the format string and its args: redact the rendered line
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a broken log call must not break logging
                message = str(record.msg)
            record.msg = self.redact(message)
            record.args = None
        if record.exc_info and not record.exc_text:  # tracebacks may quote a URL
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True
