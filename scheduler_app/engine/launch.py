"""Launching a won claim: what a run needs before the supervisor starts it, and what it runs with.

- ``Launcher.supervised(run, spec, note)`` gives the run its logger (a ``RunLogger`` writing
  through the batched writer), its ``RunContext`` and the lines it starts with (a coalescing
  note of the schedule, the retry line), and returns the ``SupervisedRun`` the supervisor starts.
- ``Launcher.prepare(spec)`` is the run's first step, in its own task: the plugin from the
  registry (loaded before: a dict read) and the job's validated config. A config nothing can
  change (``plugin_host.immutable_config``) is validated once per spec and code version and
  shared by the job's runs (validation decrypts secrets and calls a hook); any other is
  validated for every run, so a run's changes never reach the next one. ``forget(job_id)``
  drops a deleted job's config.
- ``specs``: run id -> the spec a running run runs (retries, the lines naming its time zone).

Nothing here touches the database or the schedule: the engine does the bookkeeping.
"""

from __future__ import annotations

import asyncio
from datetime import UTC

from pydantic import BaseModel

from scheduler_app import schedules, slots
from scheduler_app.contract import RunContext
from scheduler_app.engine.registry import PluginRegistry
from scheduler_app.engine.supervisor import RunRefused, SupervisedRun
from scheduler_app.jobtable import JobSpec
from scheduler_app.log_pipeline import run_logger
from scheduler_app.models import JobRun
from scheduler_app.plugin_host import ConfigValidationError, LoadedPlugin, PluginLoadError, immutable_config
from scheduler_app.streams import RunSnapshot
from scheduler_app.writer import Writer

RETRY = JobRun.Trigger.RETRY.value


def when(epoch_ms: int, spec: JobSpec | None) -> str:
    """A slot as its owner reads it: in the job's time zone."""
    zone = schedules.zone(spec.timing.timezone) if spec is not None and spec.timing is not None else UTC
    return slots.to_datetime(epoch_ms).astimezone(zone).strftime(schedules.TIME_FORMAT)


class Launcher:
    def __init__(self, registry: PluginRegistry, writer: Writer | None = None) -> None:
        self.registry = registry
        #: set by the engine once its writer runs (the launcher is made with the engine)
        self.writer = writer
        #: run id -> the spec it runs
        self.specs: dict[int, JobSpec] = {}
        #: job id -> (spec, plugin, config) of a config runs may share (``immutable_config``)
        self._configs: dict[int, tuple[JobSpec, LoadedPlugin, BaseModel]] = {}

    def supervised(self, run: RunSnapshot, spec: JobSpec, note: str = "") -> SupervisedRun:
        """The run with its logger, context and first lines, ready for ``Supervisor.start``."""
        assert self.writer is not None
        logger, handler = run_logger(self.writer, run_id=run.id, job_id=spec.id, plugin_id=spec.plugin_id,
                                     user_id=spec.user_id, package=spec.package)  # fmt: skip
        context = RunContext(logger=logger, run_id=run.id, job_id=spec.id, user_id=spec.user_id,
                             username=spec.username, plugin_id=spec.plugin_id, package=spec.package, slot=run.slot,
                             trigger=run.trigger, attempt=run.attempt, cancelled=asyncio.Event())  # fmt: skip
        if note:
            logger.warning(note)
        if run.trigger == RETRY:
            logger.info("retry: attempt %d of %d for the slot %s", run.attempt, spec.max_retries + 1,
                        when(slots.to_ms(run.slot), spec))  # fmt: skip
        self.specs[run.id] = spec
        prepare = lambda: self.prepare(spec)  # noqa: E731
        return SupervisedRun(run, context, spec.timeout, spec.package, prepare, lambda: handler.count)

    def ended(self, run_id: int) -> None:
        self.specs.pop(run_id, None)

    def forget(self, job_id: int) -> None:
        """The job was deleted: its shared config goes too."""
        self._configs.pop(job_id, None)

    async def prepare(self, spec: JobSpec) -> tuple[LoadedPlugin, BaseModel]:
        """The plugin and the validated config a run of ``spec`` runs with, or ``RunRefused``."""
        if not spec.enabled:
            raise RunRefused(f"the plugin {spec.package} is disabled")
        # A plugin loaded before (every run but the first) is a dict read, no coroutine.
        plugin = self.registry.peek(spec.package, spec.code_version)
        try:
            if plugin is None:
                plugin = await self.registry.get(spec.package, spec.code_version)
            elif isinstance(plugin, PluginLoadError):
                raise plugin
        except PluginLoadError as exc:
            raise RunRefused(f"the plugin's code does not load: {exc}") from exc
        shared = self._configs.get(spec.id)
        if shared is not None and shared[0] is spec and shared[1] is plugin:
            return plugin, shared[2]
        try:
            config = plugin.validate(spec.config)
        except ConfigValidationError as exc:
            raise RunRefused(
                f"the stored config is no longer valid for {spec.package}: {exc}; edit and save the job"
            ) from exc
        if immutable_config(config):
            self._configs[spec.id] = (spec, plugin, config)
        return plugin, config
