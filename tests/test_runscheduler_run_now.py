""" "Run now": a queued manual run is claimed by a scheduler and recorded like any other."""

from __future__ import annotations

import pytest

from scheduler_app import services
from scheduler_app.models import JobRun
from tests.engine_support import lines_of, probe_job, probe_plugin, redis_env, schedulers, user
from tests.processes import wait_until

__all__ = ["redis_env", "schedulers"]

pytestmark = pytest.mark.django_db(transaction=True)


def _wait_finished(run: JobRun, timeout: float = 10) -> JobRun:
    wait_until(lambda: JobRun.objects.get(pk=run.pk).is_finished, timeout, f"run {run.pk} to finish")
    return JobRun.objects.get(pk=run.pk)


def test_run_now_is_claimed_through_the_notification(schedulers, redis_env):
    alice = user("alice")
    plugin = probe_plugin(interval=3600)
    job = probe_job(alice, plugin, activate=False, lines=2)  # inactive jobs can be run by hand
    schedulers.start("manual", **redis_env)

    run = _wait_finished(services.run_now(job))

    assert run.status == JobRun.Status.SUCCEEDED, run.error
    assert run.trigger == JobRun.Trigger.MANUAL
    assert run.node.startswith("manual:")
    assert run.started_at >= run.created_at
    assert [line.message for line in lines_of(run)][-1] == "probe done"
    assert run.log_count == 3


def test_run_now_without_notifications_is_found_by_the_poll(schedulers):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=3600), activate=False)
    schedulers.start("polling")  # in-memory layer: the notification cannot cross processes

    run = _wait_finished(services.run_now(job))
    assert run.status == JobRun.Status.SUCCEEDED, run.error


def test_a_manual_run_waits_while_the_job_is_running(schedulers, redis_env):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=3600), activate=False, mode="polite", seconds=2)
    schedulers.start("overlap", **redis_env)
    first = services.run_now(job)
    wait_until(lambda: JobRun.objects.get(pk=first.pk).status == JobRun.Status.RUNNING, 10, "the first run")

    second = services.run_now(job)
    assert JobRun.objects.get(pk=second.pk).status == JobRun.Status.QUEUED
    second = _wait_finished(second, 15)
    first = JobRun.objects.get(pk=first.pk)
    assert second.started_at >= first.finished_at, "a job never overlaps itself"
