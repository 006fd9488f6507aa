"""One run's own cost on the event loop: the supervisor driven alone, in-process.

Starts N runs of the bench probe (one log line each) through ``engine.supervisor`` with a
writer that stores nothing, and prints the CPU per run. What it leaves out (claims, the
schedule, the database) is what ``engine_bench.py`` measures in a real process.

    .venv/bin/python bench/engine_supervisor.py --runs 20000 [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "plugins")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from scheduler_app import plugin_host  # noqa: E402
from scheduler_app.contract import RunContext  # noqa: E402
from scheduler_app.engine.supervisor import SupervisedRun, Supervisor  # noqa: E402
from scheduler_app.log_pipeline import run_logger  # noqa: E402
from scheduler_app.streams import RunSnapshot  # noqa: E402

PACKAGE = "bench_probe@v1_0_0.plugin.Plugin"


class NullWriter:
    def finish_run(self, finish: object) -> None:
        pass

    def add_line(self, line: object) -> None:
        pass


async def drive(runs: int) -> float:
    plugin = plugin_host.get_plugin(PACKAGE)
    writer = NullWriter()
    supervisor = Supervisor(writer)  # type: ignore[arg-type]

    # The probe's config has no fields: the engine validates it once and its runs share it
    # (engine._prepare, plugin_host.immutable_config).
    config = plugin.validate({})

    async def prepare():  # type: ignore[no-untyped-def]
        return plugin, config

    t0 = time.process_time()
    for i in range(runs):
        logger, handler = run_logger(writer, run_id=i, job_id=i, plugin_id=1, user_id=1, package=PACKAGE)  # type: ignore[arg-type]
        snapshot = RunSnapshot(i, i, 1, 1, "schedule", datetime.now(UTC), "bench", "running")
        context = RunContext(logger=logger, run_id=i, job_id=i, cancelled=asyncio.Event())
        supervisor.start(SupervisedRun(snapshot, context, 30, PACKAGE, prepare, lambda h=handler: h.count))
        if i % 50 == 0:
            await asyncio.sleep(0)  # let runs finish as the engine's loop would
    while supervisor.active:
        await asyncio.sleep(0.001)
    return (time.process_time() - t0) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    args = parser.parse_args()
    print(f"{asyncio.run(drive(args.runs)):.1f} us of CPU per run (the loop's part)")
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, drive(args.runs))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
