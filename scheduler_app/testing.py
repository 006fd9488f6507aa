"""Run a plugin once, outside the scheduler: the pytest helper for plugin authors.

    from scheduler_app.testing import run_plugin

    def test_it_greets():
        result = run_plugin("plugins.hello@v0_1_0.plugin.Plugin", {"name": "Ada"})
        assert result.ok, result.traceback
        assert result.messages() == ["Hello, Ada!"]

``run_plugin(package_or_class, config)`` loads the plugin (a dotted path, or the class
itself), validates ``config`` through the plugin's ``config`` hook exactly as the scheduler
does (an invalid config raises :class:`~scheduler_app.plugin_host.ConfigValidationError`;
a plugin that does not load raises :class:`~scheduler_app.plugin_host.PluginLoadError`),
runs it with a real :class:`~scheduler_app.contract.RunContext` and returns a
:class:`PluginRunResult`: the log lines and the exception the run raised, if any. Plugin
faults are captured, never raised, as in the scheduler. No database is needed.

Inside an ``async`` test, ``await arun_plugin(...)``. ``manage.py runplugin`` uses the same
code with ``on_record`` printing each line as it comes.
"""

from __future__ import annotations

import asyncio
import logging
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from scheduler_app import plugin_host
from scheduler_app.contract import RunContext
from scheduler_app.engine.supervisor import (
    CANCELLED,
    SUCCEEDED,
    TIMED_OUT,
    Outcome,
    SupervisedRun,
    Supervisor,
    utcnow,
)
from scheduler_app.streams import RunSnapshot
from scheduler_app.writer import RunFinish

__all__ = ["LogRecordLine", "PluginRunResult", "arun_plugin", "load", "run_plugin"]

#: After a cancel request, how long a run may take to stop before its task is cancelled.
CANCEL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class LogRecordLine:
    """One log line of the run, as the scheduler would store it."""

    level: int
    levelname: str
    message: str

    def __str__(self) -> str:
        return f"{self.levelname} {self.message}"


@dataclass
class PluginRunResult:
    """What one run did: its log, and the exception that failed it (``None`` on success)."""

    records: list[LogRecordLine] = field(default_factory=list)
    error: BaseException | None = None
    traceback: str = ""
    cancelled: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled and not self.timed_out

    @property
    def lines(self) -> list[str]:
        """``"INFO message"`` per line."""
        return [str(r) for r in self.records]

    def messages(self, level: int | str | None = None) -> list[str]:
        """The messages, optionally only those of one level (``logging.WARNING`` or ``"WARNING"``)."""
        if isinstance(level, str):
            level = logging.getLevelName(level.upper())
        return [r.message for r in self.records if level is None or r.level == level]


class _Collector(logging.Handler):
    def __init__(self, on_record: Callable[[LogRecordLine], None] | None) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[LogRecordLine] = []
        self.on_record = on_record

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not kill the run
            message = f"{record.msg!r} (log formatting failed: {exc})"
        if record.exc_info and record.exc_info[0] is not None:
            message += "\n" + "".join(tb.format_exception(*record.exc_info)).rstrip()
        line = LogRecordLine(record.levelno, record.levelname, message)
        self.records.append(line)
        if self.on_record is not None:
            self.on_record(line)


def load(package_or_class: str | type) -> plugin_host.LoadedPlugin:
    """The loaded plugin for a dotted path (cached, as the scheduler does) or a class (fresh)."""
    if isinstance(package_or_class, str):
        return plugin_host.get_plugin(package_or_class)
    return plugin_host.load_class(package_or_class)


async def arun_plugin(
    package_or_class: str | type,
    config: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
    cancel: asyncio.Event | None = None,
    on_record: Callable[[LogRecordLine], None] | None = None,
    **context: Any,
) -> PluginRunResult:
    """Run the plugin once in the running event loop; see the module docstring.

    The run goes through the scheduler's own supervisor (``engine.supervisor``): the same
    timeout, cancellation and fault handling as a scheduled run.

    :param timeout: seconds after which the run is cancelled (``timed_out`` is set).
    :param cancel: an event that asks the run to stop (as the scheduler does on shutdown):
        the context's ``cancelled`` is set, and after a grace of 5 seconds the task is cancelled.
    :param on_record: called with each log line as it is emitted.
    :param context: extra :class:`RunContext` fields (``username``, ``job_id``, ``extra``...).
    """
    loaded = load(package_or_class)
    model = loaded.validate(config if config is not None else {})
    logger = logging.Logger(f"plugin.{loaded.package}", logging.DEBUG)
    collector = _Collector(on_record)
    logger.addHandler(collector)
    run_context = RunContext(logger=logger, package=loaded.package, **context)

    async def prepare() -> tuple[plugin_host.LoadedPlugin, BaseModel]:
        return loaded, model

    supervisor = Supervisor(_NoRecords(), log_outcome=False)
    snapshot = RunSnapshot(
        id=run_context.run_id or 0,
        job_id=run_context.job_id or 0,
        plugin_id=run_context.plugin_id or 0,
        user_id=run_context.user_id or 0,
        trigger=run_context.trigger,
        slot=run_context.slot or utcnow(),
        node="",
        status="running",
    )
    run = supervisor.start(
        SupervisedRun(snapshot, run_context, timeout, loaded.package, prepare, lambda: len(collector.records))
    )
    watcher = asyncio.ensure_future(_stop_on(cancel, supervisor, run)) if cancel is not None else None
    try:
        await run.wait_ended()
    except asyncio.CancelledError:  # the caller gave up waiting (runplugin's second Ctrl-C)
        supervisor.cancel(run, CANCELLED, "cancelled")
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
    return _result(run.outcome, collector.records)


def _result(outcome: Outcome | None, records: list[LogRecordLine]) -> PluginRunResult:
    result = PluginRunResult(records=records)
    if outcome is None or outcome.status == CANCELLED:
        result.cancelled = True
    elif outcome.status == TIMED_OUT:
        result.timed_out = True
        result.error = TimeoutError(outcome.error)
    elif outcome.status != SUCCEEDED:
        result.error = outcome.exception or RuntimeError(outcome.error)
        result.traceback = outcome.traceback
    return result


class _NoRecords:
    """Nothing is stored outside the scheduler: the result carries the outcome."""

    def finish_run(self, finish: RunFinish) -> None:
        pass


async def _stop_on(event: asyncio.Event, supervisor: Supervisor, run: SupervisedRun) -> None:
    await event.wait()
    supervisor.ask_to_stop(run, CANCEL_GRACE_SECONDS, CANCELLED, "cancelled: asked to stop")


def run_plugin(package_or_class: str | type, config: dict[str, Any] | None = None, **kwargs: Any) -> PluginRunResult:
    """Run the plugin once and return what it did (for synchronous tests); see :func:`arun_plugin`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_plugin(package_or_class, config, **kwargs))
    raise RuntimeError("run_plugin() was called inside an event loop: use 'await arun_plugin(...)' there")
