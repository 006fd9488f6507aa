"""The writer thread's part of a run, in-process: claims and record batches on a real database.

Claims ``--runs`` slots of as many jobs with ``claims.claim_slots`` in rounds of ``--batch``
(the claimer's rounds at saturation), then writes each round's finished runs and one log line
per run with ``writer.write_batch``, and prints the CPU per run of each part (the thread's
Python work plus the database's own, which runs in this process on SQLite). What it leaves
out (the event loop, the schedule) is what ``engine_supervisor.py`` and ``engine_bench.py``
measure.

    .venv/bin/python bench/engine_writer.py --runs 20000 --batch 250 [--profile] [--busy-thread] [--vary] \
        [--switch-interval S]

``--busy-thread`` runs pure Python in a second thread meanwhile (the event loop at saturation)
and prints the wall time of a claim round and of a record batch: the DB-API gives the GIL away
around every step of a statement, and each time the writer must wait to get it back from the
busy thread (up to the 5 ms switch interval), so a statement's steps cost far more than its CPU.
    DB_CONNECTION=postgres://... .venv/bin/python bench/engine_writer.py
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
BENCH_DIR = Path(os.environ.get("BENCH_DIR", "/tmp/jobscheduler-bench"))
BENCH_DIR.mkdir(parents=True, exist_ok=True)

import engine_bench  # noqa: E402

engine_bench.setup_django(os.environ.get("DB_CONNECTION") or f"sqlite:///{BENCH_DIR / 'writer.db'}")

from scheduler_app import claims, slots  # noqa: E402
from scheduler_app.engine.engine import SWITCH_INTERVAL_SECONDS  # noqa: E402
from scheduler_app.models import Job  # noqa: E402
from scheduler_app.streams import RunSnapshot  # noqa: E402
from scheduler_app.writer import Batch, PendingLine, RunFinish, write_batch  # noqa: E402


def busy(stop: threading.Event) -> None:
    """Pure Python until ``stop`` (small functions and objects, as the event loop's per-run work)."""
    while not stop.is_set():
        for i in range(1000):
            _ = {"run": i, "job": [i, i + 1]}


def drive(runs: int, batch: int, vary: bool = False) -> tuple[float, float, float, float]:
    rng = random.Random(1)
    job_ids = list(Job.objects.order_by("id").values_list("id", flat=True))
    base = int(time.time() * 1000) // 1000 * 1000
    claim_cpu = write_cpu = claim_wall = write_wall = 0.0
    done = 0
    round_no = 0
    while done < runs:
        round_no += 1
        slot_ms = base + round_no * 1000
        size = rng.randint(batch * 9 // 10, batch * 11 // 10) if vary else batch
        wanted = [claims.SlotClaim(j, slot_ms, engine_bench.PACKAGE) for j in job_ids[:size]]
        now = datetime.now(UTC)
        w0, t0 = time.perf_counter(), time.thread_time()
        won = claims.claim_slots("bench-node", wanted, now, False)
        w1, t1 = time.perf_counter(), time.thread_time()
        finishes, lines = [], []
        end = now + timedelta(milliseconds=1)
        for (job_id, ms), run_id in won.items():
            snap = RunSnapshot(run_id, job_id, 1, 1, "schedule", slots.to_datetime(ms), "bench-node", "succeeded",
                               now, end)  # fmt: skip
            finishes.append(RunFinish(snap, "", 1))
            lines.append(PendingLine(run_id, 1, now, 20, "tick", job_id, "logs.1.1"))
        w2, t2 = time.perf_counter(), time.thread_time()
        write_batch(Batch(lines, finishes))
        w3, t3 = time.perf_counter(), time.thread_time()
        claim_cpu += t1 - t0
        write_cpu += t3 - t2
        claim_wall += w1 - w0
        write_wall += w3 - w2
        done += len(won)
    per_run = 1e6 / done
    return claim_cpu * per_run, write_cpu * per_run, claim_wall * 1000 / round_no, write_wall * 1000 / round_no


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--vary", action="store_true",
                        help="rounds of 90-110 %% of --batch, as the engine's (a new text for each size)")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument("--busy-thread", action="store_true", help="pure Python in a second thread meanwhile")
    parser.add_argument("--switch-interval", type=float, default=SWITCH_INTERVAL_SECONDS,
                        help=f"sys.setswitchinterval (default: the engine's, {SWITCH_INTERVAL_SECONDS} s)")  # fmt: skip
    args = parser.parse_args()
    from django.db import connection

    engine_bench.prepare("", args.batch * 11 // 10, 60)
    connection.close()
    sys.setswitchinterval(args.switch_interval)
    stop = threading.Event()
    if args.busy_thread:
        threading.Thread(target=busy, args=(stop,), daemon=True).start()
    try:
        claim_us, write_us, claim_ms, write_ms = drive(args.runs, args.batch, args.vary)
    finally:
        stop.set()
    print(f"claim {claim_us:.1f} us, record {write_us:.1f} us of CPU per run (the writer thread's part); "
          f"wall per round of {args.batch}: claim {claim_ms:.2f} ms, records {write_ms:.2f} ms"
          f"{' (a busy thread meanwhile)' if args.busy_thread else ''}{', sizes varied' if args.vary else ''}, "
          f"switch interval {args.switch_interval:g} s")  # fmt: skip
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(drive, args.runs, args.batch, args.vary)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
