"""The README's two commands and CI: what they promise a newcomer and the CI runner."""

from __future__ import annotations

import os
import re
import subprocess

from tests.processes import ROOT


def test_the_readme_quick_start_is_the_two_dev_sh_commands():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick_start, re.S)
    assert block, "the quick start lost its command block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["./dev.sh run", "./dev.sh test"]
    for login in ("`admin` | `admin`", "`alice` | `alice`", "`bob` | `bob`"):
        assert login in readme


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "exec ./dev.sh test" in script
    assert os.access(ROOT / ".ci" / "run", os.X_OK) and os.access(ROOT / "dev.sh", os.X_OK)


def dev_sh(*args: str) -> subprocess.CompletedProcess[str]:
    # A clean slate: the nested run picks its own test database names.
    drop = {"DB_CONNECTION", "DJANGO_SETTINGS_MODULE", "TEST_DB_SUFFIX", "CHANNEL_LAYER_PREFIX"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(
        ["./dev.sh", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,  # CI has no terminal
    )


def test_a_test_run_that_selects_nothing_fails_with_a_summary():
    # pytest exits 5 when nothing is collected; the test command must not pass on that.
    result = dev_sh("test", "-p", "no:cacheprovider", "-k", "no_test_is_called_like_this")
    assert result.returncode == 1, result.stdout + result.stderr
    summary = result.stderr.split("==> summary", 1)[1]
    assert "SQLite" in summary and "FAILED (no tests were collected)" in summary
    assert "PostgreSQL" in summary and "some tests FAILED" in summary


def test_dev_sh_explains_its_usage():
    result = dev_sh("bogus")
    assert result.returncode == 2 and "usage: ./dev.sh run" in result.stderr


def test_the_run_command_serves_the_login_page_and_the_admin_with_the_demo_data(tmp_path):
    import signal
    import sqlite3
    import urllib.request

    from tests.processes import free_port, wait_for_port

    port = free_port()
    drop = {"DB_CONNECTION", "DJANGO_SETTINGS_MODULE", "TEST_DB_SUFFIX", "REDIS_URL", "DEBUG", "SECRET_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["DB_CONNECTION"] = f"sqlite:///{tmp_path / 'jobs.db'}"  # not the developer's jobs.db
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["./dev.sh", "run", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for_port(port, timeout=120)
        base = f"http://127.0.0.1:{port}"
        login = urllib.request.urlopen(f"{base}/accounts/login/", timeout=10)
        assert login.status == 200 and b"<form" in login.read()
        admin_login = urllib.request.urlopen(f"{base}/admin/", timeout=10)  # redirected to the admin's login
        assert admin_login.status == 200 and "/admin/login/" in admin_login.url
        output = log.read_text()
        assert "loading the demo data" in output and re.search(r"Installed \d+ object\(s\)", output)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"./dev.sh run did not stop on SIGINT:\n{log.read_text()}") from None
    assert code == 0, log.read_text()
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("select count(*) from auth_user").fetchone()[0] == 3


def test_the_run_command_says_when_its_port_is_taken():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = dev_sh("run", "--port", str(port))
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr and "--port 8001" in result.stderr
