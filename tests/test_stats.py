"""Run statistics on the pages: each job's recent success rate and duration trend, from one
query per page whatever the length of the history."""

from __future__ import annotations

from datetime import timedelta

from django.test import Client
from django.utils import timezone

from scheduler_app import services, stats
from scheduler_app.models import JobRun


def add_runs(job, statuses, *, start=None, seconds=1.0):
    start = start or timezone.now() - timedelta(hours=1)
    runs = []
    for i, status in enumerate(statuses):
        slot = start + timedelta(seconds=10 * i)
        finished = status not in ("queued", "running")
        runs.append(
            JobRun(job=job, slot=slot, status=status, started_at=slot,
                   finished_at=slot + timedelta(seconds=seconds * (i + 1)) if finished else None)
        )  # fmt: skip
    JobRun.objects.bulk_create(runs)


def test_it_reads_the_recent_finished_runs_of_each_job_oldest_first(alice, sample_plugin):
    first = services.create_job(alice, sample_plugin, {})
    second = services.create_job(alice, sample_plugin, {})
    idle = services.create_job(alice, sample_plugin, {})
    add_runs(first, ["failed"] * 30 + ["succeeded", "failed", "succeeded", "timed_out", "running"])
    add_runs(second, ["succeeded", "cancelled", "succeeded"], seconds=2)
    recent = stats.recent_runs([first.pk, second.pk, idle.pk])
    assert recent[first.pk].count == stats.RECENT
    assert [s for s, _ in recent[first.pk].runs][-4:] == ["succeeded", "failed", "succeeded", "timed_out"]
    assert recent[first.pk].success_rate == 2 / 20
    assert recent[second.pk].runs == [("succeeded", 2.0), ("cancelled", 4.0), ("succeeded", 6.0)]
    assert recent[second.pk].success_percent == "100 %"  # cancelled runs are neither
    assert recent[idle.pk].count == 0 and recent[idle.pk].success_percent == "—"


def test_one_query_whatever_the_history(alice, sample_plugin, django_assert_num_queries):
    jobs = [services.create_job(alice, sample_plugin, {}) for _ in range(5)]
    for job in jobs:
        add_runs(job, ["succeeded"] * 3)
    with django_assert_num_queries(1):
        stats.recent_runs([j.pk for j in jobs])
    for job in jobs:
        add_runs(job, ["failed"] * 200, start=timezone.now() - timedelta(days=2))
    with django_assert_num_queries(1) as ctx:
        recent = stats.recent_runs([j.pk for j in jobs])
    assert "LIMIT" in ctx.captured_queries[0]["sql"]  # each job's part stops at RECENT rows
    assert all(r.count == stats.RECENT for r in recent.values())


def test_the_chart_is_an_escaped_inline_svg():
    chart = stats.sparkline(stats.JobStats(runs=[("succeeded", 1.0), ("failed", 3.0), ("lost", None)]))
    assert chart.startswith('<svg class="spark"') and chart.count("<rect") == 3
    assert "last 3 runs: 33 % succeeded" in chart  # lost counts as a failure
    assert "<script" not in chart


def test_dashboard_and_plugin_page_show_each_jobs_recent_runs(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {}, description="charted")
    add_runs(job, ["succeeded", "failed", "succeeded"])
    services.create_job(alice, sample_plugin, {}, description="fresh")
    client = Client()
    client.force_login(alice)
    for url in ("/", f"/plugins/{sample_plugin.pk}/"):
        page = client.get(url).content.decode()
        assert page.count('<svg class="spark"') == 1, url
        assert "67 %" in page and "no finished runs yet" in page
