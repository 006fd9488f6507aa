"""Support for the engine tests: the probe plugin, personas' jobs and real scheduler processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from jobscheduler.env import redis_channel_layer
from scheduler_app import services
from scheduler_app.models import Job, JobRun, LogLine, Plugin
from tests.processes import ManagedProcess, manage, wait_until

PROBE = "tests.plugins.engine_probe@v1_0_0.plugin.Plugin"
#: The probe again, as a second plugin (a job that keeps running while the test changes another).
CONTROL = "tests.plugins.engine_probe@v1_0_0.plugin.Control"
REDIS_URL = "redis://127.0.0.1:6379/0"

#: Fast knobs so the tests wait seconds, not minutes.
FAST = {
    "SCHEDULER_HEARTBEAT_SECONDS": "0.5",
    "SCHEDULER_LOST_AFTER_SECONDS": "3",
    "SCHEDULER_RECONCILE_SECONDS": "1",
    "SCHEDULER_GRACE_SECONDS": "2",
    "LOG_LEVEL": "INFO",
}


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def user(name: str) -> Any:
    return get_user_model().objects.create_user(name, f"{name}@example.com", f"{name}-pass")


def probe_plugin(interval: int = 1, **fields: Any) -> Plugin:
    fields = {"name": "Probe", "package": PROBE, **fields}
    return Plugin.objects.create(interval=interval, **fields)


def probe_job(owner: Any, plugin: Plugin, *, activate: bool = True, timeout: int | None = None, **config: Any) -> Job:
    return services.create_job(owner, plugin, config, timeout=timeout, activate=activate)


def runs_of(job: Job, **filters: Any) -> list[JobRun]:
    return list(JobRun.objects.filter(job=job, **filters).order_by("slot"))


def finished_runs(job: Job) -> list[JobRun]:
    return [r for r in runs_of(job) if r.is_finished]


def lines_of(run: JobRun) -> list[LogLine]:
    return list(LogLine.objects.filter(run=run).order_by("seq"))


#: How the scheduler's own lines in a run's log begin (skipped, caught-up and coalesced slots;
#: engine/schedule.py and engine/engine.py): tests that count a probe's lines leave them out.
SCHEDULER_EVENTS = ("caught up:", "coalesced:", "slot ")


def probe_lines(run: JobRun) -> list[LogLine]:
    """The run's log lines written by the plugin (not the scheduler's event lines)."""
    return [line for line in lines_of(run) if not line.message.startswith(SCHEDULER_EVENTS)]


def wait_for_run(job: Job, timeout: float = 15.0, **filters: Any) -> JobRun:
    found: list[JobRun] = []

    def check() -> bool:
        found[:] = runs_of(job, **filters)
        return bool(found)

    wait_until(check, timeout, f"a run of job {job.pk} with {filters}")
    return found[-1]


class Schedulers:
    """Starts ``runscheduler`` processes and stops every one of them after the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[ManagedProcess] = []

    def start(self, name: str = "node", wait: bool = True, **env: str) -> ManagedProcess:
        settings_env = {**FAST, **env}
        proc = manage(["runscheduler", "--node-name", name], self.tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.log",
                      **settings_env)  # fmt: skip
        self.procs.append(proc)
        if wait:
            proc.wait_for_output("started in", timeout=30)
        return proc

    def outputs(self) -> str:
        return "\n".join(
            f"--- {p.log_path.name} (pid {p.pid}) ---\n{p.log_path.read_text(errors='replace')}" for p in self.procs
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[Schedulers]:
    group = Schedulers(tmp_path)
    yield group
    group.stop_all()
    # pytest shows captured output only for failing tests: the schedulers' logs explain them.
    print(group.outputs())


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    """Redis as the channel layer in this process and in the schedulers, under a private prefix."""
    from django.test import override_settings

    prefix = f"enginetest{uuid.uuid4().hex[:8]}"
    # the product's layer configuration (redis-py 8's 5 s read timeout would break idle receives)
    layers = {"default": redis_channel_layer(REDIS_URL, prefix=prefix)}
    with override_settings(CHANNEL_LAYERS=layers):
        yield {"REDIS_URL": REDIS_URL, "CHANNEL_LAYER_PREFIX": prefix}
