"""The pages' clear states: disabled plugins, configs a code change left invalid, failed runs,
saving before running, the dashboard's live state and the password page (Django's test client)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from scheduler_app import services
from scheduler_app.models import Job, JobRun


@pytest.fixture
def job(alice, sample_plugin) -> Job:
    return services.create_job(alice, sample_plugin, {"name": "Ann", "times": 2}, description="greeter")


def messages_in(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else ""


def test_a_disabled_plugin_stays_on_the_dashboard_marked_and_refuses_run_now_and_activate(
    alice_client, job, sample_plugin
):
    sample_plugin.enabled = False
    services.update_plugin(sample_plugin)
    body = alice_client.get("/").content.decode()
    assert "greeter" in body and "disabled by the operators" in body
    page = alice_client.get(f"/plugins/{sample_plugin.pk}/").content.decode()
    assert "data-plugin-disabled" in page
    assert f'action="/jobs/{job.pk}/run/"' not in page and f'action="/jobs/{job.pk}/activate/"' not in page
    # The service refuses too, whatever the page offers.
    response = alice_client.post(f"/jobs/{job.pk}/run/", follow=True)
    assert "disabled the plugin" in messages_in(response)
    response = alice_client.post(f"/jobs/{job.pk}/activate/", follow=True)
    assert "disabled the plugin" in messages_in(response)
    assert not JobRun.objects.exists() and not Job.objects.get(pk=job.pk).active
    with pytest.raises(services.JobRuleError, match="disabled"):
        services.run_now(job)


def test_a_config_the_plugin_no_longer_accepts_is_flagged_and_cannot_be_activated_or_run(
    alice_client, job, sample_plugin
):
    Job.objects.filter(pk=job.pk).update(config={"name": "Ann", "times": 99})  # what a code change leaves
    page = alice_client.get(f"/plugins/{sample_plugin.pk}/").content.decode()
    assert "data-config-problem" in page and "no longer fits" in page
    assert f'action="/jobs/{job.pk}/activate/"' not in page
    response = alice_client.post(f"/jobs/{job.pk}/activate/", follow=True)
    assert "no longer fits the plugin" in messages_in(response)
    response = alice_client.post(f"/jobs/{job.pk}/run/", follow=True)
    assert "no longer fits the plugin" in messages_in(response)
    assert not Job.objects.get(pk=job.pk).active and not JobRun.objects.exists()


def test_run_now_with_unsaved_edits_saves_them_first_then_runs(alice_client, job):
    response = alice_client.post(
        f"/jobs/{job.pk}/save/",
        {
            f"job-{job.pk}-description": "greeter",
            f"job-{job.pk}-config": json.dumps({"name": "Zed", "times": 1}),
            "run_after_save": "1",
        },
        follow=True,
    )
    assert Job.objects.get(pk=job.pk).config == {"name": "Zed", "times": 1}
    run = JobRun.objects.get(job=job)
    assert f"Saved “greeter”. Run #{run.pk}" in messages_in(response)
    # An invalid edit is neither saved nor run.
    response = alice_client.post(
        f"/jobs/{job.pk}/save/",
        {f"job-{job.pk}-config": json.dumps({"name": "", "times": 1}), "run_after_save": "1"},
    )
    assert response.status_code == 400 and "not saved (and not run)" in response.content.decode()
    assert JobRun.objects.filter(job=job).count() == 1


def test_a_failed_run_shows_the_error_and_only_the_plugins_frames(alice_client, job):
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/srv/jobscheduler/scheduler_app/engine.py", line 522, in _execute\n'
        "    await plugin.run(config=config, context=context)\n"
        '  File "/srv/jobscheduler/plugins/sample_plugin@v0_1_0/plugin.py", line 30, in run\n'
        "    raise RuntimeError('boom')\n"
        "RuntimeError: boom\n"
    )
    run = JobRun.objects.create(
        job=job,
        slot=timezone.now(),
        status=JobRun.Status.FAILED,
        error="RuntimeError: boom",
        traceback=trace,
        plugin_package=job.plugin.package,
    )
    body = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert "RuntimeError: boom" in body
    assert "sample_plugin@v0_1_0/plugin.py&quot;, line 30" in body or 'sample_plugin@v0_1_0/plugin.py", line 30' in body
    assert "/srv/jobscheduler" not in body and "engine.py" not in body
    assert "1 frame of the scheduler hidden" in body


def test_the_dashboard_state_gives_each_jobs_last_and_next_run(alice_client, job, bob):
    services.activate_job(job)
    run = JobRun.objects.create(
        job=job,
        slot=timezone.now() - timedelta(seconds=5),
        status=JobRun.Status.SUCCEEDED,
        started_at=timezone.now() - timedelta(seconds=4),
        finished_at=timezone.now() - timedelta(seconds=2),
    )
    state = alice_client.get("/state/").json()["jobs"][str(job.pk)]
    assert state["last_run"]["id"] == run.pk and state["last_run"]["status"] == "succeeded"
    assert state["last_run"]["url"] == f"/runs/{run.pk}/"
    assert state["next_run"] is not None and state["interval"] == job.plugin.interval
    other = Client()
    other.force_login(bob)
    assert other.get(f"/state/?user={job.user_id}").status_code == 404
    assert str(job.pk) not in other.get("/state/").json()["jobs"]


def test_every_page_links_to_a_password_page_in_the_sites_own_look(alice_client):
    assert 'href="/accounts/password_change/"' in alice_client.get("/").content.decode()
    page = alice_client.get("/accounts/password_change/").content.decode()
    assert "Change your password" in page and "Django administration" not in page


def test_a_runs_state_is_its_owners(alice_client, job, bob):
    run = JobRun.objects.create(job=job, slot=timezone.now(), status=JobRun.Status.RUNNING)
    assert alice_client.get(f"/runs/{run.pk}/state/").json()["run"]["status"] == "running"
    assert f'data-run-state="/runs/{run.pk}/state/"' in alice_client.get(f"/runs/{run.pk}/").content.decode()
    other = Client()
    other.force_login(bob)
    assert other.get(f"/runs/{run.pk}/state/").status_code == 404
