"""The job rules in scheduler_app.services, against the real database."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from scheduler_app import services
from scheduler_app.models import Job, JobRun


def test_it_creates_a_job_with_a_validated_config(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "Ann"})
    assert job.config == {"name": "Ann", "times": 3}
    assert not job.active


def test_it_refuses_an_invalid_config_and_saves_nothing(alice, sample_plugin):
    with pytest.raises(services.ConfigValidationError) as exc:
        services.create_job(alice, sample_plugin, {"name": "", "times": 99})
    locs = {e.loc for e in exc.value.errors}
    assert locs == {("name",), ("times",)}
    assert Job.objects.count() == 0


def test_activation_swaps_atomically(alice, sample_plugin):
    first = services.create_job(alice, sample_plugin, {}, activate=True)
    second = services.create_job(alice, sample_plugin, {"name": "x"})
    services.activate_job(second)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.active, second.active) == (False, True)


def test_the_database_refuses_a_second_active_job_even_through_update(alice, sample_plugin):
    services.create_job(alice, sample_plugin, {}, activate=True)
    other = services.create_job(alice, sample_plugin, {})
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.filter(pk=other.pk).update(active=True)


def test_other_users_may_each_have_an_active_job(alice, bob, sample_plugin):
    services.create_job(alice, sample_plugin, {}, activate=True)
    services.create_job(bob, sample_plugin, {}, activate=True)
    assert Job.objects.filter(active=True).count() == 2


def test_clone_copies_config_inactive(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "Zed"}, description="orig", activate=True)
    copy = services.clone_job(job)
    assert copy.pk != job.pk and copy.config == job.config and not copy.active
    assert copy.description == "Copy of orig"


def test_run_now_queues_one_manual_run(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {})
    run = services.run_now(job)
    assert (run.status, run.trigger) == (JobRun.Status.QUEUED, JobRun.Trigger.MANUAL)
    with pytest.raises(services.JobRuleError):
        services.run_now(job)


def test_register_plugin_loads_the_code_and_takes_its_description(db):
    from tests.conftest import SAMPLE

    plugin = services.register_plugin(SAMPLE, interval=42)
    assert (plugin.package, plugin.interval, plugin.enabled) == (SAMPLE, 42, True)
    assert plugin.description
    with pytest.raises(services.JobRuleError, match="already registered"):
        services.register_plugin(SAMPLE, interval=5)


def test_register_plugin_refuses_code_that_does_not_load(db):
    from scheduler_app.models import Plugin
    from scheduler_app.plugin_host import PluginLoadError

    with pytest.raises(PluginLoadError, match="module not found"):
        services.register_plugin("plugins.nothing_here@v1_0_0.plugin.Plugin", interval=5)
    assert not Plugin.objects.exists()
