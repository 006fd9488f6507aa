"""``manage.py serve``: daphne and, when SCHEDULER_EMBEDDED is true, the engine in the same process."""

from __future__ import annotations

import signal
import socket
import urllib.request

import pytest

from scheduler_app.models import JobRun, SchedulerNode
from tests.engine_support import FAST, finished_runs, probe_job, probe_plugin, user
from tests.processes import free_port, manage, wait_for_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_serve_runs_the_web_and_the_embedded_scheduler_and_stops_cleanly(tmp_path):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=1), lines=1)
    port = free_port()
    server = manage(["serve", "--port", str(port)], tmp_path / "serve.log", SCHEDULER_EMBEDDED="true", **FAST)
    try:
        wait_for_port(port, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=10) as response:
            assert response.status == 200
        wait_until(lambda: len(finished_runs(job)) >= 2, 15, "the embedded scheduler to run the job")
        assert "REDIS_URL is not set" not in server.output(), "in one process the in-memory layer works"

        server.signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0, server.output()
    finally:
        server.stop()
    assert all(run.status == JobRun.Status.SUCCEEDED for run in finished_runs(job))
    assert JobRun.objects.filter(status=JobRun.Status.RUNNING).count() == 0
    node = SchedulerNode.objects.get()
    assert node.stopped_at is not None


def test_serve_without_the_embedded_scheduler_runs_no_jobs(tmp_path):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=1))
    port = free_port()
    server = manage(["serve", "--port", str(port)], tmp_path / "web.log", SCHEDULER_EMBEDDED="false", **FAST)
    try:
        wait_for_port(port, timeout=30)
        server.wait_for_output("not embedded")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=10) as response:
            assert response.status == 200
    finally:
        assert server.stop() == 0
    assert finished_runs(job) == [] and not SchedulerNode.objects.exists()


def test_serve_exits_non_zero_with_one_clear_line_when_its_port_is_taken(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        server = manage(["serve", "--port", str(port)], tmp_path / "taken.log", SCHEDULER_EMBEDDED="true", **FAST)
        try:
            code = server.proc.wait(60)
            output = server.output()
        finally:
            server.stop()
    assert code != 0, output
    assert f"port {port} on 127.0.0.1 is in use" in output
    assert "serving http" not in output, "it never claims to serve"
    assert not SchedulerNode.objects.exists(), "the embedded scheduler never started"
