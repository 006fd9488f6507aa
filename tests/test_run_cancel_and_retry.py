"""Cancelling runs and queueing retries, from the service and the pages (the engine's side is
in test_runscheduler_retries.py): who may cancel, what a queued or running run becomes, "Run
again", and a retry being one row per (job, slot, attempt) that waits for its delay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from scheduler_app import claims, services
from scheduler_app.models import JobRun
from scheduler_app.services import JobRuleError

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(alice, sample_plugin):
    return services.create_job(alice, sample_plugin, {"name": "A"}, activate=True)


def running_run(job, node="node-1"):
    return JobRun.objects.create(job=job, slot=timezone.now(), status=JobRun.Status.RUNNING, node=node)


def test_cancelling_a_queued_run_ends_it_at_once_with_who(job, alice):
    run = services.run_now(job)
    services.cancel_run(run, alice)
    run.refresh_from_db()
    assert (run.status, run.cancelled_by, run.error) == (JobRun.Status.CANCELLED, alice, "cancelled by alice")
    assert run.finished_at is not None
    assert claims.queued_run_ids() == []


def test_cancelling_a_running_run_flags_it_for_its_node(job, alice, django_capture_on_commit_callbacks):
    run = running_run(job)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.cancel_run(run, alice)
    run.refresh_from_db()
    assert run.status == JobRun.Status.RUNNING and run.cancel_requested_at is not None and run.cancelled_by == alice
    assert len(callbacks) == 1  # the run.cancel message, sent after commit
    # the node's fallback check finds it
    assert claims.cancel_requests("node-1", [run.pk]) == {run.pk: "alice"}
    assert claims.cancel_requests("node-2", [run.pk]) == {}
    # asking twice is harmless
    services.cancel_run(run, alice)


def test_a_finished_run_cannot_be_cancelled(job, alice):
    run = JobRun.objects.create(job=job, slot=timezone.now(), status=JobRun.Status.SUCCEEDED)
    with pytest.raises(JobRuleError, match="already ended"):
        services.cancel_run(run, alice)


def test_one_row_per_job_slot_and_attempt(job):
    slot = timezone.now().replace(microsecond=0)
    JobRun.objects.create(job=job, slot=slot, status=JobRun.Status.FAILED)
    later = timezone.now() + timedelta(seconds=10)
    claims.queue_retry(job.pk, slot, 2, later, job.plugin.package)
    claims.queue_retry(job.pk, slot, 2, later, job.plugin.package)  # another node, same retry
    retries = JobRun.objects.filter(job=job, slot=slot, attempt=2)
    assert retries.count() == 1
    assert (retries[0].trigger, retries[0].status) == (JobRun.Trigger.RETRY, JobRun.Status.QUEUED)
    with pytest.raises(IntegrityError), transaction.atomic():
        JobRun.objects.create(job=job, slot=slot, attempt=1)


def test_a_retry_is_claimable_only_after_its_delay(job):
    slot = timezone.now().replace(microsecond=0)
    claims.queue_retry(job.pk, slot, 2, timezone.now() + timedelta(seconds=30), job.plugin.package)
    retry = JobRun.objects.get(attempt=2)
    assert claims.queued_run_ids() == []
    assert claims.queued_run_ids(now=timezone.now() + timedelta(seconds=31)) == [retry.pk]


# --- pages --------------------------------------------------------------------------------------


def test_the_run_page_cancels_and_runs_again(client, alice, job):
    client.force_login(alice)
    run = running_run(job)
    page = client.get(reverse("run", args=[run.pk])).text
    assert "Cancel run" in page and "Run again" in page and "1 of 1" in page
    response = client.post(reverse("run_cancel", args=[run.pk]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.cancel_requested_at is not None
    assert "cancel requested" in client.get(reverse("run", args=[run.pk])).text
    again = client.post(reverse("run_again", args=[run.pk]))
    queued = JobRun.objects.get(trigger=JobRun.Trigger.MANUAL)
    assert again.status_code == 302 and again["Location"] == reverse("run", args=[queued.pk])


def test_the_plugin_page_offers_to_cancel_the_running_run(client, alice, job, sample_plugin):
    client.force_login(alice)
    run = running_run(job)
    page = client.get(reverse("plugin", args=[sample_plugin.pk])).text
    assert f'data-cancel-run="{run.pk}"' in page
    response = client.post(
        reverse("run_cancel", args=[run.pk]), {"next": reverse("plugin", args=[sample_plugin.pk]) + f"#job-{job.pk}"}
    )
    assert response["Location"] == reverse("plugin", args=[sample_plugin.pk]) + f"#job-{job.pk}"
    # never a redirect off the site
    evil = client.post(reverse("run_cancel", args=[run.pk]), {"next": "https://evil.example/"})
    assert evil["Location"] == reverse("run", args=[run.pk])


def test_nobody_cancels_someone_elses_run(client, bob, job):
    client.force_login(bob)
    run = running_run(job)
    assert client.post(reverse("run_cancel", args=[run.pk])).status_code == 404
    assert client.post(reverse("run_again", args=[run.pk])).status_code == 404
    run.refresh_from_db()
    assert run.cancel_requested_at is None


def test_the_history_groups_attempts_under_their_slot(client, alice, job):
    client.force_login(alice)
    slot = timezone.now().replace(microsecond=0)
    for attempt in (1, 2, 3):
        JobRun.objects.create(job=job, slot=slot, attempt=attempt, status=JobRun.Status.FAILED)
    page = client.get(reverse("job_runs", args=[job.pk])).text
    assert page.count('class="slot-first"') == 1 and page.count('class="slot-retry"') == 2
    assert page.count("↳ same slot") == 2


def test_operators_cancel_runs_from_the_admin(client, staff, job):
    client.force_login(staff)
    queued = services.run_now(job)
    running = running_run(job)
    response = client.post(
        reverse("admin:scheduler_app_jobrun_changelist"),
        {"action": "cancel_runs", "_selected_action": [queued.pk, running.pk]},
        follow=True,
    )
    assert "2 runs cancelled or asked to stop" in response.text
    queued.refresh_from_db()
    running.refresh_from_db()
    assert queued.status == JobRun.Status.CANCELLED and queued.cancelled_by == staff
    assert running.cancel_requested_at is not None
