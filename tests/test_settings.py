"""Settings from the environment: a malformed value stops start-up with one clear line.

Each case runs ``manage.py`` in a fresh subprocess with a clean environment (only what the
case sets), exactly as an operator would start it. The cases run concurrently once per module
to keep the suite fast; each test then reads its own result.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port

DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def run_manage(args: list[str], env: dict[str, str], timeout: float = 60) -> Outcome:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **env}
    proc = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def base_env(tmp: Path) -> dict[str, str]:
    """A valid production-like environment; each case breaks one variable of it."""
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DB_CONNECTION": f"sqlite:///{tmp / 'settings-check.db'}",
    }


# variable -> (value, what the message must say besides the variable's name)
MALFORMED: dict[str, tuple[str, str, str]] = {
    "debug-maybe": ("DEBUG", "maybe", "expected one of true/false"),
    "db-mysql": ("DB_CONNECTION", "mysql://u:p@h/db", "unsupported scheme 'mysql'"),
    "db-postgres-without-name": ("DB_CONNECTION", "postgres://h/", "the database name is missing"),
    "db-postgres-bad-port": ("DB_CONNECTION", "postgres://h:port/db", "the port is not a number"),
    "db-sqlite-without-path": ("DB_CONNECTION", "sqlite://", "expected sqlite:///"),
    "db-sqlite-in-memory": ("DB_CONNECTION", "sqlite:///:memory:", "an in-memory database is not supported"),
    "redis-http": ("REDIS_URL", "http://x", "expected redis://"),
    "time-zone-mars": ("TIME_ZONE", "Mars/Olympus", "expected an IANA time zone"),
    "module-path-missing": ("MODULE_PATH", "/nonexistent/plugins-folder", "is not a folder"),
    "secret-key-missing": ("SECRET_KEY", "", "SECRET_KEY is not set"),
    "heartbeat-not-a-number": ("SCHEDULER_HEARTBEAT_SECONDS", "fast", "expected a number"),
    "grace-negative": ("SCHEDULER_GRACE_SECONDS", "-1", "expected a number >= 0"),
    "retain-not-whole": ("SCHEDULER_RETAIN_RUNS_PER_JOB", "1.5", "expected a whole number"),
    "embedded-yesplease": ("SCHEDULER_EMBEDDED", "yesplease", "expected one of true/false"),
    "csrf-without-scheme": ("CSRF_TRUSTED_ORIGINS", "https://ok.example,jobs.example.com", "must start with http"),
    "hsts-negative": ("SECURE_HSTS_SECONDS", "-5", "expected a whole number >= 0"),
    "log-level-loud": ("LOG_LEVEL", "loud", "expected DEBUG, INFO"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    tmp = tmp_path_factory.mktemp("settings")
    jobs: dict[str, tuple[list[str], dict[str, str]]] = {}
    for case, (var, value, _) in MALFORMED.items():
        jobs[case] = (["check"], {**base_env(tmp), var: value})
    jobs["valid"] = (["check"], base_env(tmp))
    jobs["lost-after-too-short"] = (
        ["check"],
        {**base_env(tmp), "SCHEDULER_HEARTBEAT_SECONDS": "10", "SCHEDULER_LOST_AFTER_SECONDS": "15"},
    )
    jobs["debug-without-secret"] = (["check"], {**base_env(tmp), "DEBUG": "true", "SECRET_KEY": ""})
    # Nothing listens on a freshly freed port: the connection is refused.
    pg_down = f"postgres://jobs:hunter2@127.0.0.1:{free_port()}/jobscheduler"
    jobs["migrate-db-down"] = (["migrate", "--noinput"], {**base_env(tmp), "DB_CONNECTION": pg_down})
    jobs["migrate-sqlite-unopenable"] = (
        ["migrate", "--noinput"],
        {**base_env(tmp), "DB_CONNECTION": "sqlite:////nonexistent-folder/jobs.db"},
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(run_manage, args, env) for case, (args, env) in jobs.items()}
        return {case: future.result() for case, future in futures.items()}


def assert_one_clear_line(outcome: Outcome, *needles: str) -> str:
    lines = outcome.stderr.strip().splitlines()
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert len(lines) == 1, outcome.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_variable_stops_start_up_with_one_line_naming_it(outcomes, case):
    var, value, expected = MALFORMED[case]
    outcome = outcomes[case]
    assert outcome.returncode == 2, outcome
    line = assert_one_clear_line(outcome, "configuration error:", var, expected)
    if value:
        assert value.split(",")[-1] in line


def test_a_node_cannot_be_declared_dead_faster_than_two_heartbeats(outcomes):
    outcome = outcomes["lost-after-too-short"]
    assert outcome.returncode == 2, outcome
    assert_one_clear_line(outcome, "SCHEDULER_LOST_AFTER_SECONDS=15", "twice SCHEDULER_HEARTBEAT_SECONDS (10 s)")


def test_a_valid_environment_passes_the_check(outcomes):
    outcome = outcomes["valid"]
    assert outcome.returncode == 0, outcome
    assert "no issues" in outcome.stdout


def test_debug_gets_a_development_secret_key(outcomes):
    assert outcomes["debug-without-secret"].returncode == 0, outcomes["debug-without-secret"]


def test_an_unreachable_database_gives_one_line_without_the_password(outcomes):
    outcome = outcomes["migrate-db-down"]
    assert outcome.returncode == 1, outcome
    line = assert_one_clear_line(outcome, "database error", "DB_CONNECTION=postgres://jobs:***@127.0.0.1", "refused")
    assert "hunter2" not in line


def test_an_sqlite_file_that_cannot_be_opened_gives_one_line(outcomes):
    outcome = outcomes["migrate-sqlite-unopenable"]
    assert outcome.returncode == 1, outcome
    assert_one_clear_line(outcome, "database error", "/nonexistent-folder/jobs.db", "unable to open")


def documented_production_env() -> dict[str, str]:
    """The environment block of docs/deployment.md (after the ``production-env`` marker)."""
    text = DEPLOYMENT_DOC.read_text()
    match = re.search(r"<!-- production-env -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert match, "docs/deployment.md lost its <!-- production-env --> block"
    env = {}
    for line in match.group(1).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip()
    return env


def test_check_deploy_is_clean_under_the_documented_production_environment(tmp_path):
    env = documented_production_env()
    assert {"SECRET_KEY", "DB_CONNECTION", "REDIS_URL", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"} <= set(env)
    assert env.get("DEBUG", "false") == "false"
    assert env["DB_CONNECTION"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")
    # The doc shows how to generate the key, not a key: put a real one in its place.
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    # Paths on the production machine stand in for folders of this one.
    env["STATIC_ROOT"] = str(tmp_path / "static")
    if "MODULE_PATH" in env:
        (tmp_path / "extra-plugins").mkdir()
        env["MODULE_PATH"] = str(tmp_path / "extra-plugins")
    outcome = run_manage(["check", "--deploy", "--fail-level", "WARNING"], env)
    assert outcome.returncode == 0, outcome.stderr + outcome.stdout
    assert "System check identified no issues (0 silenced)." in outcome.stdout


# ---------------------------------------------------------------- database URLs, in-process


def test_database_urls_become_django_databases(tmp_path):
    from django.core.exceptions import ImproperlyConfigured

    from jobscheduler.env import parse_database_url

    relative = parse_database_url("sqlite:///data/jobs.db", base_dir=tmp_path)
    assert relative["ENGINE"] == "django.db.backends.sqlite3" and relative["NAME"] == str(tmp_path / "data/jobs.db")
    assert "journal_mode=WAL" in relative["OPTIONS"]["init_command"] and relative["OPTIONS"]["timeout"] == 30
    assert parse_database_url("sqlite:////var/lib/jobs.db", base_dir=tmp_path)["NAME"] == "/var/lib/jobs.db"
    pg = parse_database_url("postgres://us%40er:p%3Ass@db.internal:6432/jobs?sslmode=require", base_dir=tmp_path)
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql",
        "jobs",
        "us@er",
        "p:ss",
        "db.internal",
        "6432",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"} and pg["CONN_HEALTH_CHECKS"] is True and pg["CONN_MAX_AGE"] == 600
    for bad in ("", "jobs.db", "sqlite://", "sqlite:///", "mysql://h/db", "postgres://h/"):
        with pytest.raises(ImproperlyConfigured, match="DB_CONNECTION"):
            parse_database_url(bad, base_dir=tmp_path)


@pytest.mark.django_db
def test_the_database_is_set_up_for_the_web_and_the_scheduler_writing_at_once():
    from django.db import connection

    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0] == "wal"
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] == 30000
    else:
        assert connection.vendor == "postgresql"
        assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True


def test_the_redis_layer_outlasts_channels_redis_blocking_reads():
    from channels_redis.core import RedisChannelLayer

    from jobscheduler.env import redis_channel_layer

    layer = redis_channel_layer("redis://127.0.0.1:6379/0", prefix="p")
    host = layer["CONFIG"]["hosts"][0]
    # An idle BZPOPMIN waits brpop_timeout seconds; a socket timeout of the same length kills it.
    assert host["socket_timeout"] > RedisChannelLayer.brpop_timeout
    assert layer["CONFIG"]["prefix"] == "p"
