"""Failover: a node killed (kill -9) or paused (SIGSTOP) with runs in flight costs no duplicate
execution and no overlap, and every run ends in a final state.

The ``trail_probe`` plugin writes each execution's start, steps and end to a file, so the test
sees what the plugin really did, including what a killed node never recorded. Timings are the
chaos benchmark's business (bench/chaos.py); here only correctness is asserted.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler_app import services, slots
from scheduler_app.models import JobRun, Plugin
from tests import trail
from tests.engine_support import FAST, is_postgres, schedulers, user
from tests.processes import ManagedProcess, wait_until

__all__ = ["schedulers"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LOST_AFTER = float(FAST["SCHEDULER_LOST_AFTER_SECONDS"])
FINAL = {s.value for s in JobRun.Status} - {JobRun.Status.RUNNING.value, JobRun.Status.QUEUED.value}


def trail_jobs(count: int) -> list[int]:
    plugin = Plugin.objects.create(name="Trail", package=trail.PACKAGE, interval=1)
    return [
        services.create_job(user(f"user{i}"), plugin, {"steps": 5, "step_seconds": 0.1}, activate=True).pk
        for i in range(count)
    ]


def start_nodes(schedulers, count: int, trail_file: Path) -> list[ManagedProcess]:
    return [schedulers.start(f"node{i}", TRAIL_FILE=str(trail_file)) for i in range(count)]


def node_name(pid: int) -> str:
    """The node's name as the database knows it (``name:pid:random``) from its first run."""
    names = {n for n in JobRun.objects.values_list("node", flat=True).distinct() if n.split(":")[1] == str(pid)}
    assert len(names) == 1, names
    return names.pop()


def wait_for_runs_in_flight(trail_file: Path, nodes: list[ManagedProcess]) -> ManagedProcess:
    """The node with the most runs in flight, once it has some."""
    found: list[ManagedProcess] = []

    def busy() -> bool:
        executions, now = trail.read_trail(trail_file), time.time()
        best = max(nodes, key=lambda n: len(trail.in_flight(executions, n.pid, now)))
        if len(trail.in_flight(executions, best.pid, now)) >= 2:
            found[:] = [best]
            return True
        return False

    wait_until(busy, 30, "a node with runs in flight", interval=0.05)
    return found[0]


def assert_no_duplicate_no_overlap(trail_file: Path) -> list[trail.Execution]:
    executions = trail.read_trail(trail_file)
    assert trail.duplicates(executions) == [], "no (job, slot) executed twice"
    overlapping = [
        (a.job, (a.pid, round(a.start, 2), round(a.last_work, 2)), (b.pid, round(b.start, 2), round(b.last_work, 2)))
        for a, b in trail.overlaps(executions)
    ]
    assert overlapping == [], f"{len(overlapping)} overlapping executions of one job (job, (pid, start, last work) x2)"
    return executions


def test_a_killed_node_s_runs_are_lost_and_its_jobs_run_once_elsewhere(schedulers, tmp_path):
    trail_file = tmp_path / "trail.txt"
    trail_jobs(12)
    nodes = start_nodes(schedulers, 3 if is_postgres() else 2, trail_file)
    victim = wait_for_runs_in_flight(trail_file, nodes)
    killed_at = time.time()
    victim.kill()
    flying = {e.job for e in trail.in_flight(trail.read_trail(trail_file), victim.pid, killed_at)}
    name = node_name(victim.pid)

    def taken_over() -> bool:
        executions = trail.read_trail(trail_file)
        resumed = {e.job for e in executions if e.start > killed_at and e.pid != victim.pid}
        left_running = JobRun.objects.filter(node=name, status=JobRun.Status.RUNNING).exists()
        return flying <= resumed and not left_running

    wait_until(taken_over, 30 + LOST_AFTER, "the killed node's runs marked lost and its jobs run elsewhere")
    for node in nodes:
        if node is not victim:
            assert node.stop() == 0, node.output()

    assert_no_duplicate_no_overlap(trail_file)
    statuses = set(JobRun.objects.values_list("status", flat=True))
    assert statuses <= FINAL, f"every run ends in a final state: {statuses}"
    assert JobRun.objects.filter(node=name, status=JobRun.Status.LOST).count() >= len(flying)


def test_a_paused_node_s_runs_never_overlap_the_node_that_took_over(schedulers, tmp_path):
    trail_file = tmp_path / "trail.txt"
    trail_jobs(12)
    nodes = start_nodes(schedulers, 2, trail_file)
    victim = wait_for_runs_in_flight(trail_file, nodes)
    other = next(n for n in nodes if n is not victim)
    name = node_name(victim.pid)
    victim.signal(signal.SIGSTOP)
    stopped_at = time.time()
    try:
        frozen = trail.in_flight(trail.read_trail(trail_file), victim.pid, stopped_at)

        # The other node declares the paused one lost and takes its jobs over while it is frozen.
        def taken_over() -> bool:
            executions = trail.read_trail(trail_file)
            resumed = {e.job for e in executions if e.start > stopped_at and e.pid == other.pid}
            return {e.job for e in frozen} <= resumed

        wait_until(taken_over, 30 + LOST_AFTER, "the paused node's jobs to run on the other node")
    finally:
        victim.signal(signal.SIGCONT)
    continued_at = time.time()
    # it wakes up, finds it was declared lost, and works again (as a new node)
    wait_until(
        lambda: any(e.pid == victim.pid and e.start > continued_at for e in trail.read_trail(trail_file)),
        30,
        "the paused node to run jobs again",
    )
    for node in nodes:
        assert node.stop() == 0, node.output()

    assert_no_duplicate_no_overlap(trail_file)
    statuses = set(JobRun.objects.values_list("status", flat=True))
    assert statuses <= FINAL, f"every run ends in a final state: {statuses}"
    # the frozen runs stay lost: the paused node wrote nothing over them when it woke up
    frozen_status = {e.job: JobRun.objects.get(job_id=e.job, slot=slots.to_datetime(e.slot_ms)).status for e in frozen}
    assert set(frozen_status.values()) == {JobRun.Status.LOST}, frozen_status
    later = set(
        JobRun.objects.filter(node__contains=f":{victim.pid}:", started_at__gt=_aware(continued_at)).values_list(
            "node", flat=True
        )
    )
    assert later and name not in later, f"the paused node rejoined under a new name: {later}"


def _aware(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
