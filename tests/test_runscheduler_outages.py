"""Outages: a database restart loses no buffered run or log line; a dead Redis costs only live streaming."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from jobscheduler.env import redis_channel_layer
from scheduler_app import streams
from scheduler_app.models import JobRun, LogLine
from tests.engine_support import (
    finished_runs,
    is_postgres,
    lines_of,
    probe_job,
    probe_lines,
    probe_plugin,
    schedulers,
    user,
)
from tests.processes import free_port, wait_until

__all__ = ["schedulers"]

pytestmark = pytest.mark.django_db(transaction=True)


def _can_restart_postgres() -> bool:
    cfg = connection.settings_dict
    return (
        is_postgres()
        and (cfg.get("HOST") or "") in {"127.0.0.1", "localhost"}
        and os.geteuid() == 0
        and shutil.which("pg_ctlcluster") is not None
    )


def _restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    connection.close()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=60)
    wait_until(lambda: subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0, 30, "PostgreSQL")


def _hold_sqlite_lock(seconds: float) -> None:
    """SQLite has no server to restart: hold its write lock instead, so every write waits."""
    with connection.cursor() as cursor:
        cursor.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        cursor.execute("COMMIT")


def _assert_complete(run: JobRun) -> None:
    assert [line.seq for line in lines_of(run)] == list(range(1, run.log_count + 1)), f"gap in run {run.pk}"


def test_a_database_outage_loses_no_run_record_or_log_line(schedulers):
    plugin = probe_plugin(interval=1)
    jobs = [probe_job(user(f"user{i}"), plugin, mode="polite", seconds=0.4, lines=3) for i in range(4)]
    node = schedulers.start("outage")
    wait_until(lambda: all(len(finished_runs(job)) >= 2 for job in jobs), 20, "runs before the outage")

    if _can_restart_postgres():
        _restart_postgres()
    else:
        assert not is_postgres(), "the PostgreSQL outage needs root and a local cluster (as in CI)"
        _hold_sqlite_lock(3)
    after = time.time()
    wait_until(
        lambda: all(any(r.started_at.timestamp() > after + 1 for r in finished_runs(job)) for job in jobs),
        30,
        "runs after the outage",
    )
    assert node.stop() == 0, node.output()

    runs = list(JobRun.objects.all())
    assert runs and all(run.is_finished for run in runs), "every claimed run was recorded to the end"
    assert {run.status for run in runs} == {JobRun.Status.SUCCEEDED}
    for run in runs:
        _assert_complete(run)
        assert len(probe_lines(run)) == 4  # three probe lines and "probe done" (+ any scheduler event line)
    assert LogLine.objects.count() == sum(run.log_count for run in runs)


async def _receive_lines(group: str, timeout: float) -> list[dict]:
    """The next ``log.lines`` batch of ``group``, received the way a web process does (live_bus)."""
    from channels.layers import get_channel_layer

    from scheduler_app import live_bus

    layer = get_channel_layer()
    bus = live_bus.bus_for(layer)
    received: asyncio.Queue[dict] = asyncio.Queue()
    await bus.subscribe(group, received.put_nowait)
    try:
        while True:
            message = await asyncio.wait_for(received.get(), timeout)
            if message["type"] == "log.lines":
                return message["lines"]
    finally:
        await bus.unsubscribe(group)
        await bus.close()
        await layer.close_pools()


def _redis_server(port: int, workdir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0,
               10, "redis")  # fmt: skip
    return proc


def test_a_dead_redis_costs_live_streaming_only_and_streaming_resumes(schedulers, tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = _redis_server(port, tmp_path)
    prefix = "outagetest"
    # the product's layer configuration (redis-py 8's 5 s read timeout would break idle receives)
    layers = {"default": redis_channel_layer(url, prefix=prefix)}
    try:
        with override_settings(CHANNEL_LAYERS=layers):
            alice = user("alice")
            plugin = probe_plugin(interval=1)
            job = probe_job(alice, plugin, lines=2)
            group = streams.log_group_name(plugin.pk, alice.pk)
            node = schedulers.start("streams", REDIS_URL=url, CHANNEL_LAYER_PREFIX=prefix)

            lines = asyncio.run(_receive_lines(group, 10))
            stored = {line.pk: line for line in LogLine.objects.filter(pk__in=[x["id"] for x in lines])}
            assert [stored[x["id"]].message for x in lines] == [x["message"] for x in lines]

            redis.terminate()
            redis.wait(10)
            node.wait_for_output("publishing to the channel layer failed", timeout=10)
            during = time.time()
            wait_until(lambda: any(r.started_at.timestamp() > during + 1 for r in finished_runs(job)), 10,
                       "runs while Redis is down")  # fmt: skip
            while_down = [r for r in finished_runs(job) if r.started_at.timestamp() > during]
            assert all(r.log_count == len(lines_of(r)) and len(probe_lines(r)) == 3 for r in while_down), (
                "lines are still stored"
            )

            redis = _redis_server(port, tmp_path)
            lines = asyncio.run(_receive_lines(group, 15))
            assert lines and all(x["run"] > while_down[0].pk for x in lines)
            node.wait_for_output("works again", timeout=10)
    finally:
        redis.terminate()
        redis.wait(10)
