"""Commands from a development checkout: nothing to export, and the scaffold's advice works as printed.

Each command runs in a fresh process with only PATH and HOME set, as a developer types it in a
new terminal; serving commands still refuse to start without a real SECRET_KEY.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.processes import ROOT


def clean_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **extra}


def manage(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_startplugins_printed_commands_work_as_printed_without_exporting_anything(tmp_path: Path):
    made = manage("startplugin", "weather_report", "--directory", str(tmp_path / "extra"))
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    steps = [line.strip() for line in lines[lines.index("next (from the project's folder):") + 1 :]]
    assert steps[0].startswith("export MODULE_PATH=")
    assert any(" -m pytest " in step for step in steps)
    # The register step needs a database: a migrated one of its own, so the checkout's is untouched.
    db_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrated = manage("migrate", "--noinput", "-v0", DB_CONNECTION=db_url)
    assert migrated.returncode == 0, migrated.stderr
    script = "set -e\n" + "\n".join(steps) + "\n"
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=clean_env(DB_CONNECTION=db_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, script + done.stdout + done.stderr
    assert "Hello, Ada! (3/3)" in done.stdout  # runplugin's log
    assert "2 passed" in done.stdout  # the scaffold's test
    assert "registered" in (done.stdout + done.stderr).lower()


def test_serving_still_refuses_to_start_without_a_real_secret_key(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    for command in (["runscheduler"], ["serve", "--port", "1"], ["check"]):
        done = manage(*command, DB_CONNECTION=db_url, timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.strip() == (
            "configuration error: SECRET_KEY is not set: set SECRET_KEY to a long random string "
            "(or DEBUG=true for a development key)"
        )
