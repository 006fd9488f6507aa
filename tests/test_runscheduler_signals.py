"""Clean stop on SIGTERM/SIGINT, a second signal exits at once, and runs of a killed node become lost."""

from __future__ import annotations

import signal

import pytest

from scheduler_app import services
from scheduler_app.models import JobRun, SchedulerNode
from tests.engine_support import lines_of, probe_job, probe_plugin, schedulers, user
from tests.processes import wait_until

__all__ = ["schedulers"]

pytestmark = pytest.mark.django_db(transaction=True)


def _running(run: JobRun) -> bool:
    return JobRun.objects.get(pk=run.pk).status == JobRun.Status.RUNNING


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_lets_short_runs_finish_and_cancels_the_rest(schedulers, signum):
    alice, bob = user("alice"), user("bob")
    plugin = probe_plugin(interval=3600)
    short = probe_job(alice, plugin, activate=False, mode="hang", seconds=1)
    long = probe_job(bob, plugin, activate=False, mode="hang", seconds=60)
    node = schedulers.start("graceful", SCHEDULER_GRACE_SECONDS="2.5")
    short_run, long_run = services.run_now(short), services.run_now(long)
    wait_until(lambda: _running(short_run) and _running(long_run), 10, "both runs to start")

    node.signal(signum)
    assert node.proc.wait(20) == 0, node.output()

    short_run, long_run = JobRun.objects.get(pk=short_run.pk), JobRun.objects.get(pk=long_run.pk)
    assert short_run.status == JobRun.Status.SUCCEEDED, short_run.error
    assert long_run.status == JobRun.Status.CANCELLED
    assert "grace period" in long_run.error
    assert long_run.finished_at is not None
    assert "cancelled" in lines_of(long_run)[-1].message, "the log was flushed before exit"
    assert SchedulerNode.objects.get(name=long_run.node).stopped_at is not None


def test_a_second_signal_exits_at_once(schedulers):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=3600), activate=False, mode="hang", seconds=60)
    node = schedulers.start("impatient", SCHEDULER_GRACE_SECONDS="60")
    run = services.run_now(job)
    wait_until(lambda: _running(run), 10, "the run to start")

    node.signal(signal.SIGTERM)
    node.wait_for_output("stopping gracefully")
    node.signal(signal.SIGTERM)
    assert node.proc.wait(5) != 0
    assert "exiting at once" in node.output()


def test_runs_of_a_killed_node_are_marked_lost(schedulers):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=3600), activate=False, mode="hang", seconds=60)
    doomed = schedulers.start("doomed")
    run = services.run_now(job)
    wait_until(lambda: _running(run), 10, "the run to start")
    victim = JobRun.objects.get(pk=run.pk).node

    doomed.kill()  # SIGKILL: no chance to clean up
    schedulers.start("survivor")

    # Bound: LOST_AFTER (3 s here) + one heartbeat (0.5 s) after the last heartbeat.
    wait_until(lambda: JobRun.objects.get(pk=run.pk).status == JobRun.Status.LOST, 15, "the run to be marked lost")
    lost = JobRun.objects.get(pk=run.pk)
    assert victim in lost.error and "heartbeat" in lost.error
    assert lost.finished_at is not None
    dead = SchedulerNode.objects.get(name=victim)
    assert dead.stopped_at is None and (lost.finished_at - dead.last_heartbeat).total_seconds() >= 3
