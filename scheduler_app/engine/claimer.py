"""The claimer: turns due slots and queued manual runs into runs this node won.

Due slots arrive from the schedule (``offer``); one claim round takes up to
``MAX_CLAIM_BATCH`` of them and claims them in one statement in the writer thread
(``claims.claim_slots``); every won claim becomes a ``RunSnapshot`` handed to ``start``. Queued
runs (manual runs, and retries once their delay has passed) are claimed the same way, woken by
``run.queued`` notifications (or a retry's timer) with a short poll as the fallback. The
claimer knows nothing of plugins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from scheduler_app import claims, metrics, slots
from scheduler_app.engine.access import Database
from scheduler_app.engine.counters import Counters
from scheduler_app.engine.schedule import Schedule
from scheduler_app.jobtable import JobSpec
from scheduler_app.models import JobRun
from scheduler_app.streams import RunSnapshot

log = logging.getLogger("scheduler_app.engine")

#: Most slots claimed in one claim round (a burst after downtime is spread over rounds).
MAX_CLAIM_BATCH = 2000
#: Fallback poll for queued manual runs when no notification arrives.
QUEUED_POLL_SECONDS = 0.5

RUNNING = JobRun.Status.RUNNING.value
SCHEDULE = JobRun.Trigger.SCHEDULE.value

Start = Callable[[RunSnapshot, JobSpec], None]


class Claimer:
    def __init__(
        self,
        db: Database,
        schedule: Schedule,
        node: str,
        start: Start,
        counters: Counters,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.schedule = schedule
        self.node = node
        self.start = start
        self.counters = counters
        self.clock = clock
        self._due: list[tuple[JobSpec, int]] = []
        self._due_ready = asyncio.Event()
        self._queued_ready = asyncio.Event()
        self._stopping = False

    def offer(self, due: list[tuple[JobSpec, int]]) -> None:
        self._due.extend(due)
        self._due_ready.set()

    def wake_queued(self) -> None:
        self._queued_ready.set()

    def stop(self) -> None:
        """Stop after the current round (a won claim always gets its run started)."""
        self._stopping = True
        self._due_ready.set()
        self._queued_ready.set()

    # -- scheduled slots ---------------------------------------------------------------------

    async def slots_loop(self) -> None:
        while True:
            await self._due_ready.wait()
            self._due_ready.clear()
            if self._stopping:
                return
            await self.claim_round()

    async def claim_round(self) -> int:
        """Claim one batch of the offered slots; start the runs won; return how many."""
        batch, self._due[:] = self._due[:MAX_CLAIM_BATCH], self._due[MAX_CLAIM_BATCH:]
        if self._due:
            self._due_ready.set()
        # A manual run of the job may have started since its slot was due.
        busy = [spec.id for spec, _slot in batch if self.schedule.is_running(spec.id)]
        self.schedule.released(busy)
        batch = [(spec, slot) for spec, slot in batch if not self.schedule.is_running(spec.id)]
        if not batch:
            return 0
        now = self.clock()
        wanted = [claims.SlotClaim(spec.id, slot_ms, spec.package) for spec, slot_ms in batch]
        try:
            won = await self.db.write(claims.claim_slots, self.node, wanted, now)
        except Exception as exc:
            log.warning("could not claim %d due slots (%s: %s); they are skipped", len(batch), type(exc).__name__, exc)
            return 0
        finally:
            self.schedule.released([spec.id for spec, _slot in batch])
        self.counters.claimed += len(won)
        self.counters.lost_claims += len(batch) - len(won)
        metrics.claims(len(won), len(batch) - len(won))
        for spec, slot_ms in batch:
            run_id = won.get((spec.id, slot_ms))
            if run_id is not None:
                self.start(self._snapshot(run_id, spec, SCHEDULE, slots.to_datetime(slot_ms), now), spec)
        return len(won)

    # -- manual runs ---------------------------------------------------------------------------

    async def queued_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._queued_ready.wait(), QUEUED_POLL_SECONDS)
            except TimeoutError:
                pass
            self._queued_ready.clear()
            if self._stopping:
                return
            try:
                await self.claim_queued()
            except Exception as exc:
                log.warning("could not claim queued runs (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(1)

    async def claim_queued(self) -> int:
        ids = await self.db.read(claims.queued_run_ids)
        if not ids:
            return 0
        now = self.clock()
        won = await self.db.write(claims.claim_queued, self.node, ids, self.schedule.running_jobs(), now)
        self.counters.claimed += len(won)
        metrics.claims(len(won), 0)
        for claim in won:
            snapshot = self._snapshot(claim.run_id, claim.spec, claim.trigger, claim.slot, claim.started_at)
            snapshot.attempt = claim.attempt
            self.start(snapshot, claim.spec)
        return len(won)

    def _snapshot(self, run_id: int, spec: JobSpec, trigger: str, slot: datetime, now: datetime) -> RunSnapshot:
        return RunSnapshot(
            id=run_id,
            job_id=spec.id,
            plugin_id=spec.plugin_id,
            user_id=spec.user_id,
            trigger=trigger,
            slot=slot,
            node=self.node,
            status=RUNNING,
            started_at=now,
        )
