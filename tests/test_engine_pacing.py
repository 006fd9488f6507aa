"""The tick's pacing (scheduler_app.engine.pacing): sparse slots on time, dense ones in full batches."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler_app.engine.pacing import (
    FULL_BATCH,
    IDLE_SECONDS,
    MAX_TICK_SECONDS,
    TICK_SECONDS,
    PacedTrigger,
    Pacer,
)


def paced(rate_per_second: float, seconds: float = 3.0) -> Pacer:
    """A pacer that has ticked at this rate of due slots for a while (every 20 ms, or at each
    slot when they are further apart)."""
    pacer, t = Pacer(), 1000.0
    step = max(TICK_SECONDS, 1 / rate_per_second)
    while t < 1000.0 + seconds:
        pacer.ticked(t, round(rate_per_second * step))
        t += step
    return pacer


def test_a_node_with_many_due_slots_ticks_every_20_ms() -> None:
    # one node at 1,000 runs/s or more: a full batch every 20 ms, the lag of a fixed 20 ms tick
    assert paced(1000).period() == pytest.approx(TICK_SECONDS)
    assert paced(2000).period() == TICK_SECONDS


def test_a_node_with_a_third_of_the_slots_ticks_less_often_for_fuller_batches() -> None:
    period = paced(1000 / 3).period()
    assert period == pytest.approx(FULL_BATCH / (1000 / 3), rel=0.1)
    assert TICK_SECONDS < period <= MAX_TICK_SECONDS


def test_batching_never_delays_a_slot_more_than_the_longest_period() -> None:
    assert paced(10).period() == MAX_TICK_SECONDS
    assert Pacer().period() == TICK_SECONDS  # nothing known yet: the short period


def test_a_sparse_slot_runs_when_due_not_on_a_fixed_timer() -> None:
    pacer = paced(5)
    # the next slot is 0.37 s away: the tick sleeps until then, not 20 ms at a time
    assert pacer.next_tick(now=50.0, next_due=50.37) == 50.37
    # nothing scheduled: it still looks again within IDLE_SECONDS
    assert pacer.next_tick(now=50.0, next_due=None) == 50.0 + IDLE_SECONDS
    assert pacer.next_tick(now=50.0, next_due=3600.0) == 50.0 + IDLE_SECONDS


def test_a_slot_already_due_waits_for_the_period_since_the_last_tick() -> None:
    pacer = paced(1000 / 3)
    assert pacer.next_tick(now=50.0, next_due=49.99) == pytest.approx(50.0 + pacer.period())


def test_the_trigger_answers_after_now_so_apscheduler_does_not_loop() -> None:
    now = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    trigger = PacedTrigger(Pacer(), lambda: int(now.timestamp() * 1000) - 5000)  # a slot long overdue
    fire = trigger.get_next_fire_time(now, now)
    assert fire > now
    assert (fire - now).total_seconds() == pytest.approx(TICK_SECONDS)
    later = int(now.timestamp() * 1000) + 400
    assert PacedTrigger(Pacer(), lambda: later).get_next_fire_time(now, now).timestamp() == pytest.approx(later / 1000)


async def test_stopping_never_cancels_a_tick_in_flight(caplog) -> None:
    """APScheduler's asyncio executor cancels the job tasks still pending at shutdown and logs
    each as an error with a traceback. Its wake-up and its shutdown are both queued on the
    loop, so a stop right after a wake-up (a due tick) met that now and then. ``stop_ticking``
    pauses first (a queued wake-up then submits nothing) and lets a tick already submitted end."""
    import asyncio
    import logging

    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from scheduler_app.engine.engine import stop_ticking

    async def scenario(stop: str) -> list[int]:
        ticks: list[int] = []

        async def tick() -> None:  # like the engine's: never awaits
            ticks.append(1)

        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.start()
        await asyncio.sleep(0.01)
        # a running scheduler queues a wake-up for the new job, due now: the stop comes next
        scheduler.add_job(tick, "interval", seconds=60, next_run_time=datetime.now(UTC))
        if stop == "submitted":  # the wake-up has run: the tick's task waits for its first step
            executor = scheduler._lookup_executor("default")
            while not executor._pending_futures:
                await asyncio.sleep(0)
            assert not ticks
        if stop == "shutdown":
            scheduler.shutdown(wait=False)  # what the engine did
        else:
            await stop_ticking(scheduler)
        await asyncio.sleep(0.01)
        return ticks

    caplog.set_level(logging.ERROR, logger="apscheduler")
    assert await scenario("shutdown") == [] and "Error running job" in caplog.text, "the old way: cancelled, logged"
    caplog.clear()
    assert await scenario("woken") == [], "paused before the wake-up ran: no tick submitted"
    assert await scenario("submitted") == [1], "a tick already submitted runs"
    assert not caplog.records, caplog.text
