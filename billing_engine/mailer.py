"""Customer e-mails: rendering (plain text + HTML alternative) and transports.

This module knows nothing about the database: ``billing_engine.notifications`` loads
the outbox row and its context, and calls :func:`render` and :func:`build_message`
here, then hands the message to a :class:`Transport`:

- :class:`SmtpTransport` — smtplib; plain, STARTTLS or implicit TLS, optional login;
  one connection reused for a batch.
- :class:`FileTransport` — writes ``.eml`` files into a directory (the demo, and for
  reading what would have been sent). Re-delivering a message overwrites its file.

Settings read here (all declared in :class:`~billing_engine.settings.Settings`):
``mail_transport`` (``smtp`` | ``file`` | ``none``), ``mail_dir``, the ``smtp_*``
settings, ``mail_from``, ``support_email``.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, select_autoescape

from billing_engine import i18n
from billing_engine.errors import ConfigurationError
from billing_engine.settings import Settings

TEMPLATE_DIR = Path(__file__).parent / "templates" / "email"
ONE_CLICK = "List-Unsubscribe=One-Click"
# Lines up to RFC 5322's hard limit: a long List-Unsubscribe URL must stay one
# unencoded token (the default 78 would RFC 2047-encode it and break the header).
_POLICY = policy.default.clone(max_line_length=998)


class DeliveryError(Exception):
    """The e-mail could not be handed over to the mail server."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        #: True when retrying cannot help (the server refused the recipient with 5xx)
        self.permanent = permanent


class Transport(Protocol):
    def send(self, message: EmailMessage) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


@lru_cache(maxsize=32)
def environment(lang: str = "en") -> Environment:
    """The template environment of one language: ``{% trans %}`` / ``_()`` in the
    templates come from that language's gettext catalog (:mod:`billing_engine.i18n`)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(i18n.catalog(lang), newstyle=True)  # type: ignore[attr-defined]
    return env


_env = environment("en")


def render(kind: str, context: dict[str, Any], lang: str = "en") -> Rendered:
    """Render ``<kind>.txt`` (its ``subject`` block is the subject) and ``<kind>.html``
    in ``lang``."""
    env = environment(lang)
    text_t = env.get_template(f"{kind}.txt")
    html_t = env.get_template(f"{kind}.html")
    subject = "".join(text_t.blocks["subject"](text_t.new_context(dict(context))))
    subject = re.sub(r"\s+", " ", subject).strip()
    context = {**context, "subject": subject}
    return Rendered(subject=subject, text=text_t.render(context), html=html_t.render(context))


def message_id_for(notification_id: str, settings: Settings) -> str:
    """A stable Message-ID: the same for every delivery attempt of one outbox row, so a
    receiver can drop a duplicate left by a crash between "sent" and "recorded"."""
    _, addr = parseaddr(settings.mail_from)
    domain = addr.rpartition("@")[2] or "billing.invalid"
    return f"<{notification_id}@{domain}>"


def build_message(
    *,
    notification_id: str,
    kind: str,
    to: str,
    rendered: Rendered,
    settings: Settings,
    now: datetime,
    cancel_url: str | None,
) -> EmailMessage:
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id_for(notification_id, settings)
    if settings.support_email:
        msg["Reply-To"] = settings.support_email
    if cancel_url:
        # RFC 2369 + RFC 8058: mail clients show an "unsubscribe" button that POSTs
        # "List-Unsubscribe=One-Click" to the cancel link (the same one-click cancel).
        msg["List-Unsubscribe"] = f"<{cancel_url}>"
        msg["List-Unsubscribe-Post"] = ONE_CLICK
    msg["X-Billing-Kind"] = kind
    msg["X-Billing-Notification-Id"] = notification_id
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


# --------------------------------------------------------------------------- transports


class SmtpTransport:
    """Deliver over SMTP. One connection is opened lazily and reused until :meth:`close`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_ssl: bool = False,
        timeout: float = 10.0,
        envelope_from: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.use_ssl = use_ssl
        self.timeout = timeout
        self.envelope_from = envelope_from
        self._smtp: smtplib.SMTP | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        password = settings.smtp_password
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=password.get_secret_value() if password is not None else None,
            starttls=settings.smtp_starttls,
            use_ssl=settings.smtp_ssl,
            timeout=settings.smtp_timeout,
            envelope_from=parseaddr(settings.mail_from)[1] or None,
        )

    def _connect(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.use_ssl:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if self.starttls and not self.use_ssl:
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password or "")
        except BaseException:
            _close_quietly(smtp)
            raise
        self._smtp = smtp
        return smtp

    def send(self, message: EmailMessage) -> None:
        to = [parseaddr(a)[1] for a in message.get_all("To", [])]
        try:
            smtp = self._connect()
            refused = smtp.send_message(message, from_addr=self.envelope_from, to_addrs=to)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            self.close()
            detail = "; ".join(f"{a}: {c} {m.decode(errors='replace') if isinstance(m, bytes) else m}"
                               for a, (c, m) in exc.recipients.items())
            raise DeliveryError(f"recipient refused: {detail}", permanent=all(c >= 500 for c in codes)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if refused:  # only with several recipients; we send to one
            raise DeliveryError(f"recipient refused: {refused}", permanent=True)

    def close(self) -> None:
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            _close_quietly(smtp)


def _close_quietly(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class FileTransport:
    """Write each message as ``<directory>/<notification id>-<kind>.eml`` (atomically)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, message: EmailMessage) -> Path:
        ident = str(message.get("X-Billing-Notification-Id") or message["Message-ID"]).strip("<>")
        kind = str(message.get("X-Billing-Kind") or "message")
        safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", f"{ident}-{kind}")
        return self.directory / f"{safe}.eml"

    def send(self, message: EmailMessage) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            target = self.path_for(message)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
            with os.fdopen(fd, "wb") as fh:
                fh.write(message.as_bytes())
            os.replace(tmp, target)
        except OSError as exc:
            raise DeliveryError(f"cannot write to {self.directory}: {exc}") from exc

    def close(self) -> None:
        return None


TRANSPORTS = ("smtp", "file", "none")


def build_transport(settings: Settings) -> Transport | None:
    """The configured transport; None for ``mail_transport=none`` (e-mails stay queued)."""
    name = settings.mail_transport.strip().lower()
    if name == "smtp":
        return SmtpTransport.from_settings(settings)
    if name == "file":
        return FileTransport(settings.mail_dir)
    if name == "none":
        return None
    raise ConfigurationError(f"invalid setting BILLING_MAIL_TRANSPORT: must be one of {', '.join(TRANSPORTS)}")
