"""The users' pages through Django's test client: what they show and what their actions do."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from scheduler_app import selectors, services
from scheduler_app.models import Job, JobRun, LogLine, Plugin


@pytest.fixture
def job(alice, sample_plugin) -> Job:
    return services.create_job(alice, sample_plugin, {"name": "Ann", "times": 2}, description="greeter", activate=True)


def widget_configs(body: str) -> list[dict]:
    """The django-jsonform widget configs rendered in a page (data, schema, errorMap)."""
    return [json.loads(html.unescape(raw)) for raw in re.findall(r'data-django-jsonform="([^"]*)"', body)]


def test_the_login_page_logs_in_and_lands_on_the_dashboard(alice):
    client = Client()
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_logging_out_is_a_post(alice_client):
    assert alice_client.post("/accounts/logout/").status_code == 302
    assert alice_client.get("/").status_code == 302


def test_the_dashboard_lists_enabled_plugins_with_jobs_last_and_next_run(
    alice_client, job, sample_plugin, sample_v2_plugin
):
    Plugin.objects.create(name="Hidden", package="plugins.lab_plugin@v0_1_0.plugin.Plugin", interval=5, enabled=False)
    run = JobRun.objects.create(
        job=job,
        slot=timezone.now() - timedelta(minutes=1),
        status=JobRun.Status.FAILED,
        started_at=timezone.now() - timedelta(seconds=50),
        finished_at=timezone.now() - timedelta(seconds=47),
    )
    body = alice_client.get("/").content.decode()
    assert "Sample" in body and "Sample v2" in body and "Hidden" not in body
    assert "greeter" in body and "badge-active" in body
    assert f'href="/runs/{run.pk}/"' in body and "failed" in body
    assert "3.00 s" in body  # duration
    assert re.search(r">(in \d+ s|now)</time>", body)  # next run of the active job
    assert f'href="/plugins/{sample_plugin.pk}/"' in body


def test_next_run_uses_the_engines_slot_math(job, sample_plugin):
    from scheduler_app import slots

    now = timezone.now()
    expected = slots.to_datetime(slots.slot_after(slots.to_ms(now), job.pk, sample_plugin.interval))
    assert selectors.next_run_at(job, sample_plugin, now) == expected
    job.active = False
    assert selectors.next_run_at(job, sample_plugin, now) is None


def test_the_dashboard_query_count_does_not_grow_with_jobs_and_runs(
    alice, sample_plugin, sample_v2_plugin, django_assert_max_num_queries
):
    client = Client()
    client.force_login(alice)
    for plugin in (sample_plugin, sample_v2_plugin):
        for i in range(8):
            j = services.create_job(alice, plugin, {}, description=f"job {i}")
            JobRun.objects.bulk_create(
                JobRun(job=j, slot=timezone.now() - timedelta(seconds=k), status=JobRun.Status.SUCCEEDED)
                for k in range(5)
            )
    # session, user, whether they may view all (one query), plugins, jobs, last runs, recent runs
    with django_assert_max_num_queries(7):
        assert client.get("/").status_code == 200


def test_the_plugin_page_query_count_does_not_grow_with_jobs_and_runs(
    alice, sample_plugin, django_assert_max_num_queries
):
    client = Client()
    client.force_login(alice)
    for i in range(10):
        j = services.create_job(alice, sample_plugin, {}, description=f"job {i}")
        JobRun.objects.bulk_create(
            JobRun(job=j, slot=timezone.now() - timedelta(seconds=k), status=JobRun.Status.SUCCEEDED) for k in range(5)
        )
    # session, user, plugin, jobs (+ last run), last runs, recent-run stats, the user's time zone (new form)
    with django_assert_max_num_queries(7):
        assert client.get(f"/plugins/{sample_plugin.pk}/").status_code == 200


def test_the_plugin_page_renders_one_schema_form_per_job_and_a_new_one(alice_client, job, alice, sample_plugin):
    other = services.create_job(alice, sample_plugin, {"name": "Bea"}, description="second")
    response = alice_client.get(f"/plugins/{sample_plugin.pk}/")
    body = response.content.decode()
    configs = widget_configs(body)
    assert len(configs) == 3  # two jobs + "new configuration"
    assert json.loads(configs[0]["data"]) == {"name": "Ann", "times": 2}
    assert json.loads(configs[1]["data"]) == {"name": "Bea", "times": 3}
    assert configs[0]["schema"]["properties"]["name"]["type"] == "string"
    assert "novalidate" in body
    assert "django_jsonform/react-json-form.js" in body and "django_jsonform/style.css" in body
    assert f'id="job-{job.pk}"' in body and f'id="job-{other.pk}"' in body
    assert f'data-ws-path="/ws/logs/{sample_plugin.pk}/{alice.pk}/"' in body


def test_saving_an_invalid_config_shows_pydantics_errors_on_the_fields_and_saves_nothing(alice_client, job):
    response = alice_client.post(
        f"/jobs/{job.pk}/save/",
        {f"job-{job.pk}-description": "changed", f"job-{job.pk}-config": json.dumps({"name": "", "times": 99})},
    )
    assert response.status_code == 400
    body = response.content.decode()
    config = next(c for c in widget_configs(body) if c["errorMap"])
    assert set(config["errorMap"]) == {"name", "times"}
    assert any("less than or equal to 10" in m for m in config["errorMap"]["times"])
    assert json.loads(config["data"]) == {"name": "", "times": 99}  # the user's input is kept to fix it
    job.refresh_from_db()
    assert (job.description, job.config) == ("greeter", {"name": "Ann", "times": 2})


def test_the_not_saved_message_keeps_the_descriptions_case(alice_client, job):
    job.description = "Morning Greeting"
    job.save(update_fields=["description"])
    response = alice_client.post(
        f"/jobs/{job.pk}/save/",
        {f"job-{job.pk}-description": "Morning Greeting", f"job-{job.pk}-config": json.dumps({"name": "", "times": 2})},
    )
    assert response.status_code == 400
    assert "“Morning Greeting” was not saved" in response.content.decode()


def test_saving_a_valid_config_stores_it_through_the_service(alice_client, job):
    response = alice_client.post(
        f"/jobs/{job.pk}/save/",
        {f"job-{job.pk}-description": "changed", f"job-{job.pk}-config": json.dumps({"name": "Zed", "times": 4})},
    )
    assert response.status_code == 302 and response["Location"].endswith(f"#job-{job.pk}")
    job.refresh_from_db()
    assert (job.description, job.config) == ("changed", {"name": "Zed", "times": 4})
    assert "Saved" in alice_client.get(response["Location"]).content.decode()


def test_creating_a_configuration(alice_client, alice, sample_plugin):
    response = alice_client.post(
        f"/plugins/{sample_plugin.pk}/jobs/new/",
        {"new-description": "fresh", "new-config": json.dumps({"name": "New", "times": 1})},
    )
    assert response.status_code == 302
    created = Job.objects.get(user=alice, description="fresh")
    assert created.config == {"name": "New", "times": 1} and not created.active


def test_creating_an_invalid_configuration_saves_nothing(alice_client, alice, sample_plugin):
    response = alice_client.post(
        f"/plugins/{sample_plugin.pk}/jobs/new/", {"new-description": "bad", "new-config": json.dumps({"times": 0})}
    )
    assert response.status_code == 400
    assert "times" in next(c for c in widget_configs(response.content.decode()) if c["errorMap"])["errorMap"]
    assert not Job.objects.filter(user=alice).exists()


def test_activation_swaps_and_says_so(alice_client, job, alice, sample_plugin):
    other = services.create_job(alice, sample_plugin, {}, description="other")
    response = alice_client.post(f"/jobs/{other.pk}/activate/", follow=True)
    body = response.content.decode()
    job.refresh_from_db()
    other.refresh_from_db()
    assert (job.active, other.active) == (False, True)
    assert "Activated “other”; “greeter” is no longer active." in body
    alice_client.post(f"/jobs/{other.pk}/deactivate/")
    other.refresh_from_db()
    assert not other.active


def test_run_now_queues_a_manual_run_once(alice_client, job):
    alice_client.post(f"/jobs/{job.pk}/run/")
    run = JobRun.objects.get(job=job)
    assert (run.trigger, run.status) == (JobRun.Trigger.MANUAL, JobRun.Status.QUEUED)
    body = alice_client.post(f"/jobs/{job.pk}/run/", follow=True).content.decode()
    assert "already queued" in body
    assert JobRun.objects.filter(job=job).count() == 1


def test_clone_makes_an_inactive_copy(alice_client, job, alice):
    alice_client.post(f"/jobs/{job.pk}/clone/")
    copy = Job.objects.exclude(pk=job.pk).get(user=alice)
    assert copy.config == job.config and not copy.active and copy.description == "Copy of greeter"


def test_delete_asks_for_confirmation_then_deletes(alice_client, job):
    JobRun.objects.create(job=job, slot=timezone.now())
    page = alice_client.get(f"/jobs/{job.pk}/delete/").content.decode()
    assert "Delete this configuration?" in page and "1 run" in page
    assert Job.objects.filter(pk=job.pk).exists()
    response = alice_client.post(f"/jobs/{job.pk}/delete/")
    assert response.status_code == 302
    assert not Job.objects.filter(pk=job.pk).exists()


def test_the_run_history_pages_with_a_keyset_cursor(alice_client, job):
    base = timezone.now()
    JobRun.objects.bulk_create(
        JobRun(job=job, slot=base - timedelta(seconds=i), status=JobRun.Status.SUCCEEDED) for i in range(120)
    )
    seen: list[int] = []
    url = f"/jobs/{job.pk}/runs/"
    pages = 0
    while url:
        body = alice_client.get(url).content.decode()
        assert "120 runs" in body
        seen += [int(x) for x in re.findall(r'<td data-label="Run"><a href="/runs/(\d+)/">', body)]
        found = re.search(r'href="(\?after=[^"]+)" rel="next"', body)
        url = f"/jobs/{job.pk}/runs/{html.unescape(found.group(1))}" if found else None
        pages += 1
    assert pages == 3
    expected = list(JobRun.objects.filter(job=job).order_by("-slot", "-id").values_list("id", flat=True))
    assert seen == expected


def test_the_history_count_is_capped(job, monkeypatch):
    monkeypatch.setattr(selectors, "HISTORY_COUNT_CAP", 5)
    JobRun.objects.bulk_create(JobRun(job=job, slot=timezone.now() - timedelta(seconds=i)) for i in range(8))
    page = selectors.run_history(job)
    assert (page.total, page.total_capped) == (5, True)


def test_a_history_that_fits_one_page_is_counted_without_a_count_query(
    alice_client, job, django_assert_max_num_queries
):
    JobRun.objects.bulk_create(JobRun(job=job, slot=timezone.now() - timedelta(seconds=i)) for i in range(7))
    with django_assert_max_num_queries(4):  # session, user, job (with plugin and owner), runs
        body = alice_client.get(f"/jobs/{job.pk}/runs/").content.decode()
    assert "7 runs" in body
    assert len(re.findall(r'<td data-label="Run"><a href="/runs/(\d+)/">', body)) == 7


def test_a_bad_cursor_shows_the_first_page(alice_client, job):
    assert alice_client.get(f"/jobs/{job.pk}/runs/?after=garbage").status_code == 200


def page_lines(body: str) -> list[dict]:
    """The stored lines a run page hands to the browser's log view (json_script data)."""
    found = re.search(r'<script type="application/json">(.*?)</script>', body, re.S)
    return json.loads(found.group(1)) if found else []


