"""The audit trail: every change to a job or plugin and every manual action is recorded with
who, when and through what; secrets are masked; only the owner and permitted operators see it."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client

from scheduler_app import audit, services
from scheduler_app.models import AuditEntry, Job, Plugin

PROD = "plugins.prod_plugin@v0_1_0.plugin.Plugin"


@pytest.fixture
def prod_plugin(db):
    return Plugin.objects.create(name="Deploy", package=PROD, interval=60)


def actions(**filters) -> list[str]:
    return list(AuditEntry.objects.filter(**filters).order_by("id").values_list("action", flat=True))


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_it_records_each_kind_of_job_change_with_who_and_through_what(alice, sample_plugin):
    with audit.acting(alice, "page"):
        job = services.create_job(alice, sample_plugin, {"name": "Ann"}, description="first")
        services.update_job(job, config={"name": "Bob"}, description="renamed")
        services.activate_job(job)
        other = services.create_job(alice, sample_plugin, {}, description="second")
        services.activate_job(other)  # swaps: job is deactivated, and that is recorded too
        services.deactivate_job(other)
        copy = services.clone_job(job)
        copy_id = copy.pk
        services.run_now(job)
        services.delete_job(copy)
    assert actions(job_ref=job.pk) == ["job.create", "job.update", "job.activate", "job.deactivate", "run.now"]
    assert actions(job_ref=other.pk) == ["job.create", "job.activate", "job.deactivate"]
    assert actions(job_ref=copy_id) == ["job.clone", "job.delete"]
    update = AuditEntry.objects.get(job_ref=job.pk, action="job.update")
    assert update.changes == {"description": ["first", "renamed"], "config.name": ["Ann", "Bob"]}
    assert (update.actor, update.actor_name, update.via, update.owner) == (alice, "alice", "page", alice)
    swap = AuditEntry.objects.get(job_ref=job.pk, action="job.deactivate")
    assert "second" in swap.summary  # says which activation turned it off


def test_a_change_that_changes_nothing_is_not_recorded(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "Ann"})
    services.update_job(job, config={"name": "Ann"})
    assert actions(job_ref=job.pk) == ["job.create"]


def test_secrets_are_masked_in_config_diffs(alice, prod_plugin):
    job = services.create_job(alice, prod_plugin, {"token": "s3cret-one", "version": "1.0.0"})
    services.update_job(job, config={"token": "s3cret-two", "version": "1.2.0"})
    entries = AuditEntry.objects.filter(job_ref=job.pk)
    text = str(list(entries.values_list("changes", "summary")))
    assert "s3cret" not in text
    update = entries.get(action="job.update")
    assert update.changes["config.token"] == [audit.MASK, audit.MASK]
    assert update.changes["config.version"] == ["1.0.0", "1.2.0"]


def test_the_secret_fields_come_from_the_schema_and_from_their_names():
    schema = {
        "properties": {
            "key": {"type": "string", "format": "password", "writeOnly": True},
            "nested": {"$ref": "#/$defs/Inner"},
            "plain": {"type": "string"},
        },
        "$defs": {"Inner": {"properties": {"hidden": {"type": "string", "writeOnly": True}}}},
    }
    assert audit.secret_paths(schema) == {"key", "nested.hidden"}
    diff = audit.config_diff({"db_password": "a", "plain": "x"}, {"db_password": "b", "plain": "y"}, None)
    assert diff == {"config.db_password": [audit.MASK, audit.MASK], "config.plain": ["x", "y"]}


def test_it_records_plugin_registration_change_enable_disable_and_reload(staff):
    with audit.acting(staff, "admin"):
        plugin = services.register_plugin("plugins.sample_plugin@v0_1_0.plugin.Plugin", interval=10)
        plugin.interval = 20
        services.update_plugin(plugin)
        services.set_plugins_enabled([plugin], False)
        services.set_plugins_enabled([plugin], True)
        services.reload_plugin(plugin)
    assert actions(plugin=plugin) == [
        "plugin.register",
        "plugin.update",
        "plugin.disable",
        "plugin.enable",
        "plugin.reload",
    ]
    assert AuditEntry.objects.get(action="plugin.update").changes == {"interval": [10, 20]}
    assert set(AuditEntry.objects.values_list("via", "actor_name")) == {("admin", "staff")}


def test_without_a_context_a_change_is_the_shells(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {})
    entry = AuditEntry.objects.get(job_ref=job.pk)
    assert (entry.via, entry.actor, entry.owner) == ("shell", None, alice)


def test_pages_and_admin_record_the_requester_and_the_way_in(alice, staff, sample_plugin):
    page = login(alice)
    page.post(f"/plugins/{sample_plugin.pk}/jobs/new/", {"new-description": "mine", "new-config": '{"name": "A"}'})
    job = Job.objects.get(user=alice)
    page.post(f"/jobs/{job.pk}/run/")
    admin = login(staff)
    response = admin.post(
        "/admin/scheduler_app/job/", {"action": "activate_jobs", "_selected_action": [job.pk]}, follow=True
    )
    assert response.status_code == 200
    rows = list(AuditEntry.objects.filter(job_ref=job.pk).order_by("id").values_list("action", "via", "actor_name"))
    assert rows == [("job.create", "page", "alice"), ("run.now", "page", "alice"), ("job.activate", "admin", "staff")]


def test_fixtures_are_recorded_as_fixtures(db):
    call_command("loaddata", "demo", verbosity=0)
    vias = set(AuditEntry.objects.values_list("via", flat=True))
    assert vias == {"fixture"}
    assert AuditEntry.objects.filter(action="job.fixture").count() == Job.objects.count() > 0
    assert AuditEntry.objects.filter(action="plugin.fixture").count() == Plugin.objects.count()


def test_the_owner_and_permitted_operators_see_a_jobs_history_and_nobody_else(alice, bob, staff, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "Ann"}, description="alice's")
    services.update_job(job, config={"name": "Zed"})
    url = f"/jobs/{job.pk}/history/"
    owner_page = login(alice).get(url)
    assert owner_page.status_code == 200
    assert b"config.name: Ann" in owner_page.content and b"Zed" in owner_page.content
    assert login(bob).get(url).status_code == 404
    assert login(staff).get(url).status_code == 200  # a superuser holds every permission
    operator = get_user_model().objects.create_user("op", "op@example.com", "op-pass", is_staff=True)
    assert login(operator).get(url).status_code == 404  # staff without the audit permission
    assert login(operator).get("/admin/scheduler_app/auditentry/").status_code == 403
    operator.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    operator = get_user_model().objects.get(pk=operator.pk)
    assert login(operator).get(url).status_code == 200
    listing = login(operator).get("/admin/scheduler_app/auditentry/?action__exact=job.update")
    assert listing.status_code == 200 and b"changed job" in listing.content
    # after the job is deleted its owner still sees what happened to it; bob still does not
    services.delete_job(job)
    assert b"deleted job" in login(alice).get(url).content
    assert login(bob).get(url).status_code == 404


def test_only_the_owner_changes_the_alerts_and_the_change_is_audited(alice, staff, sample_plugin):
    job = services.create_job(alice, sample_plugin, {})
    url = f"/jobs/{job.pk}/history/"
    form = {"enabled": "on", "email": "alice@example.com", "webhook_url": "https://hooks.example.com/T0k3n",
            "after_failures": "2", "notify_recovery": "on"}  # fmt: skip
    assert login(staff).post(url, form).status_code == 404
    assert login(alice).post(url, form).status_code == 302
    job.refresh_from_db()
    assert (job.alert_rule.email, job.alert_rule.after_failures) == ("alice@example.com", 2)
    entry = AuditEntry.objects.get(job_ref=job.pk, action="job.alerts")
    assert "T0k3n" not in str(entry.changes)  # webhook URLs carry tokens: masked
    bad = login(alice).post(url, {**form, "email": "not-an-address"})
    assert bad.status_code == 400 and "is not an email address" in bad.content.decode()


def test_commands_are_recorded_as_commands(db):
    package = "plugins.sample_plugin@v0_1_0.plugin.Plugin"
    call_command("plugins", "register", package, "--interval", "30", stdout=io.StringIO())
    call_command("reloadplugin", package, stdout=io.StringIO())
    assert list(AuditEntry.objects.order_by("id").values_list("action", "via")) == [
        ("plugin.register", "command"),
        ("plugin.reload", "command"),
    ]


def test_creating_an_active_job_records_the_creation_then_the_activation(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "Ann"}, activate=True)
    assert actions(job_ref=job.pk) == ["job.create", "job.activate"]
    created = AuditEntry.objects.get(job_ref=job.pk, action="job.create")
    assert created.changes == {"config.name": [None, "Ann"], "config.times": [None, 3]}


def test_a_schedule_change_and_a_cancel_are_recorded(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {})
    with audit.acting(alice, "page"):
        services.update_job(job, schedule=services.JobSchedule(schedule="*/5 * * * *", max_retries=2))
        run = services.run_now(job)
        services.cancel_run(run, alice)
    update = AuditEntry.objects.get(job_ref=job.pk, action="job.update")
    assert update.changes["schedule"] == ["", "*/5 * * * *"] and update.changes["max_retries"] == [0, 2]
    cancel = AuditEntry.objects.get(job_ref=job.pk, action="run.cancel")
    assert (cancel.via, cancel.actor_name) == ("page", "alice") and f"run {run.pk}" in cancel.summary
