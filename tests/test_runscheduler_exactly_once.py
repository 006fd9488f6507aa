"""Exactly once: several runscheduler processes share the database; each (job, slot) is
executed once (counted by the probe's own record of its executions, not by rows) and, while
they are all up, no slot is missed."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

import pytest
from django.utils import timezone

from scheduler_app import slots
from scheduler_app.models import JobRun
from tests.engine_support import is_postgres, probe_job, probe_plugin, schedulers, user
from tests.processes import wait_until

__all__ = ["schedulers"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_several_nodes_run_each_slot_exactly_once(schedulers, tmp_path):
    # PostgreSQL: the three processes for 30 s. SQLite (one file, one writer at a
    # time) gets two processes for a shorter while.
    processes, jobs, seconds = (3, 36, 32) if is_postgres() else (2, 24, 12)
    plugin = probe_plugin(interval=1)
    executions = tmp_path / "executions.txt"
    all_jobs = [probe_job(user(f"user{i}"), plugin, lines=1, record=str(executions)) for i in range(jobs)]
    nodes = [schedulers.start(f"node{i}") for i in range(processes)]
    all_up = timezone.now()
    time.sleep(seconds)
    all_up_until = timezone.now()
    end_ms = slots.to_ms(all_up_until) - 1000

    # A loaded machine's loops lag behind the clock: let them claim every slot due before the
    # checked window ends, or the stop would cut off slots they were about to run (not missed).
    def caught_up() -> bool:
        latest: dict[int, int] = {}
        for job_id, slot in JobRun.objects.values_list("job_id", "slot"):
            latest[job_id] = max(latest.get(job_id, 0), slots.to_ms(slot))
        return all(latest.get(job.pk, 0) >= slots.slot_at_or_before(end_ms, job.pk, 1) for job in all_jobs)

    wait_until(caught_up, 30, "the nodes to claim the slots due in the checked window")
    for node in nodes:
        assert node.stop() == 0, node.output()

    rows = list(JobRun.objects.values_list("job_id", "slot", "node", "status", "trigger"))
    assert {status for *_, status, _ in rows} <= {JobRun.Status.SUCCEEDED, JobRun.Status.CANCELLED}
    assert {trigger for *_, trigger in rows} == {JobRun.Trigger.SCHEDULE}
    # What ran, as the plugin saw it: one line per execution.
    ran: Counter[tuple[int, int]] = Counter()
    for line in executions.read_text().splitlines():
        job_id, slot, _run_id = line.split()
        ran[(int(job_id), slots.to_ms(datetime.fromisoformat(slot)))] += 1
    assert [pair for pair, n in ran.items() if n > 1] == [], "no (job, slot) executed twice"
    recorded = {(job_id, slots.to_ms(slot)) for job_id, slot, *_ in rows}
    assert set(ran) == recorded, "every recorded run executed, and every execution was recorded"

    # Every slot due while all nodes were up (with a second of margin at both ends) ran.
    start_ms = slots.to_ms(all_up) + 1000
    missing = []
    for job in all_jobs:
        ran_slots = {slot for job_id, slot in ran if job_id == job.pk}
        slot = slots.slot_after(start_ms, job.pk, 1)
        while slot <= end_ms:
            if slot not in ran_slots:
                missing.append((job.pk, slots.to_datetime(slot)))
            slot += 1000
    assert missing == [], f"{len(missing)} slots missed"
    by_node = Counter(node.split(":")[0] for _, _, node, _, _ in rows)
    assert len(by_node) == processes, f"every node won some claims: {by_node}"