def test_the_run_page_hands_the_log_to_the_browser_as_data_escaped_and_the_traceback(alice_client, job):
    run = JobRun.objects.create(
        job=job,
        slot=timezone.now(),
        status=JobRun.Status.FAILED,
        error="RuntimeError: boom",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: boom',
    )
    now = timezone.now()
    LogLine.objects.bulk_create(
        [
            LogLine(run=run, seq=1, created_at=now, level=20, message="<script>alert(1)</script>"),
            LogLine(run=run, seq=2, created_at=now, level=40, message="\x1b[31mred\x1b[0m plain \x1b[1;92mbold\x1b[0m"),
        ]
    )
    body = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert "<script>alert(1)</script>" not in body  # json_script escapes <, > and &
    lines = page_lines(body)
    # The same shape as live lines: the browser draws both with one renderer (logview.js).
    assert [(line["seq"], line["level"], line["message"]) for line in lines] == [
        (1, "INFO", "<script>alert(1)</script>"),
        (2, "ERROR", "\x1b[31mred\x1b[0m plain \x1b[1;92mbold\x1b[0m"),
    ]
    assert set(lines[0]) == {"id", "run", "job", "seq", "ts", "level", "message"}
    assert "ansi-31" not in body  # no second (server-side) ANSI renderer
    assert "RuntimeError: boom" in body and "Traceback (most recent call last)" in body
    assert 'data-ws-path=""' in body  # finished: no live connection
    assert f'href="/runs/{run.pk}/log.txt"' in body


