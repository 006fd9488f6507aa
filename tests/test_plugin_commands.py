"""The author's and operator's commands: runplugin, startplugin, reloadplugin, plugins."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from scheduler_app import plugin_host
from scheduler_app.models import Plugin
from tests.plugins.helpers import PluginFolder, module_path_fixture  # noqa: F401 - the fixture
from tests.processes import ROOT, manage, process_env

SAMPLE = "plugins.sample_plugin@v0_1_0.plugin.Plugin"
LAB = "plugins.lab_plugin@v0_1_0.plugin.Plugin"


def runplugin(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "runplugin", *args],
        cwd=ROOT,
        env=process_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- runplugin -------------------------------------------------------------------------------


def test_runplugin_prints_the_log_and_exits_0_on_success():
    done = runplugin(SAMPLE, "--config", '{"name": "Ada", "times": 2}')
    assert done.returncode == 0, done.stderr
    assert "INFO     Hello, Ada! (1/2)" in done.stdout and "INFO     Hello, Ada! (2/2)" in done.stdout
    assert "DEBUG    greeting Ada 2 times" in done.stdout
    assert "succeeded" in done.stderr


def test_runplugin_exits_1_when_the_run_fails():
    done = runplugin(LAB, "--config", '{"samples": 1, "failure_rate": 1, "seed": 3}')
    assert done.returncode == 1
    assert "ERROR    calibration check failed" in done.stdout
    assert "failed: ExperimentFailed: sensor drift" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((SAMPLE, "--config", '{"times": 0}'), "times: Input should be greater than or equal to 1"),
        ((SAMPLE, "--config", "{not json"), "--config is not valid JSON"),
        ((SAMPLE, "--config", "[1]"), "--config must be a JSON object"),
        (("plugins.nope@v1_0_0.plugin.Plugin",), "module not found"),
    ],
)
def test_runplugin_exits_2_on_bad_input(args, message):
    done = runplugin(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr


def test_runplugin_never_prints_a_secret():
    done = runplugin("plugins.prod_plugin@v0_1_0.plugin.Plugin", "--config", '{"token": "very-secret-token"}')
    assert done.returncode == 0, done.stderr
    assert "very-secret-token" not in done.stdout + done.stderr
    assert '"token": "**********"' in done.stderr


OPTIONAL_SECRET_PLUGIN = """
from pydantic import BaseModel, SecretStr

from scheduler_app import JobPlugin, RunContext, hookimpl


class Nested(BaseModel):
    password: SecretStr | None = None


class Config(BaseModel):
    api_key: SecretStr | None = None
    nested: Nested = Nested()


class Plugin(JobPlugin):
    Config = Config

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        context.logger.info("key has %d characters", len(config.api_key.get_secret_value()))
"""


def test_runplugin_never_prints_an_optional_or_nested_secret(module_path: PluginFolder):
    module_path.write(OPTIONAL_SECRET_PLUGIN)
    config = json.dumps({"api_key": "optional-secret-1", "nested": {"password": "nested-secret-2"}})
    done = runplugin(module_path.package(), "--config", config, MODULE_PATH=str(module_path.path))
    assert done.returncode == 0, done.stderr
    assert "key has 17 characters" in done.stdout
    assert "optional-secret-1" not in done.stdout + done.stderr
    assert "nested-secret-2" not in done.stdout + done.stderr
    assert '"api_key": "**********"' in done.stderr


def test_ctrl_c_cancels_the_run_cleanly(tmp_path: Path):
    proc = manage(["runplugin", SAMPLE, "--config", '{"times": 10}'], tmp_path / "run.log")
    try:
        proc.wait_for_output("Hello, world! (1/10)")
        proc.signal(signal.SIGINT)
        assert proc.proc.wait(20) == 130
        output = proc.output()
        assert "stopped early, after 1 of 10 greetings" in output and "cancelled" in output
        assert "Traceback" not in output
    finally:
        proc.kill()


def test_runplugin_finds_module_path_plugins_through_the_environment(module_path: PluginFolder):
    package = module_path.write_good(marker="extra")
    done = runplugin(package, MODULE_PATH=str(module_path.path))
    assert done.returncode == 0, done.stderr
    assert "hello from extra" in done.stdout


# --- startplugin ------------------------------------------------------------------------------


def test_startplugin_scaffolds_a_plugin_whose_test_passes(tmp_path: Path):
    out = StringIO()
    call_command("startplugin", "weather_report", "--directory", str(tmp_path), stdout=out)
    folder = tmp_path / "weather_report@v0_1_0"
    assert (folder / "plugin.py").is_file() and (folder / "__init__.py").is_file()
    assert (folder / "test_plugin.py").is_file()
    assert "runplugin 'weather_report@v0_1_0.plugin.Plugin'" in out.getvalue()
    # The scaffold's own test passes as an author would run it.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(ROOT),
            str(folder / "test_plugin.py"),
        ],
        cwd=ROOT,
        env=process_env(MODULE_PATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_startplugin_refuses_bad_names_and_existing_folders(tmp_path: Path):
    with pytest.raises(CommandError, match="not a valid name"):
        call_command("startplugin", "bad-name", "--directory", str(tmp_path))
    call_command("startplugin", "twice", "--directory", str(tmp_path), stdout=StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("startplugin", "twice", "--directory", str(tmp_path))


# --- plugins / reloadplugin ---------------------------------------------------------------------


def test_plugins_lists_what_is_available_and_registers_in_one_step(db, module_path: PluginFolder):
    package = module_path.write_good()
    module_path.write("def broken(:\n", version="v2_0_0")
    out = StringIO()
    call_command("plugins", stdout=out)
    listing = out.getvalue()
    assert f"ok     {package}" in listing and "[not registered]" in listing
    assert f"BROKEN {module_path.package('v2_0_0')}" in listing and "syntax error" in listing
    assert f"MODULE_PATH={module_path.path}" in listing

    call_command("plugins", "register", package, "--interval", "30", stdout=StringIO())
    plugin = Plugin.objects.get(package=package)
    assert (plugin.interval, plugin.description) == (30, f"{module_path.name} description")
    with pytest.raises(CommandError, match="already registered"):
        call_command("plugins", "register", package, "--interval", "30")
    with pytest.raises(CommandError, match="does not load"):
        call_command("plugins", "register", module_path.package("v2_0_0"), "--interval", "30")


def test_reloadplugin_bumps_the_code_version_or_keeps_the_old_code(db, module_path: PluginFolder):
    package = module_path.write_good(marker="one")
    plugin = Plugin.objects.create(package=package, interval=10)
    plugin_host.get_plugin(package)
    module_path.write_good(marker="two")
    out = StringIO()
    call_command("reloadplugin", package, stdout=out)
    assert "code version 2" in out.getvalue()
    plugin.refresh_from_db()
    assert plugin.code_version == 2
    assert plugin_host.get_plugin(package).instance.__module__ == package.rsplit(".", 1)[0]

    module_path.write("raise ImportError('half-written file')\n")
    with pytest.raises(CommandError, match=r"the old code keeps running.*half-written file"):
        call_command("reloadplugin", str(plugin.pk))
    plugin.refresh_from_db()
    assert plugin.code_version == 2


def test_reloadplugin_names_an_unknown_plugin(db):
    with pytest.raises(CommandError, match="no registered plugin"):
        call_command("reloadplugin", "plugins.nope@v1_0_0.plugin.Plugin")


def test_the_demo_plugins_load_in_a_fresh_process():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from scheduler_app import plugin_host; "
            "import json; print(json.dumps([p.error for p in plugin_host.discover()]))",
        ],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout.strip().splitlines()[-1])) == {""}
