"""The plugin host: loading by dotted path, discovery, clear load errors, hot reload, threads."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from pathlib import Path

import pytest

from scheduler_app import plugin_host
from scheduler_app.contract import RunContext
from scheduler_app.plugin_host import PluginLoadError
from tests.plugins.helpers import PluginFolder, module_path_fixture  # noqa: F401 - the fixture

SAMPLE = "plugins.sample_plugin@v0_1_0.plugin.Plugin"


def run_lines(loaded: plugin_host.LoadedPlugin, raw: dict) -> list[str]:
    """Run the plugin once and return its log messages."""
    records: list[str] = []
    log = logging.getLogger(f"test.run.{id(records)}")
    log.propagate = False
    log.setLevel(logging.DEBUG)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    log.addHandler(Collect())
    asyncio.run(loaded.run(loaded.validate(raw), RunContext(logger=log)))
    return records


# --- loading ---------------------------------------------------------------------------------


def test_it_loads_a_repo_plugin_by_dotted_path():
    loaded = plugin_host.get_plugin(SAMPLE)
    assert loaded is plugin_host.get_plugin(SAMPLE)
    assert loaded.schema()["properties"]["name"]["default"] == "world"
    assert plugin_host.validate_config(SAMPLE, {"name": "Ada"}) == {"name": "Ada", "times": 3}


def test_it_loads_a_module_path_plugin(module_path: PluginFolder):
    package = module_path.write_good(marker="first")
    assert run_lines(plugin_host.get_plugin(package), {}) == ["hello from first"]


def test_two_versions_of_a_plugin_live_side_by_side(module_path: PluginFolder):
    v1 = module_path.write_good(marker="one", version="v1_0_0")
    v2 = module_path.write_good(marker="two", version="v2_0_0")
    assert run_lines(plugin_host.get_plugin(v1), {}) == ["hello from one"]
    assert run_lines(plugin_host.get_plugin(v2), {}) == ["hello from two"]


# --- clear errors -------------------------------------------------------------------------------


def test_an_unknown_module_says_where_it_looked(module_path: PluginFolder):
    with pytest.raises(PluginLoadError) as err:
        plugin_host.get_plugin("plugins.nope@v1_0_0.plugin.Plugin")
    message = str(err.value)
    assert message.startswith("plugins.nope@v1_0_0.plugin.Plugin: module not found")
    assert "plugins/" in message and str(module_path.path) in message and "entry points" in message


def test_a_missing_class_names_the_classes_that_are_there(module_path: PluginFolder):
    module_path.write_good()
    with pytest.raises(PluginLoadError) as err:
        plugin_host.get_plugin(module_path.package(cls="Plugn"))
    assert "has no class 'Plugn'" in str(err.value)
    assert "plugin classes there: Plugin" in str(err.value)


def test_a_syntax_error_names_file_and_line(module_path: PluginFolder):
    path = module_path.write("from scheduler_app import JobPlugin\n\nclass Plugin(JobPlugin)\n    pass\n")
    with pytest.raises(PluginLoadError) as err:
        plugin_host.get_plugin(module_path.package())
    assert f"syntax error in {path} line 3" in str(err.value)


def test_a_missing_dependency_is_named(module_path: PluginFolder):
    module_path.write("import not_installed_anywhere_xyz\n")
    with pytest.raises(PluginLoadError) as err:
        plugin_host.get_plugin(module_path.package())
    assert "it imports 'not_installed_anywhere_xyz', not installed" in str(err.value)


def test_a_sync_run_is_refused(module_path: PluginFolder):
    module_path.write(
        """
        from scheduler_app import JobPlugin, hookimpl

        class Plugin(JobPlugin):
            @hookimpl
            def run(self, config, context):
                pass
        """
    )
    with pytest.raises(PluginLoadError) as err:
        plugin_host.get_plugin(module_path.package())
    assert "run must be an async function" in str(err.value) and "plugin.py line 4" in str(err.value)


def test_an_invalid_schema_is_a_load_error(module_path: PluginFolder):
    module_path.write(
        """
        from pydantic import BaseModel
        from scheduler_app import JobPlugin, hookimpl

        class Plugin(JobPlugin):
            @hookimpl
            def schema(self):
                return {"type": "string"}

            @hookimpl
            async def run(self, config, context):
                pass
        """
    )
    with pytest.raises(PluginLoadError) as err:
        plugin_host.get_plugin(module_path.package())
    assert "invalid schema" in str(err.value)


def test_a_schema_pydantic_cannot_express_is_a_load_error(module_path: PluginFolder):
    module_path.write(
        """
        from typing import Callable
        from pydantic import BaseModel
        from scheduler_app import JobPlugin, hookimpl

        class Config(BaseModel):
            callback: Callable[[], None] = print

        class Plugin(JobPlugin):
            Config = Config

            @hookimpl
            async def run(self, config, context):
                pass
        """
    )
    with pytest.raises(PluginLoadError) as err:
        plugin_host.get_plugin(module_path.package())
    assert "invalid schema: the schema hook failed" in str(err.value)


def test_a_hook_with_wrong_argument_names_is_refused(module_path: PluginFolder):
    module_path.write(
        """
        from scheduler_app import JobPlugin, hookimpl

        class Plugin(JobPlugin):
            @hookimpl
            async def run(self, cfg, ctx):
                pass
        """
    )
    with pytest.raises(PluginLoadError) as err:
        plugin_host.get_plugin(module_path.package())
    assert "hook registration failed" in str(err.value) and "cfg" in str(err.value)


def test_check_package_raises_for_broken_and_passes_for_good(module_path: PluginFolder):
    plugin_host.check_package(SAMPLE)
    with pytest.raises(PluginLoadError):
        plugin_host.check_package("plugins.sample_plugin@v0_1_0.plugin.Nope")


# --- discovery ------------------------------------------------------------------------------------


def test_discover_lists_the_repo_plugins_with_versions():
    found = {p.package: p for p in plugin_host.discover()}
    sample = found[SAMPLE]
    assert (sample.name, sample.version, sample.source, sample.error) == ("sample_plugin", "0.1.0", "plugins/", "")
    assert found["plugins.sample_plugin@v0_2_0.plugin.Plugin"].version == "0.2.0"
    assert {
        "plugins.lab_plugin@v0_1_0.plugin.Plugin",
        "plugins.prod_plugin@v0_1_0.plugin.Plugin",
        "plugins.stable_plugin@v0_1_0.plugin.Plugin",
    } <= set(found)
    assert sample.description


def test_discover_lists_module_path_plugins_and_broken_ones(module_path: PluginFolder):
    good = module_path.write_good(version="v1_0_0")
    module_path.write("def broken(:\n", version="v2_0_0")
    found = {p.package: p for p in plugin_host.discover()}
    assert found[good].error == "" and found[good].title == f"{module_path.name} title"
    assert found[good].source == f"MODULE_PATH {module_path.path}"
    broken = found[module_path.package("v2_0_0")]
    assert "syntax error" in broken.error and broken.version == "2.0.0"


def test_discover_finds_installed_distributions_through_entry_points(tmp_path: Path, monkeypatch):
    # A real installed distribution as importlib.metadata sees it: a dist-info folder with
    # entry_points.txt beside the package, on sys.path.
    site = tmp_path / "site"
    package_dir = site / "acme_jobs"
    package_dir.mkdir(parents=True)
    (package_dir / "__init__.py").write_text("")
    (package_dir / "jobs.py").write_text(
        "from scheduler_app import JobPlugin, hookimpl\n\n"
        "class Cleaner(JobPlugin):\n"
        "    title = 'Acme cleaner'\n"
        "    @hookimpl\n"
        "    async def run(self, config, context):\n"
        "        context.logger.info('cleaned')\n"
    )
    dist_info = site / "acme_jobs-2.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-jobs\nVersion: 2.1.0\n")
    (dist_info / "entry_points.txt").write_text("[jobscheduler]\ncleaner = acme_jobs.jobs:Cleaner\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        found = {p.package: p for p in plugin_host.discover()}
        cleaner = found["acme_jobs.jobs.Cleaner"]
        assert (cleaner.name, cleaner.version, cleaner.title, cleaner.error) == ("cleaner", "2.1.0", "Acme cleaner", "")
        assert cleaner.source == "entry point acme-jobs 2.1.0"
        assert run_lines(plugin_host.get_plugin("acme_jobs.jobs.Cleaner"), {}) == ["cleaned"]
    finally:
        plugin_host.forget("acme_jobs.jobs.Cleaner")
        for name in [m for m in sys.modules if m.startswith("acme_jobs")]:
            del sys.modules[name]


# --- hot reload ---------------------------------------------------------------------------------


def test_reload_uses_the_new_code(module_path: PluginFolder):
    package = module_path.write_good(marker="old")
    old = plugin_host.get_plugin(package)
    module_path.write_good(marker="new")
    new = plugin_host.reload(package)
    assert plugin_host.get_plugin(package) is new
    assert run_lines(new, {}) == ["hello from new"]
    # A run already holding the old code keeps it intact.
    assert run_lines(old, {}) == ["hello from old"]


def test_reload_reimports_every_module_of_the_plugin_folder(module_path: PluginFolder):
    module_path.write("WORD = 'first'\n", filename="words.py")
    module_path.write(
        """
        from scheduler_app import JobPlugin, hookimpl
        from . import words

        class Plugin(JobPlugin):
            @hookimpl
            async def run(self, config, context):
                context.logger.info(words.WORD)
        """
    )
    package = module_path.package()
    assert run_lines(plugin_host.get_plugin(package), {}) == ["first"]
    module_path.write("WORD = 'second'\n", filename="words.py")
    assert run_lines(plugin_host.reload(package), {}) == ["second"]


def test_a_broken_reload_keeps_the_old_code_running(module_path: PluginFolder):
    package = module_path.write_good(marker="good")
    good = plugin_host.get_plugin(package)
    module_path.write("def broken(:\n")
    with pytest.raises(PluginLoadError) as err:
        plugin_host.reload(package)
    assert "syntax error" in str(err.value)
    assert plugin_host.get_plugin(package) is good
    assert run_lines(plugin_host.get_plugin(package), {}) == ["hello from good"]
    assert sys.modules[package.rsplit(".", 1)[0]].__name__ == package.rsplit(".", 1)[0]
    # Fixed again: the next reload works.
    module_path.write_good(marker="fixed")
    assert run_lines(plugin_host.reload(package), {}) == ["hello from fixed"]


def test_a_newer_code_version_reloads_once_and_a_failure_is_kept(module_path: PluginFolder, caplog):
    package = module_path.write_good(marker="v1")
    first = plugin_host.get_plugin(package, code_version=1)
    assert plugin_host.get_plugin(package, code_version=1) is first
    module_path.write_good(marker="v2")
    second = plugin_host.get_plugin(package, code_version=2)
    assert second is not first and run_lines(second, {}) == ["hello from v2"]
    module_path.write("raise RuntimeError('boom at import')\n")
    with caplog.at_level(logging.ERROR, logger="scheduler_app.plugins"):
        third = plugin_host.get_plugin(package, code_version=3)
    assert third is second and "boom at import" in third.reload_error
    assert "the old code keeps running" in caplog.text
    # One attempt per version: asking again does not retry.
    assert plugin_host.get_plugin(package, code_version=3) is second


def test_concurrent_first_loads_build_one_plugin(module_path: PluginFolder):
    package = module_path.write_good()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(plugin_host.get_plugin(package))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r is results[0] for r in results)


def test_trace_logs_every_hook_call(module_path: PluginFolder, monkeypatch, caplog):
    monkeypatch.setenv("JOBSCHEDULER_TRACE_PLUGINS", "1")
    package = module_path.write_good()
    with caplog.at_level(logging.INFO, logger="scheduler_app.plugins.trace"):
        run_lines(plugin_host.get_plugin(package), {})
    assert f"{package}: config(raw)" in caplog.text
    assert f"{package}: run(config, context)" in caplog.text
    assert f"{package}: run -> ok" in caplog.text


def test_a_process_that_missed_a_reload_catches_up_from_the_code_version(module_path: PluginFolder):
    package = module_path.write_good(marker="v1")
    first = plugin_host.get_plugin(package)  # loaded without a version, as the engine may
    assert plugin_host.get_plugin(package, code_version=1) is first  # version 1: never reloaded
    module_path.write_good(marker="v2")
    assert run_lines(plugin_host.get_plugin(package, code_version=2), {}) == ["hello from v2"]
    # After a reload in this very process, the bumped version is not a reason to reload again.
    module_path.write_good(marker="v3")
    reloaded = plugin_host.check_reload(package)
    plugin_host.mark_version(package, 3)
    assert plugin_host.get_plugin(package, code_version=3) is reloaded


def test_a_run_hook_is_called_with_the_arguments_it_names_as_pluggy_would():
    from scheduler_app import JobPlugin, hookimpl

    seen: list[object] = []

    class ContextOnly(JobPlugin):
        @hookimpl
        async def run(self, context: RunContext) -> None:
            seen.append(context)

    loaded = plugin_host.load_class(ContextOnly)
    context = RunContext(logger=logging.getLogger("t"))
    for _ in range(2):  # the first call finds the implementation, the second reuses it
        asyncio.run(loaded.run(config=None, context=context))  # type: ignore[arg-type]
    assert seen == [context, context]


def test_a_run_hook_that_returns_nothing_to_await_is_refused_as_through_pluggy():
    from scheduler_app import JobPlugin, hookimpl

    class Plain(JobPlugin):
        @hookimpl
        async def run(self, config: object, context: RunContext) -> None:
            pass

    loaded = plugin_host.load_class(Plain)
    loaded.instance.run = lambda config, context: None  # what a plugin changed at run time could do
    loaded._run_impl = (loaded.instance.run, ("config", "context"))
    with pytest.raises(PluginLoadError, match="expected one run implementation, found 0"):
        loaded.run(config=None, context=RunContext(logger=logging.getLogger("t")))  # type: ignore[arg-type]
