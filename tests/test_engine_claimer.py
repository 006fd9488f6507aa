"""The claimer's rounds, in-process with a fake database: the slots of a new tick are claimed
while an earlier round is still on its way (at most ``ROUNDS_IN_FLIGHT``), no job is in two
rounds, and stopping lets the rounds on their way end and start their runs (a won claim always
gets its run started). The claim statement itself: ``test_engine_records.py``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from scheduler_app import slots
from scheduler_app.engine.claimer import ROUNDS_IN_FLIGHT, Claimer
from scheduler_app.engine.counters import Counters
from scheduler_app.engine.schedule import Schedule
from scheduler_app.jobtable import Diff, JobSpec

T0 = slots.to_ms(slots.ANCHOR) + 1_000_000_000


class GatedDatabase:
    """Claims win every slot, once the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.claimed: list[int] = []
        self._ids = iter(range(1, 10**6))

    async def write(self, fn: Any, node: str, wanted: list[Any], now: datetime, lock: bool) -> dict:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        self.claimed += [claim.job_id for claim in wanted]
        return {(claim.job_id, claim.slot_ms): next(self._ids) for claim in wanted}


def spec(job_id: int) -> JobSpec:
    return JobSpec(id=job_id, user_id=1, username="alice", plugin_id=1, package="p.x@v1.plugin.Plugin",
                   interval=1, timeout=30, config={}, code_version=1, updated_ms=0)  # fmt: skip


def claimer_with(db: GatedDatabase, started: list[int]) -> tuple[Claimer, Schedule]:
    schedule = Schedule()
    schedule.apply(Diff(upserted=[spec(job_id) for job_id in range(1, 31)]), T0)

    def start(run: Any, job: JobSpec) -> None:
        schedule.started(job.id, run.id)
        started.append(job.id)

    claimer = Claimer(db, schedule, "n1", start, Counters(), lambda: datetime.now(UTC))  # type: ignore[arg-type]
    return claimer, schedule


async def test_the_next_ticks_slots_are_claimed_while_a_round_is_on_its_way():
    db, started = GatedDatabase(), []
    claimer, schedule = claimer_with(db, started)
    loop_task = asyncio.get_running_loop().create_task(claimer.slots_loop())
    due = schedule.due(T0 + 1000)
    assert len(due) == 30 and schedule.due(T0 + 2000) == [], "a job being claimed is not offered again"
    for tick in range(ROUNDS_IN_FLIGHT + 2):  # four ticks' worth of slots, in turn
        claimer.offer(due[tick::4])
        await asyncio.sleep(0.01)
    assert db.most_in_flight == ROUNDS_IN_FLIGHT, "rounds overlap, up to the limit"
    assert started == []
    db.gate.set()
    await asyncio.sleep(0.05)
    assert sorted(started) == list(range(1, 31)), "every job started once: none was in two rounds"
    assert len(db.claimed) == 30
    claimer.stop()
    await asyncio.wait_for(loop_task, 1)


async def test_stopping_lets_the_rounds_on_their_way_start_their_runs():
    db, started = GatedDatabase(), []
    claimer, schedule = claimer_with(db, started)
    loop_task = asyncio.get_running_loop().create_task(claimer.slots_loop())
    claimer.offer(schedule.due(T0 + 1000))
    await asyncio.sleep(0.01)
    assert db.in_flight == 1
    claimer.stop()
    await asyncio.sleep(0.01)
    assert not loop_task.done(), "the loop waits for its round"
    db.gate.set()
    await asyncio.wait_for(loop_task, 1)
    assert sorted(started) == list(range(1, 31))
