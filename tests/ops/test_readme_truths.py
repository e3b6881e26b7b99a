"""What README.md claims is what the code does: the settings table is the settings class,
the exit codes are the codes the CLI uses, every command but `serve` takes --json, every
admin POST takes Idempotency-Key, and no doc points outside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from typer._click import Context

from billing_engine import errors
from billing_engine.cycle import EXIT_CODES
from cli.main import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_settings_table_is_generated_from_the_settings_class() -> None:
    p = subprocess.run([sys.executable, str(ROOT / "scripts/settings_table.py"), "--check"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for branding in ("BILLING_COMPANY_NAME", "BILLING_SUPPORT_EMAIL", "BILLING_MAIL_FROM"):
        assert f"| `{branding}` |" in README
    assert "| `BILLING_CANCEL_LINK_MAX_AGE_DAYS` | `60` | ≥ 1, ≤ 400 |" in README  # limits are shown


def test_the_table_check_fails_when_they_differ(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import settings_table

    original = settings_table.README
    try:
        copy = tmp_path / "README.md"
        copy.write_text(README.replace("| `BILLING_COMPANY_NAME` |", "| `BILLING_COMPANY` |"))
        settings_table.README = copy
        assert settings_table.main(["--check"]) == 1
        settings_table.main(["--write"])
        assert settings_table.main(["--check"]) == 0 and "| `BILLING_COMPANY_NAME` |" in copy.read_text()
    finally:
        settings_table.README = original


def _subclasses(cls: type) -> list[type]:
    return [cls, *[s for sub in cls.__subclasses__() for s in _subclasses(sub)]]


def test_exit_codes_in_the_readme_are_the_codes_used() -> None:
    sentence = re.search(r"Exit codes: (.*?)\. ", README, re.S)
    assert sentence is not None
    documented = {int(n) for n in re.findall(r"\b(\d+) [a-z]", sentence.group(1))}
    used = {0, 2, 130}  # ok; usage errors (click); KeyboardInterrupt (cli.common.describe)
    used |= {c.exit_code for c in _subclasses(errors.BillingError)}  # 1 (base: internal), 2, 3, 4, 70, 75, 78
    used |= set(EXIT_CODES.values())  # run-cycle: 75, 78, 143
    assert documented == used


def _commands() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(Context(cmd)):
                walk(cmd.get_command(Context(cmd), name), [*path, name])
        else:
            out.append((" ".join(path), cmd))

    walk(typer.main.get_command(app), [])
    return out


def test_every_command_but_serve_takes_json() -> None:
    without = {name for name, cmd in _commands()
               if "--json" not in {o for p in cmd.params for o in getattr(p, "opts", [])}}
    assert without == {"serve"}
    assert "every command except `serve` also takes `--json`" in " ".join(README.split())


def test_every_admin_post_takes_idempotency_key() -> None:
    from api.app import create_app
    from billing_engine.db import make_engine
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.settings import load_settings

    app_ = create_app(settings=load_settings(env="test"), engine=make_engine("sqlite://"), gateway=FakeGateway())
    spec = app_.openapi()
    posts = {path: op for path, ops in spec["paths"].items() for m, op in ops.items() if m == "post"}
    missing = [path for path, op in posts.items()
               if not any(p["name"] == "Idempotency-Key" for p in op.get("parameters", []))]
    assert missing == ["/webhooks/stripe"]  # Stripe's event id is its idempotency key (README says so)
    assert "every admin POST accepts an `Idempotency-Key`" in " ".join(README.split())
    assert "webhook instead applies each event id once" in " ".join(README.split())


def test_docs_never_point_outside_the_repository() -> None:
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert "../shared" not in text and "/work/" not in text, doc
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a URL (mailto:, https:) is not a repository path
            resolved = (doc.parent / target).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{doc.name}: {target}"
        for path in re.findall(r"`((?:docs|deploy|bench|scripts|tests|fixtures)/[\w./-]+)`", text):
            assert (ROOT / path).exists() or any(ROOT.glob(path)), f"{doc.name}: `{path}` does not exist"