def long_run(job: Job, lines: int, status: str = JobRun.Status.SUCCEEDED) -> JobRun:
    run = JobRun.objects.create(job=job, slot=timezone.now(), status=status, log_count=lines)
    now = timezone.now()
    LogLine.objects.bulk_create(
        (LogLine(run=run, seq=i, created_at=now, level=20, message=f"line {i}") for i in range(1, lines + 1)),
        batch_size=2000,
    )
    return run


def test_the_run_page_shows_the_tail_of_a_long_log_and_offers_earlier_lines(alice_client, job):
    run = long_run(job, 1234)
    body = alice_client.get(f"/runs/{run.pk}/").content.decode()
    lines = page_lines(body)
    assert [line["seq"] for line in lines] == list(range(735, 1235))
    assert f'data-earlier-url="/runs/{run.pk}/lines/" data-first-seq="735"' in body
    assert 'data-action="earlier">' in body  # shown, not hidden

    page = alice_client.get(f"/runs/{run.pk}/lines/?before=735").json()
    assert [line["seq"] for line in page["lines"]] == list(range(235, 735)) and page["earlier"] is True
    assert page["lines"][0] == {**lines[0], "id": page["lines"][0]["id"], "seq": 235, "message": "line 235"}
    last = alice_client.get(f"/runs/{run.pk}/lines/?before=235").json()
    assert [line["seq"] for line in last["lines"]] == list(range(1, 235)) and last["earlier"] is False
    assert alice_client.get(f"/runs/{run.pk}/lines/").status_code == 400
    assert alice_client.get(f"/runs/{run.pk}/lines/?before=x").status_code == 400


