"""The run supervisor in-process, with a fake writer: how a run ends is decided in one place
(the same code runs plugins for the engine and for ``runplugin``)."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from scheduler_app import JobPlugin, hookimpl, plugin_host
from scheduler_app.contract import RunContext
from scheduler_app.engine.supervisor import (
    CANCELLED,
    DEADLINE_RESOLUTION,
    EAGER_START,
    FAILED,
    SUCCEEDED,
    TIMED_OUT,
    RunRefused,
    SupervisedRun,
    Supervisor,
)
from scheduler_app.streams import RunSnapshot
from scheduler_app.writer import RunFinish

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeWriter:
    def __init__(self) -> None:
        self.finished: list[RunFinish] = []

    def finish_run(self, finish: RunFinish) -> None:
        self.finished.append(finish)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class Behaviour(JobPlugin):
    """What each test run does, chosen by ``context.extra["do"]``."""

    @hookimpl
    async def run(self, config, context):
        do = context.extra["do"]
        context.logger.info("start")
        if do == "raise":
            raise ValueError("bad value")
        if do == "exit":
            raise SystemExit(3)
        if do == "sleep":
            await asyncio.sleep(10)
        if do == "polite":
            if await context.sleep(10):
                context.logger.warning("stopping early")
        if do == "stubborn":
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                try:
                    await asyncio.sleep(deadline - time.monotonic())
                except asyncio.CancelledError:
                    pass
        context.logger.info("done")


PLUGIN = plugin_host.load_class(Behaviour)


class NoConfig(BaseModel):
    pass


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def supervised(do: str, *, timeout: float | None = 5, prepare=None, run_id: int = 1) -> tuple[SupervisedRun, Lines]:
    lines = Lines()
    logger = logging.Logger(f"test.run{run_id}")
    logger.addHandler(lines)
    snapshot = RunSnapshot(id=run_id, job_id=10 + run_id, plugin_id=1, user_id=1, trigger="schedule", slot=T0,
                           node="n", status="running")  # fmt: skip
    context = RunContext(logger=logger, run_id=run_id, extra={"do": do})

    async def ready():
        return PLUGIN, NoConfig()

    run = SupervisedRun(
        snapshot, context, timeout, "p.x@v1.plugin.Plugin", prepare or ready, lambda: len(lines.messages)
    )
    return run, lines


@pytest.fixture
def writer() -> FakeWriter:
    return FakeWriter()


@pytest.fixture
def ended() -> list[SupervisedRun]:
    return []


@pytest.fixture
def supervisor(writer, ended) -> Supervisor:
    return Supervisor(writer, on_end=ended.append, clock=FakeClock(), abandon_after=0.1)


async def finish(supervisor: Supervisor, run: SupervisedRun) -> RunFinish:
    supervisor.start(run)
    await asyncio.wait_for(run.wait_ended(), 5)
    return supervisor.writer.finished[-1]


async def test_a_run_that_returns_succeeds_and_is_recorded(supervisor, ended):
    run, _ = supervised("nothing")
    done = await finish(supervisor, run)
    assert (done.run.status, done.run.error, done.log_count) == (SUCCEEDED, "", 2)
    assert done.run.started_at == T0 + timedelta(seconds=1) and done.run.finished_at == T0 + timedelta(seconds=2)
    assert ended == [run] and supervisor.active == {}


async def test_a_run_that_never_waits_ends_inside_start_on_python_3_12_and_on_the_loop_before(supervisor, writer):
    """Eager start (Python 3.12+): the run's task runs in ``start`` up to its first wait, so a run
    that never waits is recorded before ``start`` returns; a run that waits goes on as a task.
    Before 3.12 both are scheduled and nothing has run when ``start`` returns."""
    quick, _ = supervised("nothing", run_id=1)
    slow, _ = supervised("sleep", run_id=2)
    supervisor.start(quick)
    supervisor.start(slow)
    assert EAGER_START == (sys.version_info >= (3, 12))
    assert [f.run.id for f in writer.finished] == ([1] if EAGER_START else [])
    assert list(supervisor.active) == ([2] if EAGER_START else [1, 2])
    await asyncio.wait_for(quick.wait_ended(), 5)
    assert [f.run.id for f in writer.finished] == [1] and not slow.task.done()
    supervisor.cancel(slow, CANCELLED, "cancelled by the test")
    await asyncio.wait_for(slow.wait_ended(), 5)
    assert [(f.run.id, f.run.status) for f in writer.finished] == [(1, SUCCEEDED), (2, CANCELLED)]


async def test_an_exception_fails_the_run_with_its_traceback_and_a_log_line(supervisor):
    run, lines = supervised("raise")
    done = await finish(supervisor, run)
    assert (done.run.status, done.run.error) == (FAILED, "ValueError: bad value")
    assert "raise ValueError" in done.traceback
    assert lines.messages[-1] == "run failed: ValueError: bad value"
    assert isinstance(run.outcome.exception, ValueError)


async def test_system_exit_from_a_plugin_fails_the_run_not_the_process(supervisor):
    run, _ = supervised("exit")
    done = await finish(supervisor, run)
    assert (done.run.status, done.run.error) == (FAILED, "SystemExit: 3")


async def test_a_run_past_its_timeout_is_cancelled_and_recorded_timed_out(supervisor):
    run, lines = supervised("sleep", timeout=0.05)
    done = await finish(supervisor, run)
    assert (done.run.status, done.run.error) == (TIMED_OUT, "timed out after 0.05 s (the job's timeout): cancelled")
    assert run.context.cancelled.is_set() and "done" not in lines.messages


async def test_a_run_that_swallows_its_cancellation_is_abandoned(supervisor, ended):
    run, _ = supervised("stubborn", timeout=0.05)
    done = await finish(supervisor, run)
    assert done.run.status == TIMED_OUT and "abandoned" in done.run.error
    assert ended == [run] and not run.task.done(), "the coroutine goes on, the job is free"
    await run.task
    assert len(supervisor.writer.finished) == 1, "recorded once"


async def test_cancel_records_the_reason_given(supervisor):
    run, _ = supervised("sleep")
    supervisor.start(run)
    await asyncio.sleep(0)
    supervisor.cancel(run, CANCELLED, "cancelled: the job was deleted")
    await asyncio.wait_for(run.wait_ended(), 5)
    assert (run.run.status, run.run.error) == (CANCELLED, "cancelled: the job was deleted")


async def ask_to_stop(supervisor: Supervisor, do: str, grace: float) -> tuple[SupervisedRun, Lines]:
    """Start a run, ask it to stop once it has started, wait for its end."""
    run, lines = supervised(do)
    supervisor.start(run)
    await asyncio.sleep(0.01)
    supervisor.ask_to_stop(run, grace, CANCELLED, "cancelled: asked to stop")
    await asyncio.wait_for(run.wait_ended(), 1)
    return run, lines


async def test_asked_to_stop_a_polite_run_stops_itself(supervisor):
    run, lines = await ask_to_stop(supervisor, "polite", grace=5)
    assert run.run.status == CANCELLED and "stopping early" in lines.messages and "done" in lines.messages


async def test_asked_to_stop_a_deaf_run_is_cancelled_after_the_grace(supervisor):
    run, lines = await ask_to_stop(supervisor, "sleep", grace=0.05)
    assert (run.run.status, run.run.error) == (CANCELLED, "cancelled: asked to stop") and "done" not in lines.messages


async def test_a_refused_run_fails_with_its_cause(supervisor):
    async def broken():
        try:
            raise plugin_host.PluginLoadError("p.x", "module not found")
        except plugin_host.PluginLoadError as exc:
            raise RunRefused(f"the plugin's code does not load: {exc}") from exc

    run, _ = supervised("nothing", prepare=broken)
    done = await finish(supervisor, run)
    assert (done.run.status, done.run.error) == (FAILED, "the plugin's code does not load: p.x: module not found")
    assert "PluginLoadError" in done.traceback


async def test_the_timeout_starts_when_the_plugin_does(supervisor):
    async def slow_prepare():
        await asyncio.sleep(0.1)  # e.g. the first import, in the registry's thread
        return PLUGIN, NoConfig()

    run, _ = supervised("nothing", timeout=0.05, prepare=slow_prepare)
    done = await finish(supervisor, run)
    assert done.run.status == SUCCEEDED


async def test_timeouts_of_many_runs_share_few_loop_timers_and_fire_neither_early_nor_late(supervisor):
    """Runs due within ``DEADLINE_RESOLUTION`` of each other wait on one loop timer (a timer per
    run filled asyncio's heap with cancelled timers); each still times out on its own, never
    before its timeout and at most the resolution after it, and a run that ended is left alone."""
    loop = asyncio.get_running_loop()
    runs = [supervised("sleep", timeout=0.2, run_id=i)[0] for i in range(1, 201)]
    quick, _ = supervised("nothing", timeout=0.2, run_id=999)
    started = loop.time()
    for run in [*runs, quick]:
        supervisor.start(run)
    while not all(run.deadline or run.outcome for run in runs):  # every plugin started: its timeout set
        await asyncio.sleep(0)
    launched = loop.time()
    await asyncio.sleep(0.05)
    assert quick.outcome is not None and quick.outcome.status == SUCCEEDED
    timeouts = [t for t in loop._scheduled if t._callback == supervisor.deadlines._due]  # type: ignore[attr-defined]
    slots_spanned = math.ceil((launched - started) / DEADLINE_RESOLUTION) + 2  # 3 on a quiet machine
    assert 1 <= len(timeouts) <= min(slots_spanned, 50), "one timer per 10 ms slot, not one per run"
    # Each timer is set for the timeout after its runs' plugins started, rounded up to the
    # resolution: never before, and never later than a slot. (The loop's own delays in firing
    # it depend on the machine's load, not on this code: the wall clock's bound is only "not early".)
    for timer in timeouts:
        assert started + 0.2 <= timer.when() <= launched + 0.2 + DEADLINE_RESOLUTION
    await asyncio.wait_for(asyncio.gather(*(run.wait_ended() for run in runs)), 5)
    ended_after = loop.time() - started
    assert {run.outcome.status for run in runs if run.outcome} == {TIMED_OUT}
    assert ended_after >= 0.2, "not early"
    assert supervisor.deadlines._slots == {} and all(run.deadline == 0 for run in [*runs, quick])
    assert quick.outcome.status == SUCCEEDED, "a run that ended before its slot fired is not timed out"


def test_run_plugin_ends_runs_as_the_engine_does():
    """``scheduler_app.testing`` (and so ``runplugin``) goes through the same supervisor."""
    from scheduler_app.testing import run_plugin

    exited = run_plugin(Behaviour, {}, extra={"do": "exit"})
    assert isinstance(exited.error, SystemExit) and "raise SystemExit(3)" in exited.traceback
    timed_out = run_plugin(Behaviour, {}, timeout=0.05, extra={"do": "sleep"})
    assert timed_out.timed_out and str(timed_out.error) == "timed out after 0.05 s (the job's timeout): cancelled"
