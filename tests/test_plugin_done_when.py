"""Issue 3's "Done when", end to end.

A plugin written from docs/PLUGIN_DEVELOPMENT.md alone (its complete example is copied out
of the doc), placed in a MODULE_PATH folder, with Optional, enum, nested-model and list
fields, is registered, configured through the form (an invalid value is refused on the
right field), run with ``runplugin``, edited and hot-reloaded, and a broken version of it is
reported without stopping anything.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django import forms
from django.core.management import call_command
from django.test import override_settings

from scheduler_app import plugin_host, secretbox, services
from scheduler_app.checks import check_plugins
from scheduler_app.config_forms import ConfigField, initial_config
from scheduler_app.models import Plugin
from scheduler_app.plugin_host import PluginLoadError
from scheduler_app.testing import run_plugin
from tests.processes import ROOT, process_env

DOC = ROOT / "docs" / "PLUGIN_DEVELOPMENT.md"
PACKAGE = "station_report@v1_0_0.plugin.Plugin"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml")]
PYTEST += ["--rootdir", str(ROOT)]


def doc_example(marker: str) -> str:
    """The ```python block that follows ``<!-- example: marker -->`` in the doc."""
    text = DOC.read_text()
    match = re.search(rf"<!-- example: {re.escape(marker)} -->\n```python\n(.*?)\n```", text, re.DOTALL)
    assert match, f"docs/PLUGIN_DEVELOPMENT.md has no example {marker}"
    return match.group(1) + "\n"


def doc_block_containing(needle: str) -> str:
    for block in re.findall(r"```python\n(.*?)\n```", DOC.read_text(), re.DOTALL):
        if needle in block:
            return block + "\n"
    raise AssertionError(f"no python block with {needle!r} in the doc")


@pytest.fixture
def extra_plugins(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "extra"
    (folder / "station_report@v1_0_0").mkdir(parents=True)
    with override_settings(MODULE_PATH=[folder]):
        yield folder
    for package in list(plugin_host.loaded_packages()):
        if package.startswith("station_report@"):
            plugin_host.forget(package)
    for name in [m for m in sys.modules if m.startswith("station_report@")]:
        del sys.modules[name]
    if str(folder) in sys.path:
        sys.path.remove(str(folder))


def config_form(plugin: Plugin, data: dict | None = None, stored: dict | None = None) -> forms.Form:
    class JobForm(forms.Form):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.fields["config"] = ConfigField(plugin, stored=stored, initial=initial_config(plugin, stored))

    return JobForm({"config": json.dumps(data)}) if data is not None else JobForm()


def widget_data(form: forms.Form) -> dict:
    import html

    attr = re.search(r'data-django-jsonform="([^"]*)"', str(form["config"])).group(1)
    return json.loads(html.unescape(attr))


@pytest.mark.django_db(transaction=True)
def test_a_plugin_from_the_docs_goes_from_a_folder_to_reloaded_code(extra_plugins: Path, alice):
    folder = extra_plugins / "station_report@v1_0_0"
    (folder / "__init__.py").write_text("")
    source = doc_example("station_report@v1_0_0/plugin.py")
    (folder / "plugin.py").write_text(source)

    # Found and registered in one step.
    available = {p.package: p for p in plugin_host.discover()}
    assert available[PACKAGE].error == "" and available[PACKAGE].version == "1.0.0"
    call_command("plugins", "register", PACKAGE, "--interval", "30", stdout=StringIO())
    plugin = Plugin.objects.get(package=PACKAGE)

    # Configured through the form: the fresh form carries the defaults, including the list.
    fresh = widget_data(config_form(plugin))
    data = json.loads(fresh["data"])
    assert data["stations"] == [{"name": "Harbour", "altitude": 0}] and data["units"] == "metric"
    schema = fresh["schema"]
    assert schema["properties"]["note"]["x-nullable"] is True
    assert schema["$defs"]["Units"]["enum"] == ["metric", "imperial"]

    # An invalid value is refused on the right field.
    data["stations"] = [{"name": "Peak", "altitude": 3000}, {"name": "Moon", "altitude": 99999}]
    data["units"] = "kelvin"
    refused = config_form(plugin, data)
    assert not refused.is_valid()
    error_map = widget_data(refused)["errorMap"]
    assert set(error_map) == {"stations§1§altitude", "units"}
    assert "less than or equal to 9000" in error_map["stations§1§altitude"][0]

    # A valid one is saved through the service; empty optional inputs become null.
    data["stations"] = [{"name": "Peak", "altitude": 3000}]
    data["units"] = "metric"
    data["note"], data["alerts"] = "", {"above": 4.0, "email": ""}
    data["api_key"] = "k-123"
    accepted = config_form(plugin, data)
    assert accepted.is_valid(), accepted.errors
    job = services.create_job(alice, plugin, accepted.cleaned_data["config"], activate=True)
    assert job.config["note"] is None and job.config["alerts"] == {"above": 4.0, "email": None}
    assert job.config["api_key"].startswith("fernet:")  # encrypted at rest
    assert secretbox.reveal(job.config)["api_key"] == "k-123"
    assert "k-123" not in str(config_form(plugin, stored=job.config)["config"])

    # Run with runplugin, in a process of its own that finds the plugin through MODULE_PATH.
    env = process_env(MODULE_PATH=str(extra_plugins))
    done = subprocess.run(
        [sys.executable, "manage.py", "runplugin", "--job", str(job.pk)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INFO     report for 1 station(s), metric units" in done.stdout
    assert "WARNING  Peak: 5.0 degrees" in done.stdout
    assert "k-123" not in done.stdout + done.stderr

    # The doc's own test of the example passes as written.
    (folder / "test_station_report.py").write_text(doc_block_containing("def test_it_reports_each_station"))
    tested = subprocess.run(
        [*PYTEST, str(folder / "test_station_report.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0 and "2 passed" in tested.stdout, tested.stdout + tested.stderr

    # Edited and hot-reloaded: the next runs use the new code.
    assert run_plugin(PACKAGE, job.config).messages()[0] == "report for 1 station(s), metric units"
    (folder / "plugin.py").write_text(source.replace('"report for %d station(s)', '"REPORT v2 for %d station(s)'))
    plugin = services.reload_plugin(plugin)
    assert plugin.code_version == 2
    assert run_plugin(PACKAGE, job.config).messages()[0] == "REPORT v2 for 1 station(s), metric units"

    # A broken version is reported, and nothing stops: the old code keeps running.
    (folder / "plugin.py").write_text(source.replace("class Plugin(JobPlugin):", "class Plugin(JobPlugin)"))
    with pytest.raises(PluginLoadError, match=r"syntax error in .*plugin\.py line \d+"):
        services.reload_plugin(plugin)
    plugin.refresh_from_db()
    assert plugin.code_version == 2
    assert run_plugin(PACKAGE, job.config).messages()[0] == "REPORT v2 for 1 station(s), metric units"
    assert config_form(plugin, stored=job.config)["config"].field.load_error is None
    out = StringIO()
    with pytest.raises(Exception, match="not reloaded, the old code keeps running"):
        call_command("reloadplugin", PACKAGE, stdout=out)

    # A broken new version folder is listed with its error and refused at registration,
    # while every other plugin still loads.
    broken = extra_plugins / "station_report@v1_1_0"
    broken.mkdir()
    (broken / "__init__.py").write_text("")
    (broken / "plugin.py").write_text(
        source.replace("import logging", "import logging\nimport weather_sdk_not_installed")
    )
    available = {p.package: p for p in plugin_host.discover()}
    assert (
        "it imports 'weather_sdk_not_installed', not installed"
        in available["station_report@v1_1_0.plugin.Plugin"].error
    )
    assert all(p.ok for name, p in available.items() if not name.startswith("station_report@v1_1_0"))
    with pytest.raises(PluginLoadError):
        services.register_plugin("station_report@v1_1_0.plugin.Plugin", interval=30)

    # Registered anyway (say, by a fixture): the check reports it, its form shows the error.
    bad = Plugin.objects.create(package="station_report@v1_1_0.plugin.Plugin", interval=30)
    assert [m.id for m in check_plugins(explicit=True)] == ["scheduler_app.E001"]
    form = config_form(bad, {"stations": []})
    assert not form.is_valid() and "weather_sdk_not_installed" in " ".join(form.errors["config"])
