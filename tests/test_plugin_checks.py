"""``manage.py check`` reports plugins that do not load and job configs that no longer validate."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from scheduler_app.checks import check_plugins
from scheduler_app.models import Job, Plugin
from tests.conftest import SAMPLE


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_it_is_silent_when_everything_loads_and_validates(sample_plugin, alice):
    Job.objects.create(user=alice, plugin=sample_plugin, config={"name": "Ada", "times": 2})
    assert check_plugins(explicit=True) == []


def test_a_plugin_that_does_not_load_is_an_error(db):
    Plugin.objects.create(name="Gone", package="plugins.gone@v1_0_0.plugin.Plugin", interval=10)
    [message] = check_plugins(explicit=True)
    assert message.id == "scheduler_app.E001"
    assert "plugins.gone@v1_0_0.plugin.Plugin: module not found" in message.msg
    with pytest.raises(SystemCheckError, match=r"scheduler_app\.E001"):
        call_command("check")


def test_a_job_config_that_no_longer_validates_is_a_warning(sample_plugin, alice, capsys):
    job = Job.objects.create(user=alice, plugin=sample_plugin, config={"name": "Ada", "times": 2})
    # As if the plugin's Config changed under a stored config (bypassing the services on purpose).
    Job.objects.filter(pk=job.pk).update(config={"name": "Ada", "times": 99})
    [message] = check_plugins(explicit=True)
    assert (message.id, message.obj) == ("scheduler_app.W002", Job.objects.get(pk=job.pk))
    assert "times: Input should be less than or equal to 10" in message.msg
    call_command("check")  # warnings do not fail the command
    assert "scheduler_app.W002" in capsys.readouterr().err


def test_jobs_of_a_broken_plugin_are_not_reported_twice(alice):
    plugin = Plugin.objects.create(name="Broken", package=SAMPLE.replace("Plugin", "Missing"), interval=10)
    Job.objects.create(user=alice, plugin=plugin, config={"anything": 1})
    assert ids(check_plugins(explicit=True)) == ["scheduler_app.E001"]


def test_other_commands_still_start_with_a_broken_plugin(db, capsys):
    # runscheduler, serve and runserver run the system checks too: a broken plugin must
    # not stop them, so outside "manage.py check" it is a warning.
    Plugin.objects.create(name="Gone", package="plugins.gone@v1_0_0.plugin.Plugin", interval=10)
    [message] = check_plugins(explicit=False)
    assert message.id == "scheduler_app.W001" and "module not found" in message.msg
    call_command("plugins", skip_checks=False, stdout=StringIO())  # checks on, as from a shell: not refused
    assert "scheduler_app.W001" in capsys.readouterr().err
    with pytest.raises(SystemCheckError, match=r"scheduler_app\.E001"):
        call_command("check")
