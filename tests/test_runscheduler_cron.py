"""runscheduler follows each job's own schedule (cron, intervals, jitter) through the slot
function of scheduler_app.schedules, on real processes and the real database."""

from __future__ import annotations

import pytest

from scheduler_app import schedules, services, slots
from scheduler_app.models import Job, JobRun
from scheduler_app.services import JobSchedule
from tests.engine_support import finished_runs, probe_job, probe_plugin, schedulers, user
from tests.processes import wait_until

__all__ = ["schedulers"]

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_six_field_cron_job_runs_on_even_seconds_once_per_slot_on_two_nodes(schedulers):
    alice = user("alice")
    plugin = probe_plugin(interval=3600)  # the plugin's own interval would give no run in this test
    job = probe_job(alice, plugin)
    services.update_job(job, schedule=JobSchedule(schedule="*/2 * * * * *", timezone="Europe/Paris"))
    first = schedulers.start("cron-a")
    second = schedulers.start("cron-b")

    wait_until(lambda: len(finished_runs(job)) >= 4, 30, "four runs of the cron job")
    first.stop()
    second.stop()

    runs = finished_runs(job)
    assert all(run.status == JobRun.Status.SUCCEEDED for run in runs), [r.error for r in runs]
    for run in runs:
        slot_ms = slots.to_ms(run.slot)
        assert slot_ms % 2000 == 0, f"{run.slot} is not on an even second"
        assert run.started_at >= run.slot
    slot_list = [slots.to_ms(r.slot) for r in runs]
    assert len(set(slot_list)) == len(slot_list), "each slot ran once across the two nodes"
    assert {r.node.split(":")[0] for r in runs} <= {"cron-a", "cron-b"}


def test_a_jittered_interval_job_runs_on_its_jittered_slots(schedulers):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=3600))
    services.update_job(job, schedule=JobSchedule(schedule="every 2s", jitter_seconds=1))
    node = schedulers.start("jitter")
    wait_until(lambda: len(finished_runs(job)) >= 3, 30, "three runs of the jittered job")
    node.stop()

    timing = schedules.Timing.of(job.pk, "every 2s", 3600, "UTC", 1)
    for run in finished_runs(job):
        slot_ms = slots.to_ms(run.slot)
        assert schedules.next_slot(timing, slot_ms - 1) == slot_ms, "the slot every node computes"


def test_a_schedule_change_applies_without_a_restart(schedulers):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=3600))
    node = schedulers.start("change", SCHEDULER_RECONCILE_SECONDS="1")
    node.wait_for_output("1 active jobs")
    assert finished_runs(job) == []
    services.update_job(Job.objects.get(pk=job.pk), schedule=JobSchedule(schedule="* * * * * *"))
    wait_until(lambda: len(finished_runs(job)) >= 2, 30, "runs every second after the change")
    node.stop()
    assert all(slots.to_ms(r.slot) % 1000 == 0 for r in finished_runs(job))
