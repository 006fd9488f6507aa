"""When the tick runs: as soon as a slot is due, but not more often than a full batch needs.

Every tick that finds due slots of this node's share costs a claim transaction (and its round
trips, in the node and in the database) whatever the number of slots in it. A fixed 20 ms tick
made a node with a third of the jobs pay the same 50 claim transactions per second as a node
with all of them, each a third as full: three nodes cost 1.9-2.2x the CPU per run of one
(docs/performance.md, "Failover and scale-out"). So the tick adapts:

- **Sparse slots run when due.** The tick sleeps until the schedule's next due slot (the heap
  knows it), not until a fixed timer: a node whose jobs come due a few times a second wakes a
  few times a second, each slot on time (no 0-20 ms rounding).
- **Dense slots are batched by rate.** Ticks are at least ``period()`` apart: ``TICK_SECONDS``
  while this node hands out ``FULL_BATCH`` slots per tick or more (one node at 1,000 runs/s),
  longer when its share is smaller, up to ``MAX_TICK_SECONDS``, so a claim carries about
  ``FULL_BATCH`` slots. The rate is an average over the last second or so of ticks.

The added start lag is bounded by ``MAX_TICK_SECONDS`` and happens only where slots come due
faster than one per ``period()`` (where a batch saves a transaction). Pure: the times are
passed in, so tests/test_engine_pacing.py checks each rule with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger

#: Shortest time between two ticks (bounds the start lag of a node with a large share).
TICK_SECONDS = 0.02
#: Longest time between two ticks while slots are due (bounds the lag added by batching).
MAX_TICK_SECONDS = 0.06
#: Slots per tick at which a claim is "full": one node at 1,000 runs/s hands out ~20 per 20 ms.
FULL_BATCH = 20
#: The longest a tick sleeps when nothing is due (a safety net: changes to the schedule wake it).
IDLE_SECONDS = 1.0
#: Weight of the newest tick in the rate's moving average (about the last second of ticks).
SMOOTHING = 0.1


class Pacer:
    """The rate of due slots this node hands out, and when the next tick is due."""

    def __init__(self) -> None:
        #: slots handed out per second (moving average over recent ticks)
        self.rate = 0.0
        self._last_tick: float | None = None

    def ticked(self, now: float, slots: int) -> None:
        """A tick at ``now`` (seconds) handed out ``slots`` slots."""
        if self._last_tick is not None and now > self._last_tick:
            sample = slots / (now - self._last_tick)
            self.rate += SMOOTHING * (sample - self.rate)
        self._last_tick = now

    def period(self) -> float:
        """The shortest time to the next tick: long enough for a full batch, within bounds."""
        if self.rate <= 0:
            return TICK_SECONDS
        return min(MAX_TICK_SECONDS, max(TICK_SECONDS, FULL_BATCH / self.rate))

    def next_tick(self, now: float, next_due: float | None) -> float:
        """When to tick next: at the next due slot, but at least ``period()`` after ``now`` (the
        last tick) and at most ``IDLE_SECONDS`` after it."""
        earliest = now + self.period()
        if next_due is None:
            return now + IDLE_SECONDS
        return min(max(earliest, next_due), now + IDLE_SECONDS)


class PacedTrigger(BaseTrigger):
    """APScheduler's trigger for the tick: fire times from a ``Pacer`` and the next due slot.

    ``next_due_ms`` returns the schedule's next due slot (epoch milliseconds) or None."""

    __slots__ = ("next_due_ms", "pacer")

    def __init__(self, pacer: Pacer, next_due_ms: Callable[[], int | None]) -> None:
        self.pacer = pacer
        self.next_due_ms = next_due_ms

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        due_ms = self.next_due_ms()
        at = self.pacer.next_tick(now.timestamp(), None if due_ms is None else due_ms / 1000)
        # APScheduler asks again while the answer is not after ``now``.
        return max(datetime.fromtimestamp(at, UTC), now + timedelta(microseconds=1))
