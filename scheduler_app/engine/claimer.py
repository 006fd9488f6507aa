"""The claimer: turns due slots and queued manual runs into runs this node won.

Due slots arrive from the schedule (``offer``); one claim round takes up to
``MAX_CLAIM_BATCH`` of them and claims them in one statement in the writer thread
(``claims.claim_slots``); every won claim becomes a ``RunSnapshot`` handed to ``start``. Queued
runs (manual runs, and retries once their delay has passed) are claimed the same way, woken by
``run.queued`` notifications (or a retry's timer) with a short poll as the fallback; only the
queued runs of this node's share (``owns``) are claimed. The claimer knows nothing of plugins.

Only while the division of jobs is unsettled (``must_lock``) can two nodes claim one job at once;
then the claim locks the jobs' rows first (``claims.lock_jobs``), otherwise it saves that
statement. Fencing: nothing is claimed while ``may_act`` says no, and a claim won while this node
was fenced or renamed on the way (a pause during the claim's round trip) is handed to ``give_up``
(recorded cancelled), never started.
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
GiveUp = Callable[[RunSnapshot], None]


class Claimer:
    def __init__(
        self,
        db: Database,
        schedule: Schedule,
        node: str,
        start: Start,
        counters: Counters,
        clock: Callable[[], datetime],
        *,
        owns: Callable[[int], bool] = lambda job_id: True,
        may_act: Callable[[], bool] = lambda: True,
        give_up: GiveUp | None = None,
        must_lock: Callable[[], bool] = lambda: True,
    ) -> None:
        self.db = db
        self.must_lock = must_lock
        self.owns = owns
        self.may_act = may_act
        self.give_up = give_up
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
        if not self.may_act():
            self.schedule.released([spec.id for spec, _slot in batch])
            self.counters.skipped_fenced += len(batch)
            return 0
        now, node = self.clock(), self.node
        wanted = [claims.SlotClaim(spec.id, slot_ms, spec.package) for spec, slot_ms in batch]
        try:
            won = await self.db.claim(claims.claim_slots, node, wanted, now, self.must_lock())
        except Exception as exc:
            log.warning("could not claim %d due slots (%s: %s); they are skipped", len(batch), type(exc).__name__, exc)
            return 0
        finally:
            self.schedule.released([spec.id for spec, _slot in batch])
        self.counters.claimed += len(won)
        self.counters.lost_claims += len(batch) - len(won)
        metrics.claims(len(won), len(batch) - len(won))
        # the runs of a round share a handful of slots: each becomes a datetime once
        slot_times: dict[int, datetime] = {}
        runs = []
        for spec, slot_ms in batch:
            run_id = won.get((spec.id, slot_ms))
            if run_id is None:
                continue
            slot = slot_times.get(slot_ms)
            if slot is None:
                slot = slot_times[slot_ms] = slots.to_datetime(slot_ms)
            runs.append((self._snapshot(run_id, spec, SCHEDULE, slot, now, node), spec))
        return self._start_or_give_up(runs, node)

    def _start_or_give_up(self, runs: list[tuple[RunSnapshot, JobSpec]], node: str) -> int:
        if runs and (node != self.node or not self.may_act()):
            # Fenced (or rejoined under a new name) while the claim was on its way: start nothing.
            for run, _spec in runs:
                if self.give_up is not None:
                    self.give_up(run)
            return 0
        for run, spec in runs:
            self.start(run, spec)
        return len(runs)

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
        if not self.may_act():
            return 0
        # "Run now" and retries follow the division of jobs too: the job's owner claims them.
        ids = [run_id for run_id, job_id in await self.db.read(claims.queued_runs) if self.owns(job_id)]
        if not ids:
            return 0
        now, node = self.clock(), self.node
        won = await self.db.claim(claims.claim_queued, node, ids, self.schedule.running_jobs(), now)
        self.counters.claimed += len(won)
        metrics.claims(len(won), 0)
        runs = []
        for claim in won:
            snapshot = self._snapshot(claim.run_id, claim.spec, claim.trigger, claim.slot, claim.started_at, node)
            snapshot.attempt = claim.attempt
            runs.append((snapshot, claim.spec))
        return self._start_or_give_up(runs, node)

    def _snapshot(
        self, run_id: int, spec: JobSpec, trigger: str, slot: datetime, now: datetime, node: str
    ) -> RunSnapshot:
        return RunSnapshot(
            id=run_id,
            job_id=spec.id,
            plugin_id=spec.plugin_id,
            user_id=spec.user_id,
            trigger=trigger,
            slot=slot,
            node=node,
            status=RUNNING,
            started_at=now,
        )
