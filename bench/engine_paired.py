"""CPU per run of two engine versions side by side: the same load, at the same time.

On a shared machine the CPU a process gets changes from minute to minute; two schedulers
running together meet the same contention, so their ratio means something when their
absolute figures do not. Each tree gets its own SQLite file under $BENCH_DIR with the same
jobs; the CPU of each process is read from /proc over several windows.

    git worktree add /tmp/base c51a70f
    .venv/bin/python bench/engine_paired.py --base /tmp/base --jobs 10000 --interval 5 --seconds 10 --windows 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import engine_bench as bench  # noqa: E402


def prepare(root: Path, folder: Path, jobs: int, interval: int) -> None:
    """The bench's database for ``root``'s code (its own migrations), in a child process."""
    folder.mkdir(parents=True, exist_ok=True)
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import engine_bench as b; from pathlib import Path; "
        f"b.ROOT = Path({str(root)!r}); db = 'sqlite:///{folder}/bench.db'; b.setup_django(db); "
        f"b.prepare(db, {jobs}, {interval})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="a checkout of the version to compare with")
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()
    out = Path(os.environ.get("BENCH_DIR", "/tmp/jobscheduler-bench")) / "paired"
    trees = {"this": HERE.parent, "base": Path(args.base).resolve()}
    procs = {}
    for name, root in trees.items():
        prepare(root, out / name, args.jobs, args.interval)
    for name, root in trees.items():
        bench.ROOT = root
        procs[name] = bench.start_scheduler(f"sqlite:///{out / name}/bench.db", out / name / "scheduler.log")[0]
    time.sleep(args.interval + 2)  # past the start-up catch-up
    per_run: dict[str, list[float]] = {name: [] for name in procs}
    rate = args.jobs / args.interval
    try:
        for _ in range(args.windows):
            before = {name: bench._cpu_seconds(p.pid) for name, p in procs.items()}
            t0 = time.time()
            time.sleep(args.seconds)
            elapsed = time.time() - t0
            for name, p in procs.items():
                per_run[name].append(round((bench._cpu_seconds(p.pid) - before[name]) / elapsed / rate * 1e6, 1))
            print(json.dumps({"us_per_run": per_run, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    finally:
        for p in procs.values():
            bench.stop(p)
    medians = {name: statistics.median(values) for name, values in per_run.items()}
    print("median us per run", json.dumps(medians), "ratio this/base", round(medians["this"] / medians["base"], 2))


if __name__ == "__main__":
    main()
