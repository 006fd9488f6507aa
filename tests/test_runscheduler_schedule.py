"""runscheduler runs every active job of every enabled plugin on its slots and records it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler_app import slots
from scheduler_app.models import Job, JobRun, LogLine, Plugin, SchedulerNode
from tests.engine_support import (
    CONTROL,
    PROBE,
    finished_runs,
    lines_of,
    probe_job,
    probe_lines,
    probe_plugin,
    runs_of,
    schedulers,
    user,
)
from tests.processes import wait_until

__all__ = ["schedulers"]

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_runs_active_jobs_on_their_slots_and_records_them(schedulers):
    alice, bob = user("alice"), user("bob")
    plugin = probe_plugin(interval=1)
    a = probe_job(alice, plugin, lines=2)
    b = probe_job(bob, plugin, lines=1)
    idle = probe_job(alice, plugin, activate=False)
    node = schedulers.start("schedule")

    wait_until(lambda: len(finished_runs(a)) >= 3 and len(finished_runs(b)) >= 3, 20, "three runs of each job")
    node.stop()

    assert runs_of(idle) == []
    for job, expected_lines in ((a, 2), (b, 1)):
        done = finished_runs(job)
        for run in done:
            assert run.status == JobRun.Status.SUCCEEDED, run.error
            assert run.trigger == JobRun.Trigger.SCHEDULE
            assert slots.is_slot(slots.to_ms(run.slot), job.pk, 1), "slots are deterministic"
            assert run.node.startswith("schedule:")
            assert run.plugin_package == PROBE
            assert run.started_at >= run.slot and run.finished_at >= run.started_at
            lines = lines_of(run)
            assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
            assert run.log_count == len(lines)
            # The scheduler may add an event line (a slot caught up or skipped under load); the rest
            # are the probe's.
            probe = probe_lines(run)
            assert len(probe) == expected_lines + 1, [line.message for line in lines]
            assert probe[0].message.startswith("probe line 1 of")
            assert probe[-1].message == "probe done"
        slot_ms = [slots.to_ms(r.slot) for r in done]
        assert len(set(slot_ms)) == len(slot_ms)
    stopped = SchedulerNode.objects.get(name__startswith="schedule:")
    assert stopped.stopped_at is not None


def test_a_disabled_plugin_schedules_nothing(schedulers):
    alice = user("alice")
    off = probe_plugin(interval=1, enabled=False)
    job = probe_job(alice, off)
    node = schedulers.start("disabled")
    node.wait_for_output("0 active jobs")
    assert runs_of(job) == []


def test_the_scheduler_warns_when_logs_cannot_reach_browsers(schedulers):
    node = schedulers.start("warn")
    assert "REDIS_URL is not set" in node.output()
    assert "will NOT reach browsers" in node.output()


def test_retention_prunes_old_runs_inside_the_scheduler(schedulers):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=3600), activate=False)
    now = timezone.now()
    for day in range(12):
        run = JobRun.objects.create(
            job=job, slot=now - timedelta(days=day, hours=1), status=JobRun.Status.SUCCEEDED, finished_at=now
        )
        LogLine.objects.create(run=run, seq=1, created_at=now, message="old")
    JobRun.objects.filter(slot__lt=now - timedelta(days=10)).update(finished_at=now - timedelta(days=11))
    node = schedulers.start("retention", SCHEDULER_RETAIN_DAYS="10", SCHEDULER_RETAIN_RUNS_PER_JOB="5")

    wait_until(lambda: JobRun.objects.count() == 5, 20, "retention to prune to 5 runs")
    node.wait_for_output("retention: deleted 7 old runs")
    assert LogLine.objects.count() == 5
    assert all((now - slot).days < 5 for slot in JobRun.objects.values_list("slot", flat=True))


def test_slots_missed_while_no_scheduler_ran_are_coalesced_into_one_run(schedulers):
    alice = user("alice")
    # An hourly job: its next regular slot is (almost surely) far off, so a run within the wait
    # below is the catch-up, without timing how fast a loaded machine starts it.
    job = probe_job(alice, probe_plugin(interval=3600))
    # The job has been active for five hours with nobody running it: five slots were missed.
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(hours=5))
    schedulers.start("catchup")

    wait_until(lambda: finished_runs(job), 20, "the catch-up run")
    started = SchedulerNode.objects.get(name__startswith="catchup:").started_at
    runs = runs_of(job)
    assert len(runs) == 1, "one run for all that was missed"
    first = runs[0]
    # The latest slot due when the node loaded the job, i.e. one missed while no scheduler ran
    # (the 1 s margin covers a slot falling between the node's start and its loading the job).
    assert slots.is_slot(slots.to_ms(first.slot), job.pk, 3600)
    assert started - timedelta(hours=1) < first.slot <= started + timedelta(seconds=1)


def test_a_job_changed_after_its_last_slot_waits_for_its_next_one(schedulers):
    alice = user("alice")
    plugin = probe_plugin(interval=3600)
    job = probe_job(alice, plugin)  # saved just now: nothing was missed
    # An interval whose next slot is over a minute away (slots are fixed per job id and
    # interval), so a run in the window below can only be a wrong catch-up.
    now_ms = slots.to_ms(timezone.now())
    interval = next(i for i in range(3600, 3700) if slots.slot_after(now_ms, job.pk, i) - now_ms > 60_000)
    Plugin.objects.filter(pk=plugin.pk).update(interval=interval)
    control = probe_job(user("bob"), probe_plugin(interval=1, package=CONTROL, name="Control"), lines=0)
    schedulers.start("nocatchup")
    # The node has run two slots of another job: it has long looked at this one.
    wait_until(lambda: len(finished_runs(control)) >= 2, 20, "two runs of the other job")
    assert runs_of(job) == []
