"""The schedule: which job is due when. Pure: no I/O, no clock (every call is given ``now``).

It holds a heap of (next slot, job) and answers three questions:

- ``apply(diff, now)``: the job table changed; add, reschedule or drop jobs. A new job whose
  latest slot falls after its last save catches that slot up at once (it was missed while no
  node ran it); older missed slots never run.
- ``due(now, owns)``: the slots to claim now, of the jobs this node ``owns`` (its share, see
  ``cluster.Membership``). Missed slots of one job are coalesced into the latest one; a job
  still running (or with a claim in flight) skips its slot, so it never overlaps itself on this
  node (the claim's "running anywhere" check covers other nodes). A job of another member's
  share leaves the heap at its first due slot (*parked*): a node pays per slot of its own
  share only, not per slot of every job.
- ``take_over(owned_before, owns, now)``: the members changed; the latest slot of each job this
  node gained is due now (its previous owner may be gone), and its parked jobs of the new share
  go back into the heap.
- ``started`` / ``ended`` / ``released``: the bookkeeping of runs and claims in flight.

Slot times come from ``slot_at_or_before`` and ``slot_after`` below, the seam to
``scheduler_app.schedules`` (each job's interval or cron in its time zone, with its jitter).
Every rule here has a unit test with a fake clock (tests/test_engine_schedule.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

from scheduler_app import schedules, slots
from scheduler_app.engine.counters import Counters
from scheduler_app.jobtable import Diff, JobSpec

#: Slots counted one by one when coalescing a cron job (beyond that: "at least this many").
MAX_COUNTED = 10_000

#: A slot this late when a node takes the job up (start-up after downtime) is "caught up".
CAUGHT_UP_AFTER_MS = 2000

# Scheduler events, as lines in the log of the run they concern.
CAUGHT_UP = "caught up: this slot came due before a scheduler took the job up; it runs now, once (older ones never)"
COALESCED = "coalesced: {} earlier missed slot{} (the scheduler was held up) run as this one run"


def slot_at_or_before(spec: JobSpec, now_ms: int) -> int | None:
    """The job's latest slot at or before ``now_ms`` (epoch milliseconds); None if it has none."""
    if spec.timing is None:
        return slots.slot_at_or_before(now_ms, spec.id, spec.interval)
    return schedules.slot_at_or_before(spec.timing, now_ms)


def slot_after(spec: JobSpec, t_ms: int) -> int:
    """The job's first slot strictly after ``t_ms``."""
    if spec.timing is None:
        return slots.slot_after(t_ms, spec.id, spec.interval)
    return schedules.next_slot(spec.timing, t_ms)


def slots_between(spec: JobSpec, first_ms: int, last_ms: int) -> int:
    """How many of the job's slots lie in ``[first_ms, last_ms)`` (both slots of the job)."""
    if spec.timing is None or spec.timing.schedule.kind != "cron":
        interval = spec.interval if spec.timing is None else spec.timing.interval_seconds
        # both are slots: whole intervals apart, give or take their jitter (less than one interval)
        return max(0, round((last_ms - first_ms) / (interval * 1000)))
    count, at = 0, first_ms
    while at < last_ms and count < MAX_COUNTED:
        count += 1
        at = schedules.next_slot(spec.timing, at)
    return count


#: A heap item is one int, ``slot_ms << JOB_BITS | job_id``: heapq compares ints in one C call
#: where a ``(slot, job)`` tuple took several (the pops were ~6 % of the loop's time at 14,000
#: slots/s). Job ids are positive 64-bit integers (a ``bigint`` primary key).
JOB_BITS = 64
JOB_MASK = (1 << JOB_BITS) - 1


@dataclass(slots=True)
class _Entry:
    spec: JobSpec
    #: the slot its heap item stands for: an item whose slot differs is stale (left behind by a
    #: reschedule, or by an earlier entry of the same job) and is dropped when popped
    next_ms: int = 0
    #: out of the heap: another member's share (``take_over`` puts it back when it is gained)
    parked: bool = False


