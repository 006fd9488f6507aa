"""Invariants the database itself enforces: no form, no service, raw ORM writes only.

Each refused write runs in its own savepoint (``transaction.atomic``) so the test's
transaction stays usable after the IntegrityError, on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Model
from django.utils import timezone

from scheduler_app.models import Job, JobRun, LogLine, Plugin, SchedulerNode
from tests.conftest import SAMPLE


def refused(action) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        action()


# ---------------------------------------------------------------- plugins


def test_a_plugin_package_is_unique(sample_plugin):
    refused(lambda: Plugin.objects.create(name="again", package=SAMPLE, interval=5))


@pytest.mark.parametrize(
    "fields",
    [
        {"package": ""},
        {"interval": 0},
        {"interval": -1},
        {"timeout": 0},
        {"timeout": -10},
    ],
    ids=["empty-package", "zero-interval", "negative-interval", "zero-timeout", "negative-timeout"],
)
def test_the_database_refuses_a_meaningless_plugin(db, fields):
    row = {"name": "p", "package": "plugins.x@v1_0_0.plugin.Plugin", "interval": 10, "timeout": 60, **fields}
    refused(lambda: Plugin.objects.create(**row))
    assert not Plugin.objects.exists()


def test_update_cannot_break_a_plugin_either(sample_plugin):
    refused(lambda: Plugin.objects.filter(pk=sample_plugin.pk).update(interval=0))
    refused(lambda: Plugin.objects.filter(pk=sample_plugin.pk).update(package=""))
    sample_plugin.refresh_from_db()
    assert (sample_plugin.interval, sample_plugin.package) == (10, SAMPLE)


# ---------------------------------------------------------------- jobs


def test_at_most_one_active_job_per_user_and_plugin_through_a_raw_save(alice, sample_plugin):
    Job.objects.create(user=alice, plugin=sample_plugin, active=True)
    refused(lambda: Job.objects.create(user=alice, plugin=sample_plugin, active=True))
    second = Job.objects.create(user=alice, plugin=sample_plugin, active=False)
    second.active = True
    refused(second.save)
    assert Job.objects.filter(active=True).count() == 1


def test_at_most_one_active_job_through_update_and_bulk_create(alice, sample_plugin):
    Job.objects.bulk_create([Job(user=alice, plugin=sample_plugin) for _ in range(3)])
    refused(lambda: Job.objects.filter(user=alice).update(active=True))
    refused(lambda: Job.objects.bulk_create([Job(user=alice, plugin=sample_plugin, active=True) for _ in range(2)]))
    assert not Job.objects.filter(active=True).exists()


def test_inactive_jobs_and_other_users_and_plugins_are_free(alice, bob, sample_plugin, sample_v2_plugin):
    Job.objects.create(user=alice, plugin=sample_plugin, active=True)
    Job.objects.create(user=alice, plugin=sample_v2_plugin, active=True)
    Job.objects.create(user=bob, plugin=sample_plugin, active=True)
    Job.objects.bulk_create([Job(user=alice, plugin=sample_plugin) for _ in range(3)])
    assert Job.objects.filter(active=True).count() == 3 and Job.objects.count() == 6


def test_a_job_timeout_must_be_positive_when_set(alice, sample_plugin):
    refused(lambda: Job.objects.create(user=alice, plugin=sample_plugin, timeout=0))
    job = Job.objects.create(user=alice, plugin=sample_plugin, timeout=None)
    assert job.effective_timeout == sample_plugin.timeout


def test_a_plugin_with_jobs_cannot_be_deleted(alice, sample_plugin):
    from django.db.models import ProtectedError

    Job.objects.create(user=alice, plugin=sample_plugin)
    with pytest.raises(ProtectedError):
        sample_plugin.delete()


# ---------------------------------------------------------------- runs and log lines


@pytest.fixture
def job(alice, sample_plugin):
    return Job.objects.create(user=alice, plugin=sample_plugin, active=True)


def test_each_slot_of_a_job_runs_once(job, sample_plugin, bob):
    slot = timezone.now().replace(microsecond=0)
    JobRun.objects.create(job=job, slot=slot, node="a")
    refused(lambda: JobRun.objects.create(job=job, slot=slot, node="b"))
    refused(lambda: JobRun.objects.bulk_create([JobRun(job=job, slot=slot, node="c")]))
    # the next slot, and the same slot of another job, are separate claims
    JobRun.objects.create(job=job, slot=slot + timedelta(seconds=10))
    other = Job.objects.create(user=bob, plugin=sample_plugin, active=True)
    JobRun.objects.create(job=other, slot=slot)
    assert JobRun.objects.count() == 3


def test_a_log_line_sequence_number_is_unique_within_its_run(job):
    now = timezone.now()
    run = JobRun.objects.create(job=job, slot=now)
    other = JobRun.objects.create(job=job, slot=now + timedelta(seconds=1))
    LogLine.objects.create(run=run, seq=1, created_at=now, message="one")
    refused(lambda: LogLine.objects.create(run=run, seq=1, created_at=now, message="again"))
    LogLine.objects.create(run=other, seq=1, created_at=now, message="other run")
    assert [line.message for line in LogLine.objects.filter(run=run)] == ["one"]


def test_deleting_a_job_deletes_its_runs_and_their_lines(job):
    now = timezone.now()
    run = JobRun.objects.create(job=job, slot=now)
    LogLine.objects.create(run=run, seq=1, created_at=now, message="x")
    job.delete()
    assert not JobRun.objects.exists() and not LogLine.objects.exists()


def test_scheduler_node_names_are_unique_and_liveness_follows_the_heartbeat(db, settings):
    SchedulerNode.objects.create(name="host:1:abc")
    refused(lambda: SchedulerNode.objects.create(name="host:1:abc"))
    node = SchedulerNode.objects.get()
    assert node.is_alive
    node.last_heartbeat = timezone.now() - timedelta(seconds=settings.SCHEDULER["LOST_AFTER_SECONDS"] + 1)
    assert not node.is_alive
    node.last_heartbeat, node.stopped_at = timezone.now(), timezone.now()
    assert not node.is_alive


def test_run_duration(job):
    start = timezone.now()
    run = JobRun(job=job, slot=start, started_at=start, finished_at=start + timedelta(seconds=3))
    assert run.duration == timedelta(seconds=3)
    assert JobRun(job=job, slot=start, started_at=start).duration is None


# ---------------------------------------------------------------- indexes


def indexes(model: type[Model]) -> dict[tuple[str, ...], Any]:
    """Index and unique-constraint columns of ``model``'s table, as the database reports them."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return {tuple(info["columns"]): info for info in found.values() if info["index"] or info["unique"]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model, columns, why",
    [
        (Plugin, ("package",), "unique package; plugin lookup by package"),
        (Job, ("user_id", "plugin_id"), "a user's jobs of one plugin (the users' pages)"),
        (Job, ("active", "plugin_id"), "the engine loads the active jobs"),
        (JobRun, ("job_id", "slot"), "the claim: one run per (job, slot); a job's history"),
        (JobRun, ("status", "node"), "queued runs to claim; running runs of a dead node"),
        (JobRun, ("finished_at",), "retention deletes old runs"),
        (LogLine, ("run_id", "seq"), "replaying a run's log in order"),
        (SchedulerNode, ("name",), "a node updates its own heartbeat"),
        (SchedulerNode, ("last_heartbeat",), "finding dead nodes"),
    ],
)
def test_the_queries_of_the_pages_and_the_engine_have_indexes(model, columns, why):
    found = indexes(model)
    assert any(cols[: len(columns)] == columns for cols in found), (why, sorted(found))


@pytest.mark.django_db
def test_the_partial_unique_index_for_active_jobs_exists():
    found = indexes(Job)
    unique = [info for cols, info in found.items() if cols == ("user_id", "plugin_id") and info["unique"]]
    assert unique, sorted(found)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, index",
    [
        (
            lambda now: JobRun.objects.filter(finished_at__gte=now - timedelta(hours=1), finished_at__lte=now),
            "run_finished_idx",
        ),
        (lambda now: JobRun.objects.filter(cancelled_by__in=[1, 2]).order_by(), "run_cancelled_by_idx"),
    ],
    ids=["alerts read runs finished in a window", "a user's deletion clears cancelled_by"],
)
def test_the_partial_indexes_serve_their_queries(query, index):
    """``finished_at`` and ``cancelled_by`` are indexed only where set (fewer index entries per
    claimed and finished run); a comparison implies ``IS NOT NULL``, so the planner still uses them."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan TO off")  # an empty table: show the index is usable
        plan = query(timezone.now()).explain()
    assert index in plan, plan
