"""The schedule's rules, in-process with a fake clock (``now`` is an argument): slots,
catch-up, coalescing, overlap, claims in flight, and applying job-table diffs."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_app import slots
from scheduler_app.engine.schedule import Schedule, slot_after, slot_at_or_before
from scheduler_app.jobtable import Diff, JobSpec

T0 = slots.to_ms(slots.ANCHOR) + 1_000_000_000  # an arbitrary moment, on no particular grid


def spec(job_id: int = 7, interval: int = 10, updated_ms: int = T0, **fields) -> JobSpec:
    base = JobSpec(id=job_id, user_id=1, username="alice", plugin_id=1, package="p.x@v1.plugin.Plugin",
                   interval=interval, timeout=30, config={}, code_version=1, updated_ms=updated_ms)  # fmt: skip
    return replace(base, **fields)


def loaded(*specs: JobSpec, now: int = T0) -> Schedule:
    schedule = Schedule()
    schedule.apply(Diff(upserted=list(specs)), now)
    return schedule


def run_through(schedule: Schedule, start: int, end: int, step: int = 100) -> list[tuple[int, int]]:
    """Due slots as a clock ticking every ``step`` ms would see them, each claim settled at once."""
    seen = []
    for now in range(start, end + 1, step):
        due = schedule.due(now)
        seen += [(s.id, slot) for s, slot in due]
        schedule.released([s.id for s, _ in due])
    return seen


def test_a_job_saved_just_now_waits_for_its_next_slot():
    job = spec()
    schedule = loaded(job)
    first = slot_after(job, T0)
    assert schedule.next_slot(job.id) == first
    assert schedule.due(first - 1) == []
    assert schedule.due(first) == [(job, first)]


def test_every_slot_runs_once_on_the_grid_while_the_clock_keeps_up():
    job = spec(interval=1)
    seen = run_through(loaded(job), T0, T0 + 10_000)
    assert len(seen) == 10 and len(set(seen)) == 10
    assert all(slots.is_slot(slot, job.id, 1) for _, slot in seen)
    assert [b - a for (_, a), (_, b) in itertools.pairwise(seen)] == [1000] * 9


def test_a_slot_missed_since_the_last_save_is_caught_up_once_older_ones_never():
    job = spec(interval=10, updated_ms=T0 - 50_000)  # five slots passed while nobody ran it
    schedule = loaded(job)
    latest = slot_at_or_before(job, T0)
    assert schedule.due(T0) == [(job, latest)]
    schedule.released([job.id])
    assert schedule.due(T0 + 1) == []
    assert schedule.next_slot(job.id) == latest + 10_000


def test_a_stalled_clock_coalesces_missed_slots_into_the_latest():
    job = spec(interval=1)
    schedule = loaded(job)
    first = slot_after(job, T0)
    stalled_until = first + 4_500  # the loop was stuck for 4.5 s: slots first..first+4000 are due
    assert schedule.due(stalled_until) == [(job, first + 4000)]
    assert schedule.counters.coalesced == 4
    assert schedule.next_slot(job.id) == first + 5000


def test_a_running_job_skips_its_slots_and_resumes_after_it_ends():
    job = spec(interval=1)
    schedule = loaded(job)
    first = slot_after(job, T0)
    schedule.due(first)
    schedule.released([job.id])
    schedule.started(job.id, run_id=1)
    assert schedule.due(first + 1000) == [] and schedule.due(first + 2000) == []
    assert schedule.counters.skipped_overlap == 2
    schedule.ended(job.id, run_id=1)
    assert schedule.due(first + 3000) == [(job, first + 3000)]


def test_a_slot_whose_claim_is_in_flight_blocks_the_next_one():
    job = spec(interval=1)
    schedule = loaded(job)
    first = slot_after(job, T0)
    assert schedule.due(first) == [(job, first)]
    assert schedule.due(first + 1000) == [], "the first claim has not settled"
    schedule.released([job.id])
    assert schedule.due(first + 2000) == [(job, first + 2000)]


def test_the_end_of_an_older_run_does_not_free_a_newer_one():
    schedule = loaded(spec())
    schedule.started(7, run_id=2)
    schedule.ended(7, run_id=1)
    assert schedule.is_running(7)


def test_many_jobs_due_together_come_out_once_each():
    jobs = [spec(job_id=i, interval=1) for i in range(1, 501)]
    seen = run_through(loaded(*jobs), T0, T0 + 3000, step=20)
    per_job: dict[int, int] = {}
    for job_id, _slot in seen:
        per_job[job_id] = per_job.get(job_id, 0) + 1
    assert set(per_job.values()) == {3}, "each job's three slots in 3 s, none twice"
    assert len(set(seen)) == len(seen)


def test_an_interval_change_moves_the_job_to_its_new_grid():
    job = spec(interval=1)
    schedule = loaded(job)
    changed = replace(job, interval=5)
    schedule.apply(Diff(upserted=[changed]), T0 + 100)
    seen = run_through(schedule, T0 + 100, T0 + 20_000)
    assert len(seen) == 4 and all(slots.is_slot(slot, job.id, 5) for _, slot in seen)


def test_a_config_change_keeps_the_slot_and_runs_the_new_spec():
    job = spec(interval=10)
    schedule = loaded(job)
    before = schedule.next_slot(job.id)
    edited = replace(job, config={"lines": 3})
    schedule.apply(Diff(upserted=[edited]), T0 + 500)
    assert schedule.next_slot(job.id) == before
    assert schedule.due(before) == [(edited, before)]


def test_a_removed_job_stops_and_a_re_added_one_does_not_run_twice():
    job = spec(interval=1)
    schedule = loaded(job)
    schedule.apply(Diff(removed=[job.id]), T0 + 10)
    assert len(schedule) == 0 and run_through(schedule, T0, T0 + 3000) == []
    # Activated again (a fresh save); the old entry's heap items are still there.
    schedule.apply(Diff(upserted=[replace(job, updated_ms=T0 + 3000)]), T0 + 3000)
    seen = run_through(schedule, T0 + 3000, T0 + 6000)
    assert len(seen) == 3 and len(set(seen)) == 3


def test_deleting_a_running_job_asks_to_cancel_it():
    a, b = spec(job_id=1), spec(job_id=2)
    schedule = loaded(a, b)
    schedule.started(1, run_id=10)
    assert schedule.apply(Diff(removed=[1, 2], deleted=[1, 2]), T0 + 10) == [1]


# -- the division of jobs among nodes (cluster.Membership decides; the schedule applies it) --------


def test_a_node_is_handed_only_the_slots_of_its_share():
    jobs = [spec(job_id, interval=1, updated_ms=0) for job_id in range(1, 11)]
    schedule = loaded(*jobs)
    mine = {2, 3, 5, 7}
    seen = run_through(schedule, T0, T0 + 3000, step=50)
    assert {job_id for job_id, _ in seen} == set(range(1, 11)), "without a division: every job"
    schedule = loaded(*jobs)
    due = []
    for now in range(T0, T0 + 3001, 50):
        batch = schedule.due(now, owns=lambda job_id: job_id in mine)
        due += batch
        schedule.released([s.id for s, _ in batch])
    assert {s.id for s, _ in due} == mine


def test_a_node_that_takes_jobs_over_catches_up_their_latest_slot_once():
    jobs = [spec(job_id, interval=10, updated_ms=0) for job_id in (1, 2, 3)]
    schedule = loaded(*jobs)
    now = T0 + 4321
    owned, due = schedule.take_over(lambda job_id: job_id == 1, lambda job_id: job_id in (1, 2), now)
    assert owned == 2
    assert due == [(jobs[1], slot_at_or_before(jobs[1], now))], "job 2 was gained; job 1 was already mine"
    handed = schedule.due(now + 1)
    assert 2 not in {s.id for s, _ in handed}, "job 2's claim is in flight: its slot is not handed out twice"
    assert 3 in {s.id for s, _ in handed}


def test_jobs_of_another_share_leave_the_heap_and_come_back_when_gained():
    """A node pays per slot of its own share: another member's job leaves the heap at its first
    due slot, and comes back (with its latest slot caught up) when the node gains it."""
    jobs = [spec(job_id, interval=1, updated_ms=0) for job_id in range(1, 11)]
    schedule = loaded(*jobs)
    mine = {2, 3, 5, 7}
    handed = run_through_owned(schedule, T0, T0 + 3000, lambda job_id: job_id in mine)
    assert {job_id for job_id, _ in handed} == mine
    assert len(schedule._heap) == len(mine), "the other jobs were popped once, not once per slot"

    now = T0 + 3500
    owned, due = schedule.take_over(lambda job_id: job_id in mine, lambda job_id: True, now)
    assert owned == 10
    assert {s.id for s, _ in due} == set(range(1, 11)) - mine, "the gained jobs' latest slots, once"
    schedule.released([s.id for s, _ in due])
    later = run_through_owned(schedule, now + 1, now + 3000, lambda job_id: True)
    assert {job_id for job_id, _ in later} == set(range(1, 11)), "every job is scheduled again"


def run_through_owned(schedule, start, end, owns, step=50):
    seen = []
    for now in range(start, end + 1, step):
        batch = schedule.due(now, owns=owns)
        seen += [(s.id, slot) for s, slot in batch]
        schedule.released([s.id for s, _ in batch])
    return seen


def test_a_job_taken_over_while_it_still_runs_here_or_saved_after_its_slot_is_not_caught_up():
    running, fresh = spec(1, interval=10, updated_ms=0), spec(2, interval=10, updated_ms=T0 + 5000)
    schedule = loaded(running, fresh, now=T0 + 5000)
    schedule.started(1, run_id=99)
    owned, due = schedule.take_over(lambda job_id: False, lambda job_id: True, T0 + 5000)
    assert slot_at_or_before(fresh, T0 + 5000) < fresh.updated_ms
    assert (owned, due) == (2, [])


# --- each job's own schedule (scheduler_app.schedules through the seam) ------------------------


def cron_spec(text: str, zone: str = "UTC", **fields) -> JobSpec:
    from scheduler_app import schedules

    return spec(timing=schedules.Timing.of(7, text, 10, zone), **fields)


def test_a_cron_job_is_due_on_its_cron_slots():
    job = cron_spec("*/2 * * * * *")
    start = -(-T0 // 2000) * 2000  # the first even second at or after the save
    seen = run_through(loaded(job), T0, start + 10_000)
    assert [slot for _, slot in seen] == list(range(start, start + 10_001, 2000))


def test_a_stalled_cron_job_coalesces_into_its_latest_slot_and_counts_the_rest():
    job = cron_spec("* * * * * *")
    schedule = loaded(job)
    first = schedule.next_slot(job.id)
    assert first is not None
    # the loop was stalled for 5.5 s: one run, for the latest slot; the 5 older ones counted
    assert schedule.due(first + 5_500) == [(job, first + 5_000)]
    assert schedule.counters.coalesced == 5
    assert schedule.next_slot(job.id) == first + 6_000


def test_changing_the_schedule_replans_the_next_slot():
    job = spec(interval=3600)
    schedule = loaded(job)
    faster = cron_spec("* * * * * *")
    schedule.apply(Diff(upserted=[faster]), T0)
    assert schedule.next_slot(job.id) == (T0 // 1000 + 1) * 1000


def test_a_job_whose_schedule_no_longer_parses_is_not_scheduled():
    schedule = loaded(spec())
    schedule.apply(Diff(upserted=[spec(schedule_error="“x” has 1 field")]), T0)
    assert len(schedule) == 0 and schedule.due(T0 + 10**9) == []


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["save", "reschedule", "remove", "tick"]),
            st.integers(min_value=1, max_value=5),  # job id
            st.integers(min_value=1, max_value=4),  # interval (s)
            st.integers(min_value=0, max_value=2500),  # ms the clock moves on
        ),
        max_size=60,
    )
)
def test_whatever_the_edits_a_slot_is_handed_out_once_and_only_the_jobs_current_slots(ops):
    """Saves, interval changes, removals and re-adds leave stale heap items behind; none of
    them may hand a slot out twice or hand out a slot of a job's old interval."""
    schedule, now, handed = Schedule(), T0, set()
    current: dict[int, JobSpec] = {}

    def tick() -> None:
        for s, slot in schedule.due(now):
            assert s.id in current and s.interval == current[s.id].interval, "only a job's current schedule"
            assert slots.is_slot(slot, s.id, s.interval) and slot <= now
            assert (s.id, slot) not in handed, "a slot is handed out once"
            handed.add((s.id, slot))
            schedule.released([s.id])

    for op, job_id, interval, later in ops:
        now += later
        if op in ("save", "reschedule"):
            old = current.get(job_id)
            job = spec(job_id, interval=interval if op == "reschedule" or old is None else old.interval, updated_ms=now)
            current[job_id] = job
            schedule.apply(Diff(upserted=[job]), now)
        elif op == "remove" and job_id in current:
            del current[job_id]
            schedule.apply(Diff(removed=[job_id]), now)
        tick()
    # Afterwards every job still scheduled keeps its grid: a slot every interval, none twice.
    for _ in range(100):
        now += 100
        tick()
    for job_id, job in current.items():
        assert any(j == job_id and slot > now - 2 * job.interval * 1000 for j, slot in handed), "still scheduled"
