"""The run supervisor: starts a run as a task, applies its timeout and cancellation, records its end.

One code path runs a plugin, for the engine and for ``runplugin`` / ``scheduler_app.testing``:

- ``start`` makes a task that first ``prepare``s (loads the plugin, validates the stored
  config: a failure there is a refused run, recorded as failed with the cause) and then awaits
  the plugin's ``run``. Every exception of the plugin, ``SystemExit`` and ``KeyboardInterrupt``
  included, becomes a failed outcome: nothing a plugin does reaches the loop or ends the process.
- The timeout (``timeout`` seconds after the plugin starts, at most ``DEADLINE_RESOLUTION``
  late: ``Deadlines``) cancels the task and sets ``context.cancelled``; a run that swallows the
  cancellation is recorded ``timed_out`` and abandoned ``abandon_after`` seconds later (the
  coroutine goes on, the job is free).
- ``cancel(run, status, message)`` cancels now (shutdown after the grace period, job deleted);
  ``ask_to_stop(run, grace, ...)`` sets ``context.cancelled`` and cancels after ``grace``
  (runplugin's Ctrl-C).
- The end of a run is shown to ``before_finish`` (which may still log lines to the run: the
  engine schedules retries there), then handed to ``writer.finish_run`` (a ``RunFinish``) and
  to ``on_end``.

Nothing here touches the database: the engine passes the batched writer, tests a list.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pydantic import BaseModel

from scheduler_app import metrics
from scheduler_app.contract import RunContext
from scheduler_app.log_pipeline import clean_text
from scheduler_app.models import JobRun
from scheduler_app.plugin_host import LoadedPlugin
from scheduler_app.streams import RunSnapshot
from scheduler_app.writer import RunFinish

log = logging.getLogger("scheduler_app.engine")

#: A timed-out run still going this long after its cancellation is recorded and let go.
ABANDON_AFTER_SECONDS = 5.0
#: Runs whose timeouts fall within this many seconds of each other share one loop timer.
DEADLINE_RESOLUTION = 0.01
#: Python 3.12+: a run's task starts eagerly (``asyncio.Task(eager_start=True)``): it runs in
#: ``start`` up to its first real wait, and a run that never waits (most short jobs) ends there,
#: without being scheduled on the loop at all. Earlier Pythons schedule it.
EAGER_START = sys.version_info >= (3, 12)

# Plain strings (not the enum members): they go into raw SQL parameters and JSON payloads.
SUCCEEDED, FAILED = JobRun.Status.SUCCEEDED.value, JobRun.Status.FAILED.value
TIMED_OUT, CANCELLED = JobRun.Status.TIMED_OUT.value, JobRun.Status.CANCELLED.value
Prepare = Callable[[], Awaitable[tuple[LoadedPlugin, BaseModel]]]


class RunRefused(Exception):
    """The run could not start (plugin disabled or not loadable, stored config invalid)."""


class FinishSink(Protocol):
    def finish_run(self, finish: RunFinish) -> None: ...


@dataclass(slots=True)
class Outcome:
    status: str
    error: str = ""
    traceback: str = ""
    #: what the plugin raised (for ``testing``'s result); None on success or cancellation
    exception: BaseException | None = None


@dataclass(eq=False, slots=True)
class SupervisedRun:
    run: RunSnapshot
    context: RunContext
    #: seconds the plugin may run (None: no limit)
    timeout: float | None
    package: str
    prepare: Prepare
    log_count: Callable[[], int] = lambda: 0
    task: asyncio.Task[None] | None = None
    #: the ``Deadlines`` slot its timeout waits in (0: none)
    deadline: int = 0
    #: set when the supervisor stops it: the status and error it is recorded with
    stop_status: str = ""
    stop_message: str = ""
    #: monotonic time it was given up on (it ignored its cancellation), else 0
    abandoned: float = 0.0
    outcome: Outcome | None = None
    # made only when someone waits (runplugin, tests): an Event per run costs at 2,000 runs/s
    _ended: asyncio.Event | None = None

    async def wait_ended(self) -> Outcome:
        """Wait until the run is recorded (finished, or abandoned) and return its outcome."""
        if self.outcome is None:
            if self._ended is None:
                self._ended = asyncio.Event()
            await self._ended.wait()
        assert self.outcome is not None
        return self.outcome


def utcnow() -> datetime:
    return datetime.now(UTC)


class Deadlines:
    """The runs' timeouts on few loop timers: runs due within the same ``resolution`` share one.

    A timer per run cost ~15 % of a run's time on the loop at a few thousand runs/s: asyncio
    keeps timers in a heap ordered by a Python ``__lt__``, a run's timer (30 s, say) is
    cancelled long before it is due (the run ends in milliseconds), and the heap fills with
    cancelled timers until the loop rebuilds it. Here a run's deadline is rounded *up* to the
    next multiple of ``resolution`` (a timeout fires at most that late, never early) and goes
    into that slot's dict: adding and removing are dict operations, and the loop holds one
    timer per slot in use (at most ``1 / resolution`` per second of timeouts).
    """

    def __init__(self, expired: Callable[[SupervisedRun], None], resolution: float = DEADLINE_RESOLUTION) -> None:
        self.expired = expired
        self.resolution = resolution
        self._slots: dict[int, dict[SupervisedRun, None]] = {}

    def add(self, supervised: SupervisedRun, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        key = math.ceil((loop.time() + seconds) / self.resolution)
        waiting = self._slots.get(key)
        if waiting is None:
            waiting = self._slots[key] = {}
            loop.call_at(key * self.resolution, self._due, key)
        waiting[supervised] = None
        supervised.deadline = key

    def remove(self, supervised: SupervisedRun) -> None:
        waiting = self._slots.get(supervised.deadline)
        if waiting is not None:
            waiting.pop(supervised, None)
        supervised.deadline = 0

    def _due(self, key: int) -> None:
        for supervised in self._slots.pop(key, {}):
            supervised.deadline = 0
            self.expired(supervised)


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    def __init__(
        self,
        writer: FinishSink,
        *,
        on_end: Callable[[SupervisedRun], None] | None = None,
        before_finish: Callable[[SupervisedRun, Outcome], None] | None = None,
        log_outcome: bool = True,
        clock: Callable[[], datetime] = utcnow,
        abandon_after: float = ABANDON_AFTER_SECONDS,
    ) -> None:
        self.writer = writer
        self.on_end = on_end
        self.before_finish = before_finish
        self.log_outcome = log_outcome
        self.clock = clock
        self.abandon_after = abandon_after
        #: run id -> the runs going on
        self.active: dict[int, SupervisedRun] = {}
        self.deadlines = Deadlines(self._timed_out)

    def start(self, supervised: SupervisedRun) -> SupervisedRun:
        # started_at is when the run really starts (after the claim's round trip), not when the
        # claim was asked for: the recorded slot-to-start lag includes the claim.
        run = supervised.run
        run.started_at = self.clock()
        metrics.run_started((run.started_at - run.slot).total_seconds() if run.trigger == "schedule" else None)
        self.active[supervised.run.id] = supervised
        name = f"run {supervised.run.id} of {supervised.package}"
        if EAGER_START:
            supervised.task = asyncio.Task(  # type: ignore[call-arg]  # eager_start: 3.12+ (mypy reads 3.11's)
                self._execute(supervised), loop=asyncio.get_running_loop(), name=name, eager_start=True
            )
        else:
            supervised.task = asyncio.get_running_loop().create_task(self._execute(supervised), name=name)
        return supervised

    def tasks(self) -> list[asyncio.Task[None]]:
        return [s.task for s in self.active.values() if s.task is not None and not s.task.done()]

    # -- stopping runs -------------------------------------------------------------------------

    def cancel(self, supervised: SupervisedRun, status: str, message: str) -> None:
        """Stop the run now: set ``context.cancelled`` and cancel its task."""
        task = supervised.task
        if task is None or task.done() or (supervised.stop_status and supervised.stop_status != "asked"):
            return
        supervised.stop_status, supervised.stop_message = status, message
        supervised.context.cancelled.set()
        task.cancel()
        if status == TIMED_OUT:
            asyncio.get_running_loop().call_later(self.abandon_after, self._abandon, supervised)

    def ask_to_stop(self, supervised: SupervisedRun, grace: float, status: str, message: str) -> None:
        """Set ``context.cancelled``; cancel the task if it still runs after ``grace`` seconds."""
        if supervised.stop_status:
            return
        supervised.stop_status, supervised.stop_message = "asked", message
        supervised.context.cancelled.set()
        asyncio.get_running_loop().call_later(grace, self._cancel_asked, supervised, status, message)

    def _cancel_asked(self, supervised: SupervisedRun, status: str, message: str) -> None:
        self.cancel(supervised, status, message)

    def _timed_out(self, supervised: SupervisedRun) -> None:
        self.cancel(supervised, TIMED_OUT, f"timed out after {supervised.timeout:g} s (the job's timeout): cancelled")

    def _abandon(self, supervised: SupervisedRun) -> None:
        """A run that swallowed its cancellation: record it timed out and free the job anyway."""
        if supervised.task is None or supervised.task.done() or supervised.outcome is not None:
            return
        supervised.abandoned = time.monotonic()
        error = (
            f"timed out after {supervised.timeout:g} s and did not stop when cancelled "
            f"(the plugin swallows asyncio.CancelledError): abandoned"
        )
        log.warning("run %s of %s: %s", supervised.run.id, supervised.package, error)
        self._finish(supervised, Outcome(TIMED_OUT, error))

    # -- one run ---------------------------------------------------------------------------------

    async def _execute(self, supervised: SupervisedRun) -> None:
        outcome = Outcome(SUCCEEDED)
        try:
            plugin, config = await supervised.prepare()
            if supervised.timeout is not None:
                self.deadlines.add(supervised, supervised.timeout)
            await plugin.run(config=config, context=supervised.context)
        except asyncio.CancelledError:
            pass  # the reason is in stop_status, checked below
        except RunRefused as exc:
            cause = exc.__cause__
            trace = "".join(traceback.format_exception(cause)) if cause is not None else ""
            outcome = Outcome(FAILED, str(exc), trace, exc)
        except Exception as exc:
            outcome = Outcome(FAILED, describe(exc), traceback.format_exc(), exc)
        except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:  # a plugin must not end the process
            outcome = Outcome(FAILED, describe(exc), traceback.format_exc(), exc)
        finally:
            if supervised.deadline:
                self.deadlines.remove(supervised)
        # A plugin that swallowed the cancellation still ran into its timeout / the shutdown.
        if supervised.stop_status:
            status = CANCELLED if supervised.stop_status == "asked" else supervised.stop_status
            outcome = Outcome(status, supervised.stop_message)
        if supervised.abandoned:
            log.warning("run %s of %s ended %.0f s after it was abandoned", supervised.run.id, supervised.package,
                        time.monotonic() - supervised.abandoned)  # fmt: skip
            return
        self._finish(supervised, outcome)

    def _finish(self, supervised: SupervisedRun, outcome: Outcome) -> None:
        run = supervised.run
        if outcome.error and self.log_outcome:
            supervised.context.logger.error("run %s: %s", outcome.status.replace("_", " "), outcome.error)
        run.status = outcome.status
        run.finished_at = self.clock()
        run.error = clean_text(outcome.error)
        supervised.outcome = outcome
        if self.before_finish is not None:  # its log lines still belong to the run (and its count)
            self.before_finish(supervised, outcome)
        self.active.pop(run.id, None)
        self.writer.finish_run(RunFinish(run, clean_text(outcome.traceback), supervised.log_count()))
        started = run.started_at
        metrics.run_finished(
            supervised.package, run.status, (run.finished_at - started).total_seconds() if started else None
        )
        if supervised._ended is not None:
            supervised._ended.set()
        if self.on_end is not None:
            self.on_end(supervised)