class Schedule:
    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = counters or Counters()
        self._jobs: dict[int, _Entry] = {}
        self._heap: list[int] = []  # slot_ms << JOB_BITS | job_id
        self._running: dict[int, int] = {}  # job id -> run id
        self._claiming: set[int] = set()  # jobs whose slot waits for (or is in) a claim
        # What the engine tells the jobs' logs (scheduler events): slots skipped because the job
        # was still running, and per job a note for the run of a slot that caught up missed ones.
        self._skipped: list[tuple[int, int]] = []
        self._notes: dict[int, tuple[int, str]] = {}

    # -- what is scheduled ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    def spec(self, job_id: int) -> JobSpec | None:
        entry = self._jobs.get(job_id)
        return entry.spec if entry else None

    def next_slot(self, job_id: int) -> int | None:
        entry = self._jobs.get(job_id)
        return entry.next_ms if entry else None

    def apply(self, diff: Diff, now_ms: int) -> list[int]:
        """Apply a job-table diff; return the ids of deleted jobs that are running here (to cancel)."""
        for spec in diff.upserted:
            if spec.schedule_error:  # its stored schedule no longer parses (the job table logged why)
                self._jobs.pop(spec.id, None)
                continue
            entry = self._jobs.get(spec.id)
            if entry is None:
                entry = self._jobs[spec.id] = _Entry(spec)
                latest = slot_at_or_before(spec, now_ms)
                # Coalesce downtime: the latest slot due since the job last changed runs now (the
                # claim loses if some node already ran it); older ones never.
                if latest is not None and latest >= spec.updated_ms:
                    self._push(entry, latest)
                    if now_ms - latest >= CAUGHT_UP_AFTER_MS:  # not just a save heard a moment late
                        self.counters.caught_up += 1
                        self._notes[spec.id] = (latest, CAUGHT_UP)
                else:
                    self._push(entry, slot_after(spec, now_ms if latest is None else latest))
            else:
                old, entry.spec = entry.spec, spec
                if old.interval != spec.interval or old.timing != spec.timing:
                    self._push(entry, slot_after(spec, now_ms))
        for job_id in diff.removed:
            self._jobs.pop(job_id, None)
        return [job_id for job_id in diff.deleted if job_id in self._running]

    def _push(self, entry: _Entry, due_ms: int) -> None:
        entry.next_ms = due_ms
        entry.parked = False
        heapq.heappush(self._heap, due_ms << JOB_BITS | entry.spec.id)

    # -- what is due --------------------------------------------------------------------------

    def next_due_ms(self) -> int | None:
        """When the earliest slot is due (it may belong to a job removed since: a hint)."""
        return self._heap[0] >> JOB_BITS if self._heap else None

    def due(self, now_ms: int, owns: Callable[[int], bool] | None = None) -> list[tuple[JobSpec, int]]:
        """Pop every slot due at ``now_ms``: ``(spec, slot_ms)`` to claim, at most one per job, of
        the jobs ``owns`` says are this node's (all when None)."""
        heap, jobs, counters = self._heap, self._jobs, self.counters
        out: list[tuple[JobSpec, int]] = []
        due_before = (now_ms + 1) << JOB_BITS
        while heap and heap[0] < due_before:
            item = heapq.heappop(heap)
            due_ms, job_id = item >> JOB_BITS, item & JOB_MASK
            entry = jobs.get(job_id)
            if entry is None or entry.next_ms != due_ms or entry.parked:
                # Removed or rescheduled since. A duplicate of the item just handled (a job
                # rescheduled onto the slot it already had) finds next_ms moved on: each slot
                # of a job is handed out once.
                continue
            if owns is not None and not owns(job_id):
                entry.parked = True  # another member's share: out of the heap until gained
                continue
            spec = entry.spec
            slot_ms, entry.next_ms = due_ms, slot_after(spec, due_ms)
            if entry.next_ms <= now_ms:  # late past the next slot too (a stall): coalesce into the latest
                slot_ms = max(slot_at_or_before(spec, now_ms) or due_ms, due_ms)
                missed = slots_between(spec, due_ms, slot_ms)
                counters.coalesced += missed
                entry.next_ms = slot_after(spec, slot_ms)
                if missed:
                    self._notes[job_id] = (slot_ms, COALESCED.format(missed, "s" if missed != 1 else ""))
            heapq.heappush(heap, entry.next_ms << JOB_BITS | job_id)
            if job_id in self._running or job_id in self._claiming:
                counters.skipped_overlap += 1
                self._skipped.append((job_id, slot_ms))
                continue
            self._claiming.add(job_id)
            out.append((spec, slot_ms))
        counters.due += len(out)
        return out

    def take_over(
        self, owned_before: Callable[[int], bool], owns: Callable[[int], bool], now_ms: int
    ) -> tuple[int, list[tuple[JobSpec, int]]]:
        """The members changed: return (jobs owned now, the latest slot of each job gained).

        The previous owner may have gone (the slot due meanwhile would be missed) or still be here
        (the claim finds the slot taken); a job saved after its latest slot waits for its next."""
        owned, out = 0, list[tuple[JobSpec, int]]()
        for job_id, entry in self._jobs.items():
            if not owns(job_id):
                continue
            owned += 1
            latest = slot_at_or_before(entry.spec, now_ms)
            if entry.parked:
                self._push(entry, slot_after(entry.spec, now_ms if latest is None else latest))
            if owned_before(job_id) or job_id in self._running or job_id in self._claiming:
                continue
            if latest is not None and latest >= entry.spec.updated_ms:
                self._claiming.add(job_id)
                out.append((entry.spec, latest))
        self.counters.due += len(out)
        return owned, out

    # -- runs and claims in flight --------------------------------------------------------------

    def take_skipped(self) -> list[tuple[int, int]]:
        """The (job, slot) pairs skipped since the last call (the job was still running)."""
        skipped, self._skipped = self._skipped, []
        return skipped

    def has_note(self, job_id: int) -> bool:
        """Whether a note waits for a run of this job (most runs have none: a dict lookup)."""
        return job_id in self._notes

    def take_note(self, job_id: int, slot_ms: int) -> str:
        """What to tell the run of ``slot_ms`` about the slots it stands for ("" if nothing)."""
        note = self._notes.get(job_id)
        if note is None or note[0] != slot_ms:
            return ""
        del self._notes[job_id]
        return note[1]

    def running_run(self, job_id: int) -> int | None:
        return self._running.get(job_id)

    def is_running(self, job_id: int) -> bool:
        return job_id in self._running

    def running_jobs(self) -> set[int]:
        return set(self._running)

    def released(self, job_ids: list[int]) -> None:
        """The claims of these jobs' slots are settled (won, lost or failed)."""
        self._claiming.difference_update(job_ids)

    def started(self, job_id: int, run_id: int) -> None:
        self._running[job_id] = run_id

    def ended(self, job_id: int, run_id: int) -> None:
        if self._running.get(job_id) == run_id:
            del self._running[job_id]
