"""CPU per slot of the pure schedule (scheduler_app.schedules): intervals against cron.

What the scheduler pays per run to find a job's next slot, measured the way the engine asks:
N jobs come due together and each asks for its next slot after the one it just had.

- ``interval``: ``every 5s`` (the same arithmetic as an empty schedule);
- ``cron, shared``: every job has ``*/5 * * * * *`` in Europe/Paris (the memo answers all
  but the first job of each slot);
- ``cron, 60 expressions``: ``S/5 * * * * *`` for S in 0..4 crossed with 12 time zones, so
  the memo is shared by ~1/60 of the jobs;
- ``cron, uncached``: every question is new (the memo is cleared before each), croniter's cost.

Run: ``.venv/bin/python bench/schedules_bench.py [--jobs 10000] [--rounds 5]``. Figures are
per slot, in microseconds of CPU (``time.process_time``); compare them only with each other.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# scheduler_app.schedules is pure: no Django set-up needed.
from scheduler_app import schedules

ZONES = [
    "UTC",
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Europe/Berlin",
    "America/Sao_Paulo",
    "Africa/Cairo",
    "Pacific/Auckland",
]


def timings(kind: str, jobs: int) -> list[schedules.Timing]:
    out = []
    for job_id in range(1, jobs + 1):
        if kind == "interval":
            out.append(schedules.Timing.of(job_id, "every 5s", 5))
        elif kind == "cron, 60 expressions":
            expr = f"{job_id % 5}/5 * * * * *"
            out.append(schedules.Timing.of(job_id, expr, 5, ZONES[(job_id // 5) % len(ZONES)]))
        else:
            out.append(schedules.Timing.of(job_id, "*/5 * * * * *", 5, "Europe/Paris"))
    return out


def measure(kind: str, jobs: int, rounds: int) -> float:
    specs = timings(kind, jobs)
    current = [schedules.next_slot(t, 1_790_000_000_000) for t in specs]
    uncached = kind == "cron, uncached"
    memo = getattr(schedules._local, "memo", None)
    if memo is not None:
        memo.clear()
    started = time.process_time()
    for _ in range(rounds):
        for i, timing in enumerate(specs):
            if uncached:
                schedules._memo().clear()
            current[i] = schedules.next_slot(timing, current[i])
    return (time.process_time() - started) / (jobs * rounds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    kinds = ["interval", "cron, shared", "cron, 60 expressions", "cron, uncached"]
    results = {kind: measure(kind, args.jobs if kind != "cron, uncached" else 2000, args.rounds) for kind in kinds}
    base = results["interval"]
    print(f"{'schedule':24s} {'us per slot':>12s} {'x interval':>11s}")
    for kind, micros in results.items():
        print(f"{kind:24s} {micros:12.1f} {micros / base:11.1f}")


if __name__ == "__main__":
    main()
