"""Retries, cancellation and scheduler events on real runscheduler processes.

Three nodes share the work (PostgreSQL with ``DB_CONNECTION=postgres://...``, SQLite
otherwise): a ``*/2 * * * * *`` job runs on even seconds once per slot; a failing job with
``max_retries=2`` runs exactly three attempts of a slot, each after a longer delay; a cancel
reaches the run on whichever node runs it (over Redis, and through the database flag when
no message can arrive); a skipped slot is a line in the job's log.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from scheduler_app import services, slots
from scheduler_app.models import Job, JobRun, LogLine
from scheduler_app.services import JobSchedule
from tests.engine_support import CONTROL, finished_runs, probe_job, probe_plugin, redis_env, schedulers, user
from tests.processes import wait_until

__all__ = ["redis_env", "schedulers"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def with_schedule(job: Job, **fields: object) -> Job:
    services.update_job(job, schedule=JobSchedule(**{**vars(JobSchedule.of(job)), **fields}))
    return Job.objects.get(pk=job.pk)


def lines(run: JobRun) -> list[str]:
    return list(LogLine.objects.filter(run=run).order_by("seq").values_list("message", flat=True))


def test_three_nodes_even_seconds_retries_with_growing_delays_and_a_cancel(schedulers, redis_env):
    alice, bob = user("alice"), user("bob")
    plugin = probe_plugin(interval=3600)
    even = with_schedule(probe_job(alice, plugin), schedule="*/2 * * * * *", timezone="Europe/Paris")
    failing_plugin = probe_plugin(interval=3600, name="Control", package=CONTROL)
    # one slot a minute, the first a few seconds from now (a slot that comes due while the
    # nodes start is caught up): one slot and its retries in the window, without waiting up
    # to a whole interval for it
    soon = (datetime.now(UTC) + timedelta(seconds=5)).second
    failing = with_schedule(
        probe_job(alice, failing_plugin, mode="fail", message="boom"),
        schedule=f"{soon} * * * * *",
        max_retries=2,
        retry_delay_seconds=1,
        retry_max_delay_seconds=10,
    )
    nodes = [schedulers.start(f"trio-{i}", **redis_env) for i in range(3)]

    # the failing job's first slot, its two retries (1 s, then 2 s after a failure), and no fourth
    def three_attempts() -> bool:
        return JobRun.objects.filter(job=failing, attempt=3).exclude(finished_at=None).exists()

    wait_until(three_attempts, 60, "the third attempt of the failing job's slot")
    # a long run to cancel, on whichever node claims it
    slow = probe_job(bob, plugin, activate=False, mode="polite", seconds=60)
    queued = services.run_now(slow)
    wait_until(lambda: JobRun.objects.get(pk=queued.pk).status == JobRun.Status.RUNNING, 20, "the slow run to start")
    services.cancel_run(JobRun.objects.get(pk=queued.pk), bob)
    wait_until(lambda: JobRun.objects.get(pk=queued.pk).is_finished, 20, "the cancelled run to end")
    wait_until(lambda: len(finished_runs(even)) >= 4, 30, "four even-second runs")
    for node in nodes:
        node.stop()

    # even seconds, once per slot, across three nodes
    runs = finished_runs(even)
    assert all(slots.to_ms(r.slot) % 2000 == 0 for r in runs)
    assert max(Counter(slots.to_ms(r.slot) for r in runs).values()) == 1

    # exactly three attempts of the first slot, the delays growing
    first_slot = JobRun.objects.filter(job=failing, attempt=1).order_by("slot").first()
    assert first_slot is not None
    attempts = list(JobRun.objects.filter(job=failing, slot=first_slot.slot).order_by("attempt"))
    assert [(a.attempt, a.status, a.trigger) for a in attempts] == [
        (1, JobRun.Status.FAILED, JobRun.Trigger.SCHEDULE),
        (2, JobRun.Status.FAILED, JobRun.Trigger.RETRY),
        (3, JobRun.Status.FAILED, JobRun.Trigger.RETRY),
    ]
    gaps = [b.started_at - a.finished_at for a, b in pairwise(attempts)]
    assert gaps[0] >= timedelta(seconds=1) and gaps[1] >= timedelta(seconds=2)
    assert "retry (attempt 2) in 1 s" in "\n".join(lines(attempts[0]))
    assert "retry (attempt 3) in 2 s" in "\n".join(lines(attempts[1]))
    assert not any("retry (attempt 4)" in line for line in lines(attempts[2]))

    # the cancel reached the node that ran it
    cancelled = JobRun.objects.get(pk=queued.pk)
    assert (cancelled.status, cancelled.cancelled_by, cancelled.error) == (
        JobRun.Status.CANCELLED,
        bob,
        "cancelled by bob",
    )
    assert cancelled.finished_at - cancelled.cancel_requested_at < timedelta(seconds=5)
    assert not JobRun.objects.filter(job=slow, attempt__gt=1).exists(), "a cancelled run is not retried"


def test_a_cancel_without_any_message_arrives_through_the_database(schedulers):
    # no Redis: the in-memory layer cannot reach the scheduler process, the database flag does
    alice = user("alice")
    slow = probe_job(alice, probe_plugin(interval=3600), activate=False, mode="polite", seconds=60)
    node = schedulers.start("fallback")
    run = services.run_now(slow)
    wait_until(lambda: JobRun.objects.get(pk=run.pk).status == JobRun.Status.RUNNING, 20, "the run to start")
    services.cancel_run(JobRun.objects.get(pk=run.pk), alice)
    wait_until(lambda: JobRun.objects.get(pk=run.pk).is_finished, 20, "the run to end")
    node.stop()
    run.refresh_from_db()
    assert (run.status, run.error) == (JobRun.Status.CANCELLED, "cancelled by alice")
    assert any("cancelled by alice" in line for line in lines(run))


def test_a_skipped_slot_is_a_line_in_the_running_runs_log(schedulers):
    alice = user("alice")
    job = with_schedule(
        probe_job(alice, probe_plugin(interval=3600), mode="polite", seconds=3.5), schedule="* * * * * *"
    )
    node = schedulers.start("skips")
    wait_until(lambda: len(finished_runs(job)) >= 1, 30, "one finished run")
    node.stop()
    run = finished_runs(job)[0]
    skipped = [line for line in lines(run) if "skipped: this run is still going" in line]
    assert len(skipped) >= 2, lines(run)
