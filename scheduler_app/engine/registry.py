"""The engine's plugin registry: loaded plugins per code version, or why they do not load.

The event loop asks ``await registry.get(package, code_version)``. It never imports and never
waits on a lock: a plugin already loaded (or known broken) for that version is a dict read; a
first use hands the import to the registry's own loader thread and awaits its future, so other
runs go on meanwhile. ``preload`` starts loads ahead of the first run (after a reconcile).

A failed load is cached for its code version: a broken plugin is imported once, and each of
its runs records the cached error, until "Reload code" bumps the version. Imports run in the
loader thread, never in the writer thread (claims and log writes do not wait behind them).

``plugin_host.get_plugin`` does the loading (and reloading, when the version is newer); this
object only decides when, where, and remembers the outcome. Make one with ``make_registry()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from scheduler_app import metrics, plugin_host
from scheduler_app.plugin_host import LoadedPlugin, PluginLoadError

log = logging.getLogger("scheduler_app.engine")

Loader = Callable[[str, int], LoadedPlugin]


class PluginRegistry:
    def __init__(self, loader: Loader, executor: ThreadPoolExecutor) -> None:
        self._loader = loader
        self._executor = executor
        # Loop-only state: written and read on the event loop, never from a thread.
        self._outcomes: dict[tuple[str, int], LoadedPlugin | PluginLoadError] = {}
        self._loading: dict[tuple[str, int], asyncio.Future[LoadedPlugin | PluginLoadError]] = {}
        self._newest: dict[str, int] = {}

    def peek(self, package: str, code_version: int) -> LoadedPlugin | PluginLoadError | None:
        """The cached outcome, or None if it was never loaded (a dict read)."""
        return self._outcomes.get((package, code_version))

    async def get(self, package: str, code_version: int) -> LoadedPlugin:
        """The plugin for this code version; raises its (cached) ``PluginLoadError``."""
        outcome = self._outcomes.get((package, code_version))
        if outcome is None:
            outcome = await self._load(package, code_version)
        if isinstance(outcome, PluginLoadError):
            raise outcome
        return outcome

    def preload(self, wanted: Iterable[tuple[str, int]]) -> None:
        """Start loading what is not loaded yet, without waiting (call on the loop)."""
        for package, code_version in set(wanted):
            if (package, code_version) not in self._outcomes and (package, code_version) not in self._loading:
                self._start(package, code_version)

    async def reload(self, package: str, code_version: int) -> None:
        """A newer code version was announced: load it now and say how that went."""
        try:
            await self.get(package, code_version)
        except PluginLoadError as exc:
            log.error("plugin %s (code version %s) does not load: %s", package, code_version, exc)
        else:
            log.info("plugin %s now runs code version %s", package, code_version)

    def _start(self, package: str, code_version: int) -> asyncio.Future[LoadedPlugin | PluginLoadError]:
        key = (package, code_version)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._load_in_thread, package, code_version)
        self._loading[key] = future
        future.add_done_callback(lambda f: self._settled(key, f))
        return future

    async def _load(self, package: str, code_version: int) -> LoadedPlugin | PluginLoadError:
        future = self._loading.get((package, code_version)) or self._start(package, code_version)
        return await asyncio.shield(future)

    def _settled(self, key: tuple[str, int], future: asyncio.Future[LoadedPlugin | PluginLoadError]) -> None:
        self._loading.pop(key, None)
        if future.cancelled():
            return
        package, code_version = key
        self._outcomes[key] = future.result()
        # Older versions are never asked for again once a newer one is: forget them.
        if code_version >= self._newest.get(package, 0):
            self._newest[package] = code_version
            for old in [k for k in self._outcomes if k[0] == package and k[1] < code_version]:
                del self._outcomes[old]

    def _load_in_thread(self, package: str, code_version: int) -> LoadedPlugin | PluginLoadError:
        try:
            return self._loader(package, code_version)
        except PluginLoadError as exc:
            metrics.plugin_load_error(package)
            return exc
        except Exception as exc:  # a loader bug must not leave runs waiting forever
            metrics.plugin_load_error(package)
            return PluginLoadError(package, f"loading failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def make_registry(loader: Loader | None = None) -> PluginRegistry:
    """A registry with its own loader thread; ``loader`` defaults to ``plugin_host.get_plugin``."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobscheduler-plugins")
    return PluginRegistry(loader or _host_loader, executor)


def _host_loader(package: str, code_version: int) -> LoadedPlugin:
    return plugin_host.get_plugin(package, code_version)