def test_a_short_log_offers_no_earlier_lines(alice_client, job):
    run = long_run(job, 3)
    body = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert [line["seq"] for line in page_lines(body)] == [1, 2, 3]
    assert 'data-action="earlier" hidden>' in body


def test_the_run_page_query_count_does_not_grow_with_the_log(alice_client, job, django_assert_max_num_queries):
    run = long_run(job, 3000)
    with django_assert_max_num_queries(5):  # session, user, run (with job, plugin, user), lines
        assert alice_client.get(f"/runs/{run.pk}/").status_code == 200


def test_the_whole_log_downloads_as_streamed_plain_text(alice_client, job):
    run = long_run(job, 4321)
    LogLine.objects.filter(run=run, seq=7).update(level=40, message="\x1b[31mboom\x1b[0m <b>")
    response = alice_client.get(f"/runs/{run.pk}/log.txt")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}.log"'
    text = b"".join(response.streaming_content).decode()
    rows = text.splitlines()
    assert len(rows) == 4321
    assert rows[0].endswith(" INFO     line 1") and rows[-1].endswith(" INFO     line 4321")
    assert rows[6].endswith(" ERROR    \x1b[31mboom\x1b[0m <b>")  # as logged: it is a text file


@pytest.mark.django_db(transaction=True)  # the ASGI path reads the database from a worker thread
async def test_the_download_streams_in_chunks_under_asgi(alice, job):
    from django.test import AsyncClient

    run = await sync_to_async(long_run)(job, 4500)
    client = AsyncClient()
    await sync_to_async(client.force_login)(alice)
    response = await client.get(f"/runs/{run.pk}/log.txt")
    assert response.status_code == 200 and response.is_async
    chunks = [chunk async for chunk in response.streaming_content]
    assert len(chunks) == 3  # 2,000 + 2,000 + 500 lines: read and sent a chunk at a time
    assert b"".join(chunks).decode().count("\n") == 4500


def test_a_running_run_page_goes_live_from_its_last_line(alice_client, job, sample_plugin, alice):
    run = JobRun.objects.create(job=job, slot=timezone.now(), status=JobRun.Status.RUNNING)
    line = LogLine.objects.create(run=run, seq=1, created_at=timezone.now(), level=20, message="hi")
    body = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert f'data-ws-path="/ws/logs/{sample_plugin.pk}/{alice.pk}/"' in body
    assert f'data-run="{run.pk}"' in body and f'data-after="{line.pk}"' in body


def test_other_users_logs_are_404_and_the_permission_reads_them(job, bob, staff_only, auditor):
    run = long_run(job, 3)
    for user, status in ((bob, 404), (staff_only, 404), (auditor, 200)):
        client = Client()
        client.force_login(user)
        for url in (f"/runs/{run.pk}/", f"/runs/{run.pk}/lines/?before=3", f"/runs/{run.pk}/log.txt"):
            assert client.get(url).status_code == status, (user, url)


def test_a_disabled_plugin_without_jobs_is_not_found(alice_client):
    plugin = Plugin.objects.create(
        name="Off", package="plugins.lab_plugin@v0_1_0.plugin.Plugin", interval=5, enabled=False
    )
    assert alice_client.get(f"/plugins/{plugin.pk}/").status_code == 404
    assert alice_client.post(f"/plugins/{plugin.pk}/jobs/new/", {"new-config": "{}"}).status_code == 404


def test_a_disabled_plugin_with_jobs_shows_them_but_offers_no_new_configuration(alice_client, job, sample_plugin):
    sample_plugin.enabled = False
    sample_plugin.save()
    body = alice_client.get(f"/plugins/{sample_plugin.pk}/").content.decode()
    assert "greeter" in body and "disabled this plugin" in body
    assert f"/plugins/{sample_plugin.pk}/jobs/new/" not in body
    assert "not scheduled" in body


def test_pages_forbid_inline_scripts_and_foreign_connections(alice_client, job, sample_plugin):
    for url in ("/", f"/plugins/{sample_plugin.pk}/", f"/jobs/{job.pk}/runs/"):
        policy = alice_client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "connect-src 'self' ws: wss:" in policy
        assert "unsafe-eval" not in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]


def test_the_favicon_is_served(alice_client):
    response = alice_client.get("/favicon.ico", follow=True)
    assert response.status_code == 200
    assert b"<svg" in b"".join(response.streaming_content)
