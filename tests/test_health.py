"""Health probes of real processes: /healthz and /readyz of a web process (503 naming what is
wrong), the probe port of a runscheduler node, and who may read /metrics."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import FAST, probe_job, probe_plugin, schedulers, user
from tests.processes import ManagedProcess, free_port, manage, wait_for_port, wait_until

__all__ = ["schedulers"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            status, body, kind = response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, body, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    return status, json.loads(body) if kind.startswith("application/json") else body.decode()


class Web:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[ManagedProcess] = []

    def start(self, name: str = "web", **env: str) -> str:
        port = free_port()
        env = {"SCHEDULER_EMBEDDED": "false", **FAST, **env}
        proc = manage(["serve", "--port", str(port)], self.tmp_path / f"{name}.log", **env)
        self.procs.append(proc)
        wait_for_port(port, 30)
        return f"http://127.0.0.1:{port}"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    servers = Web(tmp_path)
    yield servers
    for proc in servers.procs:
        proc.stop()
        print(proc.log_path.read_text(errors="replace"))


def test_readyz_answers_503_and_names_the_database_when_it_is_unreachable(web):
    closed = free_port()
    # A request waits up to DB_POOL_TIMEOUT for a pooled connection; neither start-up, nor the
    # probe, nor the exit may wait that long (wait_for_port gives up after 30 s).
    dead = f"postgres://postgres@127.0.0.1:{closed}/jobscheduler"
    base = web.start("nodb", DB_CONNECTION=dead, DB_POOL_TIMEOUT="120")
    assert get(f"{base}/healthz") == (200, {"status": "ok"})  # the process itself is fine
    status, body = get(f"{base}/readyz")
    assert status == 503
    assert body["status"] == "failing"
    assert "database" in body["failing"] and "scheduler_nodes" in body["failing"]
    assert "channel_layer" not in body["failing"]
    # "connection refused" at once, or (web processes borrow from a pool that keeps trying) a
    # timeout; either way the message names the database's address
    error = body["checks"]["database"]["error"]
    assert f"127.0.0.1:{closed}" in error or (str(closed) in error and "refused" in error), error
    assert body["checks"]["scheduler_nodes"]["error"] == "not checked: the database does not answer"
    assert web.procs[0].stop() == 0  # SIGTERM exits cleanly; no probe thread holds it up


def test_readyz_names_a_dead_channel_layer_and_a_missing_scheduler(web):
    base = web.start("noredis", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    status, body = get(f"{base}/readyz")
    assert status == 503
    assert body["failing"] == ["channel_layer", "scheduler_nodes"]
    assert body["checks"]["database"] == {"ok": True}
    assert "no live scheduler node" in body["checks"]["scheduler_nodes"]["error"]


def test_readyz_is_ok_with_a_live_scheduler_and_probes_skip_host_checks(web, schedulers):
    probe_job(user("alice"), probe_plugin(interval=1))
    schedulers.start("ready")
    base = web.start("ready")
    status, body = get(f"{base}/readyz", {"Host": "10.1.2.3:8000"})  # a kubelet probes the pod's address
    assert (status, body["status"], body["failing"]) == (200, "ok", [])
    assert body["checks"]["scheduler_nodes"]["live"] == 1


def test_a_scheduler_node_answers_its_probe_port(schedulers):
    port = free_port()
    proc = manage(
        ["runscheduler", "--node-name", "probed", "--health-port", str(port)],
        schedulers.tmp_path / "probed.log",
        **FAST,
    )
    schedulers.procs.append(proc)
    proc.wait_for_output("started in", 30)
    wait_for_port(port)
    status, body = get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200 and body["status"] == "ok" and body["node"].startswith("probed:")
    wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 10, "a ready node")
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and "jobscheduler_node_heartbeats_total" in text
    assert get(f"http://127.0.0.1:{port}/nope")[0] == 404


def test_a_probe_port_in_use_is_one_clear_error(schedulers, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = manage(["runscheduler", "--health-port", str(port)], tmp_path / "taken.log", **FAST)
        code = proc.proc.wait(60)
        proc.stop()
        output = proc.log_path.read_text()
    assert code != 0
    assert f"--health-port {port} on 127.0.0.1" in output and "Traceback" not in output


def test_metrics_are_for_the_token_or_allowed_addresses_only(web):
    base = web.start("metrics", METRICS_ALLOWED_ADDRESSES="10.0.0.0/8", METRICS_TOKEN="t0ken")
    assert get(f"{base}/metrics")[0] == 403  # loopback is not in the allowed networks
    assert get(f"{base}/metrics", {"Authorization": "Bearer wrong"})[0] == 403
    status, text = get(f"{base}/metrics", {"Authorization": "Bearer t0ken"})
    assert status == 200 and "jobscheduler_websocket_connections" in text
