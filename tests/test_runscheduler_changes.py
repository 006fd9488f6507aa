"""Changes apply to a running scheduler without a restart: by notification, and by reconcile."""

from __future__ import annotations

import pytest
from django.utils import timezone

from scheduler_app import services, slots
from scheduler_app.models import Job, JobRun, Plugin
from tests.engine_support import (
    CONTROL,
    finished_runs,
    lines_of,
    probe_job,
    probe_plugin,
    redis_env,
    runs_of,
    schedulers,
    user,
)
from tests.plugins.helpers import module_path_fixture
from tests.processes import wait_until

__all__ = ["module_path_fixture", "redis_env", "schedulers"]

pytestmark = pytest.mark.django_db(transaction=True)


def _slots_after(job: Job, moment) -> list[JobRun]:
    """Runs of ``job`` whose slot came after ``moment`` (finished or not)."""
    return [r for r in runs_of(job) if r.slot > moment]


def _runs_after(job: Job, moment) -> list[JobRun]:
    return [r for r in finished_runs(job) if r.started_at > moment]


def test_service_changes_arrive_by_notification(schedulers, redis_env):
    # The reconcile is slowed to a minute: only the notification can explain what follows.
    node = schedulers.start("notified", SCHEDULER_RECONCILE_SECONDS="60", **redis_env)
    alice = user("alice")
    plugin = probe_plugin(interval=1)

    job = probe_job(alice, plugin, lines=1)  # created and activated through the service
    control = probe_job(user("bob"), plugin, lines=0)
    wait_until(lambda: finished_runs(job), 10, "the new job to run")

    services.update_job(job, config={"mode": "fast", "lines": 3})
    changed = timezone.now()
    wait_until(lambda: any(len(lines_of(r)) == 4 for r in _runs_after(job, changed)), 10, "the edited config")

    services.deactivate_job(job)
    wait_until(lambda: "1 removed" in node.output(), 10, "the deactivation")
    applied = timezone.now()
    # The other job keeps running: once it ran two slots after the change, so would have this one.
    wait_until(lambda: len(_slots_after(control, applied)) >= 2, 10, "two more slots of the other job")
    assert _slots_after(job, applied) == [], "nothing claimed after the deactivation applied"


def test_bulk_updates_are_caught_by_the_reconcile(schedulers):
    # No notification at all (in-memory layer, separate process): the reconcile finds it.
    alice, bob = user("alice"), user("bob")
    plugin = probe_plugin(interval=1)
    job = probe_job(alice, plugin, lines=1)
    other = probe_job(bob, plugin, activate=False)
    control = probe_job(user("carol"), probe_plugin(interval=1, package=CONTROL, name="Control"), lines=0)
    node = schedulers.start("reconciled")
    wait_until(lambda: finished_runs(job), 10, "the first run")

    Job.objects.filter(pk=job.pk).update(config={"mode": "fast", "lines": 2})
    changed = timezone.now()
    wait_until(lambda: any(len(lines_of(r)) == 3 for r in _runs_after(job, changed)), 10, "the bulk config change")

    # The config change above was reported with the same line: wait for one more report, or a
    # loaded machine checks runs that were claimed on the old 1 s schedule.
    reports = node.output().count("jobs added or changed")
    Plugin.objects.filter(pk=plugin.pk).update(interval=2)
    wait_until(lambda: node.output().count("jobs added or changed") > reports, 10, "the interval change")
    changed = timezone.now()
    # By slot, not start: a slot of the old schedule whose claim was in flight during the
    # reconcile starts after it (its slot was due before); every slot after it is on 2 s.
    wait_until(lambda: len([r for r in finished_runs(job) if r.slot > changed]) >= 2, 15, "runs on the new interval")
    for run in [r for r in finished_runs(job) if r.slot > changed]:
        assert slots.is_slot(slots.to_ms(run.slot), job.pk, 2)

    Job.objects.filter(pk=job.pk).update(active=False)
    Job.objects.filter(pk=other.pk).update(active=True)
    wait_until(lambda: finished_runs(other), 10, "the bulk-activated job to run")

    Plugin.objects.filter(pk=plugin.pk).update(enabled=False)
    wait_until(lambda: "removed; 1 active" in node.output(), 10, "the plugin disabled")
    applied = timezone.now()
    wait_until(lambda: len(_slots_after(control, applied)) >= 2, 10, "two more slots of the other plugin's job")
    assert [r for r in JobRun.objects.filter(job__plugin=plugin) if r.slot > applied] == []


def test_a_reloaded_plugin_runs_its_new_code(schedulers, module_path):
    # A plugin in a MODULE_PATH folder; the scheduler sees the folder through its environment.
    package = module_path.write_good(marker="first code")
    plugin = Plugin.objects.create(name="Reloadable", package=package, interval=1)
    job = services.create_job(user("alice"), plugin, {}, activate=True)
    node = schedulers.start("reloading", MODULE_PATH=str(module_path.path))
    wait_until(lambda: any("from first code" in line.message for r in finished_runs(job) for line in lines_of(r)),
               10, "the first code to run")  # fmt: skip

    module_path.write_good(marker="second code")
    services.reload_plugin(plugin)  # bumps code_version; the reconcile notices it
    reloaded = timezone.now()
    wait_until(lambda: any("from second code" in line.message for r in _runs_after(job, reloaded)
                           for line in lines_of(r)), 10, "the new code to run")  # fmt: skip
    assert "now runs code version 2" in node.output()
