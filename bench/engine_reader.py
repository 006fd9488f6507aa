"""The reader thread's full re-read of the job table beside a busy thread (the event loop).

Prints, per re-read, the jobs read, its wall time and the share of its usual rate the busy
thread kept meanwhile. Copy a database with jobs first (``engine_bench.py --only dispatch``
leaves one in BENCH_DIR):

    cp /tmp/jobscheduler-bench/bench.db /tmp/rb.db
    .venv/bin/python bench/engine_reader.py /tmp/rb.db
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import engine_bench  # noqa: E402

engine_bench.setup_django(f"sqlite:///{sys.argv[1] if len(sys.argv) > 1 else '/tmp/rb.db'}")

from scheduler_app import jobtable  # noqa: E402
from scheduler_app.engine.engine import SWITCH_INTERVAL_SECONDS  # noqa: E402


def main() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)  # as in runscheduler
    done = [0]
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            for i in range(1000):
                _ = {"a": i}
            done[0] += 1

    threading.Thread(target=busy, daemon=True).start()
    time.sleep(0.5)
    results = []
    for _ in range(3):
        before, t0 = done[0], time.perf_counter()
        time.sleep(1.0)
        usual = (done[0] - before) / (time.perf_counter() - t0)
        before, t0 = done[0], time.perf_counter()
        rows = jobtable.read_rows(jobtable.SCHEDULED, paced=True)
        wall = time.perf_counter() - t0
        results.append((len(rows), round(wall, 2), round((done[0] - before) / wall / usual, 2)))
    stop.set()
    for jobs, wall, kept in results:
        print(f"{jobs} jobs re-read in {wall} s; the busy thread kept {kept:.0%} of its rate meanwhile")


if __name__ == "__main__":
    main()
