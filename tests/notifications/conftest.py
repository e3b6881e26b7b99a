from __future__ import annotations

from collections.abc import Iterator

import pytest

from billing_engine.settings import Settings, load_settings
from tests.notifications.smtp_server import SmtpServer


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def settings(smtp: SmtpServer) -> Settings:
    return load_settings(
        smtp_host=smtp.host, smtp_port=smtp.port, smtp_timeout=5, mail_from="Newsletter <billing@news.example>",
        support_email="help@news.example", company_name="The Weekly", public_base_url="https://news.example",
        secret_key="test-secret-key-0123456789",
    )
