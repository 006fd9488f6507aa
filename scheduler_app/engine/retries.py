"""Retries: a failed or timed-out run with retries left queues the next attempt of its slot.

The supervisor shows every run's end to ``Retries.before_finish`` (before it is recorded, so
the line saying when the retry comes still belongs to the run). The rule for the delay is
``schedules.retry_after`` (``Job.max_retries``, ``retry_delay_seconds``, exponential up to
``retry_max_delay_seconds``; a cancelled run is not retried). The retry is a queued row (job,
slot, attempt + 1) that waits ``not_before``; any node claims it like a manual run once the
delay has passed, so it survives this node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler_app import claims, metrics, schedules, slots
from scheduler_app.engine.access import Database
from scheduler_app.engine.counters import Counters
from scheduler_app.engine.launch import when
from scheduler_app.engine.supervisor import Outcome, SupervisedRun
from scheduler_app.jobtable import JobSpec

log = logging.getLogger("scheduler_app.engine")


class Retries:
    def __init__(
        self,
        db: Database,
        specs: dict[int, JobSpec],
        counters: Counters,
        *,
        wake_claimer: Callable[[], None],
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        #: run id -> spec of the running runs (``Launcher.specs``)
        self.specs = specs
        self.counters = counters
        self.wake_claimer = wake_claimer
        self.clock = clock

    def before_finish(self, supervised: SupervisedRun, outcome: Outcome) -> None:
        """Queue the next attempt of the run's slot if the run failed or timed out with retries left."""
        run, spec = supervised.run, self.specs.get(supervised.run.id)
        if spec is None:
            return
        delay = schedules.retry_after(
            outcome.status, run.attempt, spec.max_retries, spec.retry_delay_seconds, spec.retry_max_delay_seconds
        )
        if delay is None:
            return
        not_before = (run.finished_at or self.clock()) + timedelta(seconds=delay)
        supervised.context.logger.warning(
            "attempt %d of %d %s; retry (attempt %d) in %d s, at %s", run.attempt, spec.max_retries + 1,
            outcome.status.replace("_", " "), run.attempt + 1, delay, when(slots.to_ms(not_before), spec),
        )  # fmt: skip
        self.counters.retries_scheduled += 1
        metrics.run_retried(spec.package)
        asyncio.get_running_loop().create_task(
            self._queue(spec, run.slot, run.attempt + 1, not_before, delay), name=f"retry of run {run.id}"
        )

    async def _queue(self, spec: JobSpec, slot: datetime, attempt: int, not_before: datetime, delay: int) -> None:
        try:
            await self.db.write(claims.queue_retry, spec.id, slot, attempt, not_before, spec.package)
        except Exception as exc:
            log.error("could not queue retry %d of job %s (%s: %s)", attempt, spec.id, type(exc).__name__, exc)
            return
        # Claimed by whichever node's queued-run claimer looks first once the delay has passed.
        asyncio.get_running_loop().call_later(delay, self.wake_claimer)
