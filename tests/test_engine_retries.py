"""When a run's end queues a retry (``engine.retries``), in-process with a fake database: the
next attempt of the slot is queued with its delay and the run's log says when; a cancelled run
or one out of retries queues nothing (the rule: ``schedules.retry_after``; across nodes and
restarts: ``test_runscheduler_retries.py``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler_app import claims
from scheduler_app.contract import RunContext
from scheduler_app.engine.counters import Counters
from scheduler_app.engine.retries import Retries
from scheduler_app.engine.supervisor import CANCELLED, FAILED, TIMED_OUT, Outcome, SupervisedRun
from scheduler_app.jobtable import JobSpec
from scheduler_app.streams import RunSnapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = JobSpec(id=3, user_id=1, username="alice", plugin_id=1, package="p.x@v1.plugin.Plugin", interval=10,
               timeout=30, config={}, code_version=1, updated_ms=0, max_retries=2, retry_delay_seconds=10,
               retry_max_delay_seconds=600)  # fmt: skip


class FakeDatabase:
    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []

    async def write(self, fn: Any, *args: Any) -> None:
        self.writes.append((fn, *args))


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def ended(attempt: int) -> tuple[SupervisedRun, Kept]:
    kept = Kept()
    logger = logging.Logger(f"run{attempt}")
    logger.addHandler(kept)
    run = RunSnapshot(id=9, job_id=3, plugin_id=1, user_id=1, trigger="schedule", slot=T0, node="n", status=FAILED,
                      finished_at=T0 + timedelta(seconds=5), attempt=attempt)  # fmt: skip
    return SupervisedRun(run, RunContext(logger=logger), 30, SPEC.package, None), kept  # type: ignore[arg-type]


async def settle(retries: Retries, supervised: SupervisedRun, status: str) -> FakeDatabase:
    db = FakeDatabase()
    retries.db = db  # type: ignore[assignment]
    retries.before_finish(supervised, Outcome(status))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return db


@pytest.mark.parametrize("status", [FAILED, TIMED_OUT])
async def test_a_failed_run_with_retries_left_queues_the_next_attempt_of_its_slot(status):
    counters, woken = Counters(), []
    retries = Retries(None, {9: SPEC}, counters, wake_claimer=lambda: woken.append(1), clock=lambda: T0)  # type: ignore[arg-type]
    supervised, kept = ended(attempt=1)
    db = await settle(retries, supervised, status)
    assert db.writes == [(claims.queue_retry, 3, T0, 2, T0 + timedelta(seconds=15), SPEC.package)]
    assert counters.retries_scheduled == 1
    assert kept.messages == [
        f"attempt 1 of 3 {status.replace('_', ' ')}; retry (attempt 2) in 10 s, at 2026-01-01 00:00:15 UTC"
    ]


@pytest.mark.parametrize(("status", "attempt", "specs"), [(CANCELLED, 1, {9: SPEC}), (FAILED, 3, {9: SPEC}),
                                                          (FAILED, 1, {})])  # fmt: skip
async def test_no_retry_for_a_cancelled_run_the_last_attempt_or_a_run_without_spec(status, attempt, specs):
    retries = Retries(None, specs, Counters(), wake_claimer=lambda: None, clock=lambda: T0)  # type: ignore[arg-type]
    supervised, kept = ended(attempt)
    db = await settle(retries, supervised, status)
    assert db.writes == [] and kept.messages == []
