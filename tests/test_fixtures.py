"""The demo data (``manage.py loaddata demo``): what the README promises a newcomer."""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.db.models import Model
from django.test import override_settings

from scheduler_app import plugin_host, services
from scheduler_app.models import Job, JobRun, LogLine, Plugin, SchedulerNode

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
