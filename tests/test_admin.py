"""The operators' admin, driven through Django's test client against the real database."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from scheduler_app import services
from scheduler_app.models import Job, JobRun, LogLine, Plugin, SchedulerNode
from tests.conftest import SAMPLE
from tests.plugins.helpers import module_path_fixture  # noqa: F401  (the module_path fixture)

BROKEN = "plugins.no_such_plugin@v9_9_9.plugin.Plugin"


@pytest.fixture
def operator(client, staff):
    client.force_login(staff)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def action(client, model: str, name: str, pks: list[int]):
    url = reverse(f"admin:scheduler_app_{model}_changelist")
    return client.post(url, {"action": name, "_selected_action": [str(pk) for pk in pks]}, follow=True)


# ---------------------------------------------------------------- site


def test_the_site_is_called_jobscheduler(operator):
    response = operator.get(reverse("admin:index"))
    assert response.status_code == 200
    assert "<title>Site administration | jobscheduler</title>" in response.text or "jobscheduler" in response.text
    assert '<a href="/admin/">jobscheduler</a>' in response.text


def test_users_without_staff_status_are_sent_to_the_login(client, alice):
    client.force_login(alice)
    response = client.get(reverse("admin:scheduler_app_plugin_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# ---------------------------------------------------------------- plugins


def test_plugin_list_shows_job_counts_without_a_query_per_row(operator, alice, bob, django_assert_max_num_queries):
    for i in range(6):
        plugin = Plugin.objects.create(name=f"P{i}", package=f"{SAMPLE}{i}", interval=10 + i)
        Job.objects.create(user=alice, plugin=plugin, active=True)
        Job.objects.create(user=bob, plugin=plugin)
    url = reverse("admin:scheduler_app_plugin_changelist")
    operator.get(url)  # warm caches (content types, session)
    with django_assert_max_num_queries(8):
        response = operator.get(url)
    assert response.status_code == 200
    assert response.text.count("2 (1)") == 6  # two jobs, one active, on every row


def test_plugin_form_refuses_a_package_that_does_not_load(operator):
    response = operator.post(
        reverse("admin:scheduler_app_plugin_add"),
        {"name": "x", "package": BROKEN, "interval": 10, "timeout": 60, "enabled": "on", "description": ""},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["package"]
    for part in (BROKEN, "module not found", "looked in", "plugins/"):
        assert part in errors[0], errors
    assert not Plugin.objects.exists()


def test_plugin_form_names_the_missing_class(operator):
    package = "plugins.sample_plugin@v0_1_0.plugin.Nope"
    response = operator.post(
        reverse("admin:scheduler_app_plugin_add"),
        {"name": "x", "package": package, "interval": 10, "timeout": 60, "enabled": "on"},
    )
    error = response.context["adminform"].form.errors["package"][0]
    assert package in error and "has no class 'Nope'" in error


def test_plugin_form_saves_a_loading_package(operator):
    response = operator.post(
        reverse("admin:scheduler_app_plugin_add"),
        {"name": "Sample", "package": f"  {SAMPLE} ", "interval": 7, "timeout": 60, "enabled": "on"},
    )
    assert response.status_code == 302
    plugin = Plugin.objects.get()
    assert (plugin.package, plugin.interval, plugin.timeout) == (SAMPLE, 7, 60)


def test_plugin_form_refuses_a_zero_interval(operator, sample_plugin):
    response = operator.post(
        reverse("admin:scheduler_app_plugin_change", args=[sample_plugin.pk]),
        {"name": "Sample", "package": SAMPLE, "interval": 0, "timeout": 60, "enabled": "on"},
    )
    assert response.status_code == 200 and "interval" in response.context["adminform"].form.errors
    sample_plugin.refresh_from_db()
    assert sample_plugin.interval == 10


def test_enable_and_disable_actions(operator, sample_plugin, sample_v2_plugin):
    response = action(operator, "plugin", "disable_plugins", [sample_plugin.pk, sample_v2_plugin.pk])
    assert "2 plugins disabled." in messages_of(response)
    assert not Plugin.objects.filter(enabled=True).exists()
    response = action(operator, "plugin", "enable_plugins", [sample_plugin.pk])
    assert "1 plugin enabled." in messages_of(response)
    assert list(Plugin.objects.filter(enabled=True)) == [sample_plugin]


def test_reload_reports_success_and_the_load_error_per_plugin(operator, sample_plugin):
    broken = Plugin.objects.create(name="Broken", package=BROKEN, interval=10)  # bypasses the form
    response = action(operator, "plugin", "reload_code", [sample_plugin.pk, broken.pk])
    texts = messages_of(response)
    assert any(t.startswith("1 plugin reloaded: Sample (code version 2)") for t in texts), texts
    assert any("Broken: not reloaded, the old code keeps running." in t and "module not found" in t for t in texts)
    sample_plugin.refresh_from_db()
    broken.refresh_from_db()
    assert (sample_plugin.code_version, broken.code_version) == (2, 1)


def test_available_plugins_lists_what_is_found_and_registers_in_one_step(operator, module_path, sample_plugin):
    good = module_path.write_good()
    broken = module_path.write("def broken(:\n", version="v2_0_0")
    page = operator.get(reverse("admin:scheduler_app_plugin_available"))
    assert page.status_code == 200
    listed = {a.package: a for a in page.context["available"]}
    assert SAMPLE not in listed  # already registered
    assert "plugins.lab_plugin@v0_1_0.plugin.Plugin" in listed
    assert listed[good].ok and "MODULE_PATH" in listed[good].source
    broken_package = module_path.package("v2_0_0")
    assert not listed[broken_package].ok and "syntax error" in page.text
    assert page.text.count('value="Register"') == len(listed) - 1  # no button for the broken one

    url = reverse("admin:scheduler_app_plugin_available")
    response = operator.post(url, {"package": good, "name": "Mine", "interval": 12}, follow=True)
    plugin = Plugin.objects.get(package=good)
    assert (plugin.name, plugin.interval, plugin.description) == ("Mine", 12, f"{module_path.name} description")
    assert any("Registered Mine" in t for t in messages_of(response))
    assert good not in {a.package for a in operator.get(url).context["available"]}
    again = operator.post(url, {"package": good, "interval": 5}, follow=True)
    assert any("already registered" in t for t in messages_of(again))
    bad = operator.post(url, {"package": broken_package, "interval": 5}, follow=True)
    assert any("does not load" in t and broken_package in t for t in messages_of(bad))
    assert Plugin.objects.count() == 2
    assert broken.exists()


# ---------------------------------------------------------------- jobs


def test_adding_a_job_asks_for_the_plugin_first(operator, sample_plugin):
    response = operator.get(reverse("admin:scheduler_app_job_add"))
    assert response.status_code == 200
    assert "choose the plugin" in response.text and 'name="plugin"' in response.text
    form = operator.get(reverse("admin:scheduler_app_job_add") + f"?plugin={sample_plugin.pk}")
    assert form.status_code == 200 and 'name="config"' in form.text and SAMPLE in form.text


def test_adding_a_job_validates_the_config_through_the_plugin(operator, alice, sample_plugin):
    url = reverse("admin:scheduler_app_job_add") + f"?plugin={sample_plugin.pk}"
    bad = operator.post(url, {"user": alice.pk, "description": "d", "config": json.dumps({"name": "", "times": 99})})
    assert bad.status_code == 400 and "config" in bad.context["adminform"].form.errors
    assert not Job.objects.exists()
    good = operator.post(
        url, {"user": alice.pk, "description": "d", "active": "on", "config": json.dumps({"name": "A"})}
    )
    assert good.status_code == 302, good.context and good.context["adminform"].form.errors
    job = Job.objects.get()
    assert (job.user, job.plugin, job.config, job.active) == (alice, sample_plugin, {"name": "A", "times": 3}, True)


def test_editing_a_job_activates_through_the_service(operator, alice, sample_plugin):
    first = services.create_job(alice, sample_plugin, {}, activate=True)
    second = services.create_job(alice, sample_plugin, {"name": "B"}, description="second")
    url = reverse("admin:scheduler_app_job_change", args=[second.pk])
    assert operator.get(url).status_code == 200
    response = operator.post(
        url, {"user": alice.pk, "description": "second!", "active": "on", "config": json.dumps({"name": "C"})}
    )
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.active, second.active, second.config["name"], second.description) == (False, True, "C", "second!")


def test_editing_a_job_refuses_an_invalid_config(operator, alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "A"})
    url = reverse("admin:scheduler_app_job_change", args=[job.pk])
    response = operator.post(url, {"user": alice.pk, "description": "", "config": json.dumps({"times": 0})})
    assert response.status_code == 400 and "config" in response.context["adminform"].form.errors
    job.refresh_from_db()
    assert job.config == {"name": "A", "times": 3}


def test_bulk_activation_reports_what_was_done_and_refused(operator, alice, bob, sample_plugin):
    a1 = services.create_job(alice, sample_plugin, {}, description="a1")
    a2 = services.create_job(alice, sample_plugin, {}, description="a2")
    b1 = services.create_job(bob, sample_plugin, {}, description="b1")
    response = action(operator, "job", "activate_jobs", [a1.pk, a2.pk, b1.pk])
    texts = messages_of(response)
    assert "2 jobs activated." in texts
    assert any(t.startswith("1 job refused: ") and "same user and plugin" in t for t in texts), texts
    assert Job.objects.filter(active=True, user=alice).count() == 1
    response = action(operator, "job", "deactivate_jobs", [a1.pk, a2.pk, b1.pk])
    assert "2 jobs deactivated." in messages_of(response)
    assert not Job.objects.filter(active=True).exists()


def test_bulk_activation_says_which_jobs_it_switched_off(operator, alice, sample_plugin):
    old = services.create_job(alice, sample_plugin, {}, description="old", activate=True)
    new = services.create_job(alice, sample_plugin, {}, description="new")
    texts = messages_of(action(operator, "job", "activate_jobs", [new.pk]))
    assert "1 job activated." in texts
    assert "1 job deactivated in their place: old (Sample, alice)" in texts, texts
    assert list(Job.objects.filter(active=True).values_list("pk", flat=True)) == [new.pk]
    # Selecting the active one with another of the same user and plugin keeps the active one.
    texts = messages_of(action(operator, "job", "activate_jobs", [old.pk, new.pk]))
    assert any("old (Sample, alice): only one job" in t and "new (Sample, alice) is" in t for t in texts), texts
    assert list(Job.objects.filter(active=True).values_list("pk", flat=True)) == [new.pk]


def test_lists_show_seconds_and_flag_configs_that_no_longer_validate(operator, alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "A"}, description="stale")
    Job.objects.filter(pk=job.pk).update(config={"name": "A", "times": 99})  # what a code change can leave
    run = JobRun.objects.create(job=job, slot=timezone.now().replace(second=7, microsecond=0), status="succeeded")
    page = operator.get("/admin/scheduler_app/job/").content.decode()
    assert "no longer valid" in page
    page = operator.get(f"/admin/scheduler_app/job/{job.pk}/change/").content.decode()
    assert "no longer valid" in page and "cannot be activated" in page
    assert timezone.localtime(run.slot).strftime("%Y-%m-%d %H:%M:07") in page  # recent runs, with seconds
    runs = operator.get("/admin/scheduler_app/jobrun/").content.decode()
    assert timezone.localtime(run.slot).strftime("%Y-%m-%d %H:%M:07") in runs
    texts = messages_of(action(operator, "job", "activate_jobs", [job.pk]))
    assert any("no longer fits the plugin" in t for t in texts), texts
    assert not Job.objects.get(pk=job.pk).active


def test_run_now_queues_and_returns(operator, alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {})
    response = action(operator, "job", "run_jobs_now", [job.pk])
    assert any(t.startswith("1 run queued") for t in messages_of(response))
    run = JobRun.objects.get()
    assert (run.job, run.status, run.trigger) == (job, JobRun.Status.QUEUED, JobRun.Trigger.MANUAL)
    again = action(operator, "job", "run_jobs_now", [job.pk])
    assert any("already queued" in t for t in messages_of(again))
    assert JobRun.objects.count() == 1


def test_job_list_filters_and_search(operator, alice, bob, sample_plugin, django_assert_max_num_queries):
    for i in range(5):
        services.create_job(alice, sample_plugin, {}, description=f"alice {i}")
        services.create_job(bob, sample_plugin, {}, description=f"bob {i}")
    url = reverse("admin:scheduler_app_job_changelist")
    operator.get(url)
    with django_assert_max_num_queries(10):
        assert operator.get(url).status_code == 200
    filtered = operator.get(
        url, {"user__id__exact": alice.pk, "active__exact": "0", "plugin__id__exact": sample_plugin.pk}
    )
    assert filtered.context["cl"].result_count == 5
    assert operator.get(url, {"q": "bob 3"}).context["cl"].result_count == 1


def test_deleting_a_job_in_the_admin_goes_through_the_service(operator, alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {})
    response = operator.post(reverse("admin:scheduler_app_job_delete", args=[job.pk]), {"post": "yes"})
    assert response.status_code == 302 and not Job.objects.exists()


# ---------------------------------------------------------------- runs and nodes


@pytest.fixture
def finished_run(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {})
    start = timezone.now() - timedelta(seconds=10)
    run = JobRun.objects.create(
        job=job,
        slot=start,
        status=JobRun.Status.SUCCEEDED,
        node="node-a",
        started_at=start,
        finished_at=start + timedelta(seconds=2.5),
        plugin_package=SAMPLE,
        log_count=2,
        error="ValueError: nope",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1, in run\nValueError: <nope>',
    )
    LogLine.objects.create(run=run, seq=1, created_at=start, level=20, message="Hello, <b>world</b>")
    LogLine.objects.create(run=run, seq=2, created_at=start, level=40, message="it broke")
    return run


def test_run_list_filters_and_duration(operator, finished_run, alice, sample_plugin, django_assert_max_num_queries):
    url = reverse("admin:scheduler_app_jobrun_changelist")
    operator.get(url)
    with django_assert_max_num_queries(12):
        response = operator.get(url)
    assert response.status_code == 200 and "2.50 s" in response.text
    for params in (
        {"status__exact": "succeeded"},
        {"job__plugin__id__exact": sample_plugin.pk},
        {"user": alice.pk},
        {"node": "node-a"},
        {"trigger__exact": "schedule"},
        {"slot__year": finished_run.slot.year},
    ):
        filtered = operator.get(url, params)
        assert filtered.status_code == 200 and filtered.context["cl"].result_count == 1, params
    assert operator.get(url, {"status__exact": "failed"}).context["cl"].result_count == 0


def test_a_run_is_read_only_and_shows_its_log_escaped(operator, finished_run):
    page = operator.get(reverse("admin:scheduler_app_jobrun_change", args=[finished_run.pk]))
    assert page.status_code == 200
    assert "Hello, &lt;b&gt;world&lt;/b&gt;" in page.text and "ERROR" in page.text and "it broke" in page.text
    assert '<pre style="white-space:pre-wrap">Traceback (most recent call last):\n  File' in page.text
    assert "ValueError: &lt;nope&gt;</pre>" in page.text
    assert 'name="_save"' not in page.text
    assert f'href="{reverse("run", args=[finished_run.pk])}"' in page.text
    assert operator.get(reverse("admin:scheduler_app_jobrun_add")).status_code == 403
    assert operator.post(reverse("admin:scheduler_app_jobrun_delete", args=[finished_run.pk])).status_code == 403


def test_a_long_runs_admin_page_shows_the_tail_and_links_the_whole_log(operator, finished_run):
    LogLine.objects.bulk_create(
        LogLine(run=finished_run, seq=i, created_at=finished_run.slot, level=20, message=f"line {i}")
        for i in range(3, 701)
    )
    JobRun.objects.filter(pk=finished_run.pk).update(log_count=700)
    page = operator.get(reverse("admin:scheduler_app_jobrun_change", args=[finished_run.pk]))
    assert "Showing the last 500 of 700 lines" in page.text and "line 700" in page.text and "line 200" not in page.text
    assert f'href="{reverse("run_log", args=[finished_run.pk])}">download the whole log' in page.text


def test_a_runs_admin_log_leaves_out_terminal_colour_codes(operator, finished_run):
    LogLine.objects.create(
        run=finished_run, seq=3, created_at=finished_run.slot, level=20, message="\x1b[36mbuild\x1b[0m ok\x1b[2K"
    )
    page = operator.get(reverse("admin:scheduler_app_jobrun_change", args=[finished_run.pk]))
    assert "build ok" in page.text and "\x1b" not in page.text


def test_nodes_show_alive_dead_and_running_runs(operator, finished_run):
    now = timezone.now()
    SchedulerNode.objects.create(name="node-a", hostname="h1", pid=1, last_heartbeat=now)
    SchedulerNode.objects.create(name="node-dead", hostname="h2", pid=2, last_heartbeat=now - timedelta(hours=1))
    JobRun.objects.create(job=finished_run.job, slot=now, status=JobRun.Status.RUNNING, node="node-a", started_at=now)
    url = reverse("admin:scheduler_app_schedulernode_changelist")
    response = operator.get(url)
    assert response.status_code == 200
    rows = {node.name: node for node in response.context["cl"].result_list}
    assert rows["node-a"].is_alive and not rows["node-dead"].is_alive
    assert (rows["node-a"].running_now, rows["node-dead"].running_now) == (1, 0)
    assert operator.get(url, {"alive": "yes"}).context["cl"].result_count == 1
    assert operator.get(url, {"alive": "no"}).context["cl"].result_count == 1
    assert operator.get(reverse("admin:scheduler_app_schedulernode_add")).status_code == 403


def test_the_plugin_form_says_whether_the_code_loads_now(operator, sample_plugin):
    good = operator.get(reverse("admin:scheduler_app_plugin_change", args=[sample_plugin.pk]))
    assert good.status_code == 200 and "loads" in good.text and "does not load" not in good.text
    broken = Plugin.objects.create(name="Broken", package=BROKEN, interval=10)
    page = operator.get(reverse("admin:scheduler_app_plugin_change", args=[broken.pk]))
    assert page.status_code == 200 and "does not load" in page.text and "module not found" in page.text


def test_the_job_list_links_each_job_to_its_latest_run(operator, finished_run, django_assert_max_num_queries):
    later = JobRun.objects.create(
        job=finished_run.job, slot=finished_run.slot + timedelta(seconds=10), status=JobRun.Status.TIMED_OUT
    )
    url = reverse("admin:scheduler_app_job_changelist")
    operator.get(url)
    with django_assert_max_num_queries(10):
        response = operator.get(url)
    link = reverse("admin:scheduler_app_jobrun_change", args=[later.pk])
    assert f'<a href="{link}">timed out</a>' in response.text
