"""Plugin faults become recorded runs; the scheduler's loop goes on."""

from __future__ import annotations

import re

import pytest

from scheduler_app.models import Job, JobRun, Plugin
from tests.engine_support import (
    finished_runs,
    lines_of,
    probe_job,
    probe_plugin,
    runs_of,
    schedulers,
    user,
    wait_for_run,
)
from tests.processes import wait_until

__all__ = ["schedulers"]

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_raising_plugin_gives_a_failed_run_with_error_and_traceback(schedulers):
    alice, bob = user("alice"), user("bob")
    plugin = probe_plugin(interval=1)
    failing = probe_job(alice, plugin, mode="fail", message="the probe broke")
    healthy = probe_job(bob, plugin)
    schedulers.start("raise")

    run = wait_for_run(failing, status=JobRun.Status.FAILED)
    assert run.error == "RuntimeError: the probe broke"
    assert "Traceback" in run.traceback and "engine_probe" in run.traceback
    assert "the probe broke" in lines_of(run)[-1].message
    # The loop goes on: the same job keeps running on its next slots, and so do others.
    wait_until(lambda: len(finished_runs(failing)) >= 2 and len(finished_runs(healthy)) >= 2, 10, "more runs")
    assert all(r.status == JobRun.Status.SUCCEEDED for r in finished_runs(healthy))


def test_an_overrunning_run_is_cancelled_at_its_timeout(schedulers):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=1), timeout=1, mode="hang", seconds=30)
    schedulers.start("timeout")

    run = wait_for_run(job, timeout=15, status=JobRun.Status.TIMED_OUT)
    assert run.error == "timed out after 1 s (the job's timeout): cancelled"
    assert 0.9 <= (run.finished_at - run.started_at).total_seconds()
    assert "timed out" in lines_of(run)[-1].message


def test_a_run_that_ignores_its_cancellation_is_abandoned_and_the_job_goes_on(schedulers):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=1), timeout=1, mode="stubborn", seconds=30)
    node = schedulers.start("stubborn")

    run = wait_for_run(job, timeout=20, status=JobRun.Status.TIMED_OUT)
    assert "did not stop when cancelled" in run.error and "abandoned" in run.error
    assert "probe ignores the cancellation" in [line.message for line in lines_of(run)]
    # The job is not blocked by the abandoned coroutine: its next slots run.
    wait_until(lambda: len(runs_of(job)) >= 2, 15, "the next run of the job")
    assert "abandoned" in node.output()
    # SIGTERM stops the node at once although the abandoned coroutines go on: exit code 0, not
    # the SIGKILL after stop()'s 20 s that waiting for them (for 30 s) would bring.
    assert node.stop() == 0
    assert re.search(r"exiting with \d+ abandoned run\(s\) still going", node.log_path.read_text())


def test_a_stored_config_that_no_longer_validates_fails_the_run(schedulers):
    alice = user("alice")
    job = probe_job(alice, probe_plugin(interval=1))
    Job.objects.filter(pk=job.pk).update(config={"mode": "explode"})  # bypasses validation
    schedulers.start("badconfig")

    run = wait_for_run(job, status=JobRun.Status.FAILED)
    assert "stored config is no longer valid" in run.error
    assert "mode" in run.error


def test_a_plugin_that_does_not_import_fails_the_run(schedulers):
    alice = user("alice")
    plugin = Plugin.objects.create(name="Gone", package="tests.plugins.no_such@v1_0_0.plugin.Plugin", interval=1)
    job = Job.objects.create(user=alice, plugin=plugin, config={}, active=True)  # as if the code vanished later
    schedulers.start("noimport")

    run = wait_for_run(job, status=JobRun.Status.FAILED)
    assert run.error.startswith("the plugin's code does not load:")
    assert "no_such" in run.error


def test_a_plugin_blocking_the_loop_is_named_in_the_log(schedulers):
    alice, bob = user("alice"), user("bob")
    plugin = probe_plugin(interval=3)
    blocker = probe_job(alice, plugin, mode="block", seconds=1.5)
    healthy = probe_job(bob, plugin)
    node = schedulers.start("blocker")

    # Wait for the lines that name the plugin: on a loaded machine the start-up itself can block
    # the loop past the threshold first, and that report ("not by plugin code") is not this one.
    node.wait_for_output("event loop blocked for over 0.5 s by plugin tests.plugins.engine_probe@v1_0_0.plugin.Plugin",
                         timeout=20)  # fmt: skip
    wait_until(lambda: any("the event loop was blocked for" in line and "engine_probe" in line
                           for line in node.output().splitlines()), 10, "the lag report naming the plugin")  # fmt: skip
    assert "plugin.py" in node.output()
    run = wait_for_run(blocker, status=JobRun.Status.SUCCEEDED)
    assert any("blocking the scheduler's event loop" in line.message for line in lines_of(run))
    wait_until(lambda: finished_runs(healthy), 10, "other jobs to run")
