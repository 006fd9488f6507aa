"""Helpers for plugin-system tests: a temporary MODULE_PATH folder to write plugins into.

Each test gets a unique plugin name, so modules imported by one test never shadow another's.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.test import override_settings

from scheduler_app import plugin_host

GOOD_PLUGIN = '''
"""{name}: a throwaway plugin written by a test."""

from __future__ import annotations

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Config(BaseModel):
    greeting: str = Field("hello", description="What to say.")


class Plugin(JobPlugin):
    Config = Config
    title = "{name} title"
    description = "{name} description"

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        context.logger.info("%s from {marker}", config.greeting)
'''


@dataclass
class PluginFolder:
    """A MODULE_PATH folder; ``write`` puts a plugin version into it."""

    path: Path
    name: str

    def folder(self, version: str = "v1_0_0") -> Path:
        return self.path / f"{self.name}@{version}"

    def package(self, version: str = "v1_0_0", cls: str = "Plugin") -> str:
        return f"{self.name}@{version}.plugin.{cls}"

    def write(self, source: str, version: str = "v1_0_0", filename: str = "plugin.py") -> Path:
        folder = self.folder(version)
        folder.mkdir(parents=True, exist_ok=True)
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text(f'"""{self.name} {version}."""\n')
        target = folder / filename
        target.write_text(textwrap.dedent(source).lstrip())
        return target

    def write_good(self, marker: str = "v1", version: str = "v1_0_0") -> str:
        self.write(GOOD_PLUGIN.format(name=self.name, marker=marker), version)
        return self.package(version)


@pytest.fixture(name="module_path")
def module_path_fixture(tmp_path: Path) -> Iterator[PluginFolder]:
    folder = tmp_path / "extra_plugins"
    folder.mkdir()
    name = f"tmp_{uuid.uuid4().hex[:10]}"
    with override_settings(MODULE_PATH=[folder]):
        yield PluginFolder(folder, name)
    for package in list(plugin_host.loaded_packages()):
        if package.startswith(name):
            plugin_host.forget(package)
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]
    if str(folder) in sys.path:
        sys.path.remove(str(folder))
