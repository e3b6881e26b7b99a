"""The shipped container and scheduler files, linted (Docker may not run here): a pinned
base image, a non-root user, the wheel installed, `billing` as entry point, a health
check; every `billing ...` command line in compose.yaml, cron, systemd and the CronJob is
a real command with real options, and every BILLING_* variable a real setting."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer._click import Context
from typer._click.exceptions import UsageError

from billing_engine.settings import Settings
from cli.main import app

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"BILLING_" + name.upper() for name in Settings.model_fields}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def check_billing_args(args: list[str]) -> None:
    """Parse ``billing ARGS`` with the real CLI: an unknown command or option fails."""
    cmd: Any = typer.main.get_command(app)
    rest = list(args)
    name = "billing"
    while hasattr(cmd, "list_commands"):  # a command group (billing, db, plan, ...): the next word names one
        assert rest and not rest[0].startswith("-"), f"no command in {args}"
        name = rest.pop(0)
        sub = cmd.get_command(Context(cmd), name)
        assert sub is not None, f"billing has no command {name!r} ({args})"
        cmd = sub
    cmd.make_context(name, rest)  # raises UsageError on an unknown option / missing value


def test_dockerfile_base_images_are_pinned() -> None:
    froms = [args.split()[0] for word, args in dockerfile() if word == "FROM"]
    assert froms
    for image in froms:
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image), image


def test_dockerfile_runs_as_non_root_with_the_billing_entry_point_and_a_health_check() -> None:
    steps = dockerfile()
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM"):]
    users = [args for w, args in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    words = [w for w, _ in final]
    assert words.index("USER") < words.index("ENTRYPOINT") and words.index("USER") < words.index("CMD")
    entry = json.loads(dict(final)["ENTRYPOINT"])
    assert entry == ["billing"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["billing"] == "cli.main:main"
    check_billing_args(json.loads(dict(final)["CMD"]))
    health = dict(final)["HEALTHCHECK"]
    assert "/healthz" in health and "CMD" in health
    assert any(w == "RUN" and "pip install" in a and ".whl" in a for w, a in final)  # the wheel, not the sources
    assert not any(w == "ADD" and "://" in a for w, a in steps)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())  # type: ignore[no-any-return]


def test_compose_has_postgres_api_and_a_scheduler_running_real_commands() -> None:
    services = compose()["services"]
    assert {"db", "api", "scheduler", "migrate"} <= set(services)
    assert services["db"]["image"].startswith("postgres:") and re.search(r":\d+\.\d+", services["db"]["image"])
    check_billing_args(services["api"]["command"])
    check_billing_args(services["migrate"]["command"])
    loop = services["scheduler"]["command"][0]
    runs = re.findall(r"billing ([^;]+);", loop)
    assert runs and "sleep" in loop
    for run in runs:
        assert run.split()[0] == "run-cycle"
        check_billing_args(shlex.split(run))
    env = dict(services["api"]["environment"])
    assert env["BILLING_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "healthcheck" not in services["api"] or not services["api"]["healthcheck"].get("disable")
    assert services["scheduler"]["healthcheck"]["disable"] is True  # no HTTP server there


def _billing_variables(text: str) -> set[str]:
    return set(re.findall(r"\bBILLING_[A-Z0-9_]+", text))


@pytest.mark.parametrize("path", ["compose.yaml", "deploy/billing.env.example", "deploy/kubernetes/cronjob.yaml",
                                  "deploy/billing.cron", "Dockerfile"])
def test_every_billing_variable_is_a_real_setting(path: str) -> None:
    unknown = _billing_variables((ROOT / path).read_text()) - SETTINGS
    assert not unknown, f"{path}: not settings: {unknown}"


def test_cron_systemd_and_kubernetes_run_real_commands() -> None:
    cron = [ln for ln in (ROOT / "deploy/billing.cron").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(cron) == 1 and cron[0].split()[:5] == ["*/5", "*", "*", "*", "*"]
    invocation = re.search(r"/opt/billing/bin/billing ([^>]+)", cron[0])
    assert invocation is not None
    check_billing_args(shlex.split(invocation.group(1)))
    for unit in ("billing-run-cycle.service", "billing-api.service"):
        text = (ROOT / "deploy/systemd" / unit).read_text()
        for line in re.findall(r"^Exec\w+=(\S+) (.*)$", text, re.M):
            assert line[0].endswith("/billing")
            check_billing_args(shlex.split(line[1]))
        assert "flock" not in text  # workers are safe in parallel
    timer = (ROOT / "deploy/systemd/billing-run-cycle.timer").read_text()
    assert "OnCalendar=*:0/5" in timer and "Persistent=true" in timer
    job = yaml.safe_load((ROOT / "deploy/kubernetes/cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Allow"
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    check_billing_args(container["args"])
    assert job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_checker_itself_refuses_a_wrong_option() -> None:
    with pytest.raises(UsageError):
        check_billing_args(["run-cycle", "--no-such-option"])
    with pytest.raises((UsageError, AssertionError)):
        check_billing_args(["no-such-command"])


def test_the_cron_line_run_as_written_leaves_a_json_lines_log_and_the_metrics(tmp_path: Path) -> None:
    """deploy/billing.cron's command, run by /bin/sh the way cron does (its own small
    environment, the settings sourced from the env file made from billing.env.example),
    with only the paths moved under tmp_path: the run completes, the log file is one JSON
    object per line (`jq .`, README "Logs") and the textfile has the run's metrics. Before,
    the summary table on stdout and plain "warning:" lines went into the same log."""
    import subprocess
    import sys

    [line] = [ln for ln in (ROOT / "deploy/billing.cron").read_text().splitlines() if ln and not ln.startswith("#")]
    fields = line.split(None, 6)
    assert fields[5] == "billing"  # /etc/cron.d format: the sixth field is the user
    command = fields[6]
    env_file = tmp_path / "billing.env"
    secret = "x" * 43
    example = (ROOT / "deploy/billing.env.example").read_text()
    filled = {"BILLING_SECRET_KEY": secret, "BILLING_ADMIN_TOKENS": f"ops:{secret}y", "BILLING_METRICS_TOKEN": secret + "z",
              "BILLING_GATEWAY": "fake", "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'billing.db'}"}
    lines = [f"{ln.split('=')[0]}={filled[ln.split('=')[0]]}" if ln.split("=")[0] in filled else ln
             for ln in example.splitlines()]
    assert "BILLING_DATABASE_URL" in example  # the walk-through fills it in (README "Production setup", step 3)
    env_file.write_text("\n".join([*lines, "BILLING_MAIL_TRANSPORT=none"]) + "\n")
    (tmp_path / "log").mkdir()
    (tmp_path / "textfile").mkdir()
    billing = Path(sys.executable).parent / "billing"
    for old, new in (("/etc/billing/billing.env", str(env_file)), ("/opt/billing/bin/billing", str(billing)),
                     ("/var/lib/node_exporter/textfile", str(tmp_path / "textfile")),
                     ("/var/log/billing", str(tmp_path / "log"))):
        assert old in command
        command = command.replace(old, new)
    cron_env = {"HOME": str(tmp_path), "LOGNAME": "billing", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(ROOT)}
    upgrade = subprocess.run(["/bin/sh", "-c", f"set -a; . {env_file}; set +a; {billing} db upgrade"],
                             env=cron_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    for _ in range(2):  # the second run appends to the same log
        p = subprocess.run(["/bin/sh", "-c", command], env=cron_env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and p.stdout == "" and p.stderr == "", (p.stdout, p.stderr)
    log = (tmp_path / "log" / "run-cycle.log").read_text()
    events = [json.loads(ln) for ln in log.splitlines()]  # every line is one JSON object
    finished = [e for e in events if e["event"] == "run-cycle: finished"]
    assert len(finished) == 2 and all(e["run_id"].startswith("run_") and e["worker_id"] for e in finished)
    assert any(e["event"].startswith("warning: BILLING_COMPANY_ADDRESS is not set") for e in events)
    assert "billing_run_last_completed_timestamp_seconds" in (tmp_path / "textfile" / "billing.prom").read_text()
