"""The engine's plugin registry: imports happen in its own thread, never on the loop; a failed
load is cached for its code version; concurrent first uses share one load."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from scheduler_app.engine.registry import make_registry
from scheduler_app.plugin_host import LoadedPlugin, PluginLoadError
from scheduler_app.testing import load
from tests.conftest import SAMPLE


class Loader:
    """Stands in for plugin_host.get_plugin: counts calls and notes the thread they ran in."""

    def __init__(self, *, broken: set[int] = frozenset(), delay: float = 0.0) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.broken = broken
        self.delay = delay

    def __call__(self, package: str, code_version: int) -> LoadedPlugin:
        self.calls.append((package, code_version, threading.current_thread().name))
        time.sleep(self.delay)  # an import is synchronous work
        if code_version in self.broken:
            raise PluginLoadError(package, f"syntax error in plugin.py line 3 (version {code_version})")
        return load(SAMPLE)


async def test_the_first_use_imports_in_the_registry_thread_while_the_loop_goes_on():
    loader = Loader(delay=0.3)
    registry = make_registry(loader)
    beats = 0

    async def beat():
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    ticker = asyncio.ensure_future(beat())
    plugin = await registry.get(SAMPLE, 1)
    ticker.cancel()
    assert plugin.package == SAMPLE
    assert beats >= 10, "the loop kept running during the import"
    assert [name.startswith("jobscheduler-plugins") for _, _, name in loader.calls] == [True]
    assert registry.peek(SAMPLE, 1) is plugin
    registry.close()


async def test_a_broken_plugin_is_imported_once_per_code_version():
    loader = Loader(broken={1})
    registry = make_registry(loader)
    for _ in range(3):
        with pytest.raises(PluginLoadError, match="syntax error"):
            await registry.get(SAMPLE, 1)
    assert len(loader.calls) == 1, "the error is cached for version 1"
    assert (await registry.get(SAMPLE, 2)).package == SAMPLE, "a new version is loaded again"
    assert len(loader.calls) == 2
    assert registry.peek(SAMPLE, 1) is None, "older versions are forgotten"
    registry.close()


async def test_runs_starting_together_share_one_load():
    loader = Loader(delay=0.1)
    registry = make_registry(loader)
    plugins = await asyncio.gather(*(registry.get(SAMPLE, 1) for _ in range(20)))
    assert len({id(p) for p in plugins}) == 1 and len(loader.calls) == 1
    registry.close()


async def test_preload_starts_loading_without_waiting():
    loader = Loader(delay=0.1)
    registry = make_registry(loader)
    registry.preload([(SAMPLE, 1), (SAMPLE, 1)])
    assert registry.peek(SAMPLE, 1) is None, "not loaded yet: preload did not wait"
    await registry.get(SAMPLE, 1)
    assert len(loader.calls) == 1
    registry.close()


async def test_an_unexpected_loader_failure_becomes_a_load_error():
    def explode(package: str, code_version: int) -> LoadedPlugin:
        raise KeyError("registry bug")

    registry = make_registry(explode)
    with pytest.raises(PluginLoadError, match="KeyError"):
        await registry.get(SAMPLE, 1)
    registry.close()


async def test_the_default_loader_is_the_plugin_host():
    registry = make_registry()
    assert (await registry.get(SAMPLE, 1)).package == SAMPLE
    with pytest.raises(PluginLoadError, match="module not found"):
        await registry.get("plugins.nothing_here@v0_1_0.plugin.Plugin", 1)
    registry.close()
