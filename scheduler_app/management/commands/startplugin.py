"""``manage.py startplugin <name>``: scaffold a versioned plugin folder and a test for it.

Creates ``plugins/<name>@v0_1_0/{__init__.py,plugin.py}`` (or under ``--directory``, for a
MODULE_PATH folder) and a test that runs it through ``scheduler_app.testing.run_plugin``:
``tests/test_plugin_<name>.py`` for the repo's ``plugins/`` (so the suite runs it), else
``test_plugin.py`` beside the plugin. Next steps are printed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

PLUGIN_TEMPLATE = '''"""{name} v{version}: {summary}"""

from __future__ import annotations

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Config(BaseModel):
    """What a user can set for this plugin (the form is generated from it)."""

    name: str = Field("world", min_length=1, description="Who to greet.")
    times: int = Field(3, ge=1, le=10, description="How many greetings.")


class Plugin(JobPlugin):
    Config = Config
    title = "{title}"
    description = "{summary}"

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        for i in range(1, config.times + 1):
            context.logger.info("Hello, %s! (%d/%d)", config.name, i, config.times)
            if await context.sleep(1):  # returns True when the run is cancelled
                context.logger.warning("stopped early")
                return
'''

TEST_TEMPLATE = '''"""Tests of the {name} plugin, run through the authors' helper."""

import pytest

from scheduler_app.plugin_host import ConfigValidationError
from scheduler_app.testing import run_plugin

PACKAGE = "{package}"


def test_it_greets():
    result = run_plugin(PACKAGE, {{"name": "Ada", "times": 1}})
    assert result.ok, result.traceback
    assert result.messages() == ["Hello, Ada! (1/1)"]


def test_it_refuses_a_bad_config():
    with pytest.raises(ConfigValidationError):
        run_plugin(PACKAGE, {{"times": 0}})
'''


class Command(BaseCommand):
    help = "Create a new plugin folder <name>@v0_1_0 with plugin.py and a test."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the plugin's name, a Python identifier (e.g. weather_report)")
        parser.add_argument("--plugin-version", dest="plugin_version", default="0.1.0", help="x.y.z (default 0.1.0)")
        parser.add_argument("--directory", default=None, help="where to create it (default: the repo's plugins/)")
        parser.add_argument("--description", default="", help="one line saying what it does")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise CommandError(f"{name!r} is not a valid name: use letters, digits and underscores (weather_report)")
        version = options["plugin_version"]
        if not re.fullmatch(r"\d+(\.\d+)*", version):
            raise CommandError(f"{version!r} is not a version like 0.1.0")
        repo_plugins = Path(settings.PLUGINS_DIR)
        base = Path(options["directory"]).resolve() if options["directory"] else repo_plugins
        folder_name = f"{name}@v{version.replace('.', '_')}"
        folder = base / folder_name
        if folder.exists():
            raise CommandError(f"{folder} already exists")
        in_repo = base.resolve() == repo_plugins.resolve()
        package = f"{'plugins.' if in_repo else ''}{folder_name}.plugin.Plugin"
        summary = options["description"] or f"the {name} plugin (describe what it does)."
        title = name.replace("_", " ").capitalize()
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text(f'"""{name} v{version}."""\n')
        (folder / "plugin.py").write_text(
            PLUGIN_TEMPLATE.format(name=name, version=version, summary=summary, title=title)
        )
        test_path = settings.BASE_DIR / "tests" / f"test_plugin_{name}.py" if in_repo else folder / "test_plugin.py"
        if not test_path.exists():
            test_path.write_text(TEST_TEMPLATE.format(name=name, package=package))
        self.stdout.write(f"created {folder}/plugin.py and {test_path}")
        python = _python()
        self.stdout.write("next (from the project's folder):")
        if not in_repo:
            self.stdout.write(f"  export MODULE_PATH={base}   # so the scheduler and the web find it")
        self.stdout.write(f"  {python} manage.py runplugin '{package}' --config '{{\"name\": \"Ada\"}}'")
        if in_repo:
            self.stdout.write(f"  {python} -m pytest {test_path.relative_to(settings.BASE_DIR)}")
        else:
            # A test outside the project finds no pytest configuration of its own: name the project's.
            self.stdout.write(f"  {python} -m pytest -c pyproject.toml --rootdir . {test_path}")
        self.stdout.write(f"  {python} manage.py plugins register '{package}' --interval 60")


def _python() -> str:
    """The interpreter to print: the project's virtualenv as a relative path, any other one by its
    full path (a virtualenv outside the project, not activated in the shell that pastes the
    commands: a bare ``python`` there is another interpreter, without Django)."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path(settings.BASE_DIR)))
    except ValueError:
        return str(exe)
