"""The demo data (``manage.py loaddata demo``): what the README promises a newcomer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Model
from django.test import override_settings

from scheduler_app import plugin_host, services
from scheduler_app.models import Job, JobRun, LogLine, Plugin, SchedulerNode
from tests.processes import ROOT, process_env

MODELS: list[type[Model]] = [get_user_model(), Plugin, Job, JobRun, LogLine, SchedulerNode]

DEMO_PACKAGES = {
    "plugins.sample_plugin@v0_1_0.plugin.Plugin",
    "plugins.sample_plugin@v0_2_0.plugin.Plugin",
    "plugins.lab_plugin@v0_1_0.plugin.Plugin",
    "plugins.stable_plugin@v0_1_0.plugin.Plugin",
    "plugins.prod_plugin@v0_1_0.plugin.Plugin",
}


def snapshot() -> dict[str, list[dict]]:
    return {model.__name__: list(model._default_manager.order_by("pk").values()) for model in MODELS}


@pytest.fixture
def demo(db):
    call_command("loaddata", "demo", verbosity=0)


def test_loading_the_demo_twice_changes_nothing(demo):
    first = snapshot()
    call_command("loaddata", "demo", verbosity=0)
    assert snapshot() == first
    assert {name: len(rows) for name, rows in first.items()} == {
        "User": 3,
        "Plugin": 5,
        "Job": 10,
        "JobRun": 0,
        "LogLine": 0,
        "SchedulerNode": 0,
    }


def test_the_demo_registers_the_five_example_plugins_and_they_load(demo):
    assert set(Plugin.objects.values_list("package", flat=True)) == DEMO_PACKAGES
    for package in DEMO_PACKAGES:
        plugin_host.check_package(package)


def test_every_demo_job_config_is_what_the_service_would_save(demo):
    for job in Job.objects.select_related("plugin"):
        assert services.validate_config(job.plugin, job.config) == job.config, job


def test_every_demo_user_has_several_jobs_and_some_are_active(demo):
    for username in ("alice", "bob"):
        jobs = Job.objects.filter(user__username=username)
        assert jobs.count() >= 3 and jobs.filter(active=True).exists() and jobs.filter(active=False).exists()


# The fixture's hashes are PBKDF2 (Django's default); the test settings use a fast MD5 hasher.
@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"])
@pytest.mark.parametrize(
    "username, password, staff",
    [("admin", "admin", True), ("alice", "alice", False), ("bob", "bob", False)],
)
def test_the_readme_logins_work(demo, username, password, staff):
    user = authenticate(username=username, password=password)
    assert user is not None, f"{username}/{password} from the README does not log in"
    assert (user.is_staff, user.is_superuser) == (staff, staff)
    assert authenticate(username=username, password=password + "x") is None


def test_new_rows_after_the_demo_get_fresh_ids(demo):
    # loaddata sets explicit primary keys; PostgreSQL's sequences must be moved past them.
    plugin = Plugin.objects.create(name="new", package="plugins.new@v1_0_0.plugin.Plugin", interval=5)
    user = get_user_model().objects.create_user("carol", password="carol-pass")
    job = Job.objects.create(user=user, plugin=plugin)
    assert plugin.pk > 5 and user.pk > 3 and job.pk > 10


# --- invalid fixtures: refused whole, with one line naming the object, the field and the reason ---


def write_fixture(tmp_path, objects: list[dict], name: str = "bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(objects))
    return path


def plugin_and_job(config: dict, *, description: str = "from a fixture") -> list[dict]:
    return [
        {
            "model": "scheduler_app.plugin",
            "pk": 41,
            "fields": {
                "name": "Sample",
                "package": "plugins.sample_plugin@v0_1_0.plugin.Plugin",
                "interval": 10,
                **STAMPS,
            },
        },
        {
            "model": "scheduler_app.job",
            "pk": 42,
            "fields": {
                "user": 1,
                "plugin": 41,
                "description": description,
                "config": config,
                "active": True,
                **STAMPS,
            },
        },
    ]


STAMPS = {"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
USER = {"model": "auth.user", "pk": 1, "fields": {"username": "fixture-user", "password": "!"}}


def test_an_invalid_job_config_fails_the_whole_fixture_naming_object_field_and_reason(db, tmp_path):
    path = write_fixture(tmp_path, [USER, *plugin_and_job({"name": "", "times": 999, "evil": 1})])
    with pytest.raises(CommandError) as caught:
        call_command("loaddata", str(path), verbosity=0)
    message = str(caught.value)
    assert "\n" not in message
    assert "bad.json" in message and "scheduler_app.Job(pk=42)" in message
    assert "config.name: String should have at least 1 character" in message
    assert "config.times: Input should be less than or equal to 10" in message
    # Nothing of the fixture: not the user or the plugin listed before the job either.
    assert not Job.objects.exists() and not Plugin.objects.exists() and not get_user_model().objects.exists()


def test_a_valid_fixture_job_is_stored_normalised_as_the_service_would(db, tmp_path):
    path = write_fixture(tmp_path, [USER, *plugin_and_job({"name": "Ann", "evil": 1})])
    call_command("loaddata", str(path), verbosity=0)
    assert Job.objects.get(pk=42).config == {"name": "Ann", "times": 3}


@pytest.mark.parametrize(
    "objects, reason",
    [
        ([USER, *plugin_and_job({"name": "a\x00b"})], "config.name: The text contains a NUL character"),
        ([USER, *plugin_and_job({"name": "Ann"}, description="a\x00b")], "description: contains a NUL character"),
        ([USER, *plugin_and_job({"name": "\ud800"})], "unpaired surrogate"),
    ],
    ids=["NUL in the config", "NUL in a text field", "lone surrogate"],
)
def test_nul_and_surrogates_in_a_fixture_give_one_clear_line_on_every_database(db, tmp_path, objects, reason):
    path = write_fixture(tmp_path, objects)
    with pytest.raises(CommandError) as caught:
        call_command("loaddata", str(path), verbosity=0)
    assert "\n" not in str(caught.value) and "scheduler_app.Job(pk=42)" in str(caught.value)
    assert reason in str(caught.value)
    assert not Job.objects.exists()


def test_a_job_before_its_plugin_is_refused_with_the_reason(db, tmp_path):
    plugin, job = plugin_and_job({"name": "Ann"})
    path = write_fixture(tmp_path, [USER, job, plugin])
    with pytest.raises(CommandError, match=r"Job\(pk=42\): plugin: no plugin with pk=41"):
        call_command("loaddata", str(path), verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_manage_py_loaddata_exits_1_with_one_line_and_no_traceback(tmp_path):
    path = write_fixture(tmp_path, [USER, *plugin_and_job({"name": "", "times": 999}, description="a\x00b")])
    result = subprocess.run(
        [sys.executable, "manage.py", "loaddata", str(path)],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("CommandError: Problem installing fixture"), result.stderr
    assert "scheduler_app.Job(pk=42)" in lines[0] and "NUL" in lines[0]
    assert not Job.objects.exists()


def test_the_demo_admin_reads_every_users_pages_and_the_operators_group_grants_it(demo):
    from django.contrib.auth.models import Group

    from scheduler_app.access import can_view

    users = get_user_model().objects
    admin, alice, bob = users.get(username="admin"), users.get(username="alice"), users.get(username="bob")
    assert can_view(admin, alice) and can_view(admin, bob) and not can_view(alice, bob)
    operator = users.create_user("olga", password="olga-pass", is_staff=True)
    assert not can_view(operator, alice)  # staff status alone reads nothing of others
    operator.groups.add(Group.objects.get(name="operators"))
    operator = users.get(pk=operator.pk)  # permissions are cached per user object
    assert can_view(operator, alice) and operator.has_perm("scheduler_app.view_jobrun")
