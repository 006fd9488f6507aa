"""Reading the trail of ``trail_probe`` executions: duplicates, overlaps, runs in flight.

Shared by the failover tests and ``bench/chaos.py``: what a plugin really did, read from its
side effects rather than from the run records (a killed node never records its last runs).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "tests.plugins.trail_probe@v1_0_0.plugin.Plugin"


@dataclass
class Execution:
    job: int
    slot_ms: int
    pid: int
    start: float
    #: times of the work done: start, each step, end
    work: list[float] = field(default_factory=list)
    end: float | None = None
    cancel: float | None = None

    @property
    def last_work(self) -> float:
        return self.work[-1]

    @property
    def finished(self) -> float | None:
        return self.end if self.end is not None else self.cancel


def read_trail(path: Path) -> list[Execution]:
    """Every execution in the file; a (job, slot) started twice by one process counts twice."""
    runs: dict[tuple[int, int, int], Execution] = {}
    if not path.exists():
        return []
    found: list[Execution] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue  # the last line of a process killed while writing
        kind, job, slot_ms, pid, t = parts[0], int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4])
        key = (job, slot_ms, pid)
        if kind == "start":
            runs[key] = Execution(job, slot_ms, pid, t, [t])
            found.append(runs[key])
            continue
        execution = runs.get(key)
        if execution is None:
            continue
        if kind == "step":
            execution.work.append(t)
        elif kind == "end":
            execution.work.append(t)
            execution.end = t
        elif kind == "cancel":
            execution.cancel = t
    return found


def duplicates(executions: list[Execution]) -> list[tuple[int, int]]:
    """(job, slot) pairs executed more than once, by any processes."""
    counts = Counter((e.job, e.slot_ms) for e in executions)
    return [pair for pair, n in counts.items() if n > 1]


def overlaps(executions: list[Execution]) -> list[tuple[Execution, Execution]]:
    """Pairs of executions of one job whose work (start .. last step or end) intersects.

    A run frozen by SIGSTOP and cancelled as soon as it wakes did no work after the pause, so
    only what it did before counts."""
    by_job: dict[int, list[Execution]] = defaultdict(list)
    for e in executions:
        by_job[e.job].append(e)
    found = []
    for runs in by_job.values():
        runs.sort(key=lambda e: e.start)
        for i, a in enumerate(runs):
            for b in runs[i + 1 :]:
                if b.start >= a.last_work:
                    break
                found.append((a, b))
    return found


def in_flight(executions: list[Execution], pid: int, at: float) -> list[Execution]:
    """Executions of ``pid`` started and not finished at ``at`` (and working recently)."""
    return [
        e
        for e in executions
        if e.pid == pid and e.start <= at and (e.finished or float("inf")) > at and e.last_work >= at - 0.5
    ]
