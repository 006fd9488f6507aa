"""One run's own cost on the event loop: the launcher and the supervisor driven alone, in-process.

Starts N runs of the bench probe (one log line each) the way the engine starts a won claim
(``engine.launch.Launcher.supervised``, then ``engine.supervisor``) with a writer that stores
nothing, and prints the CPU per run. What it leaves out (claims, the
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
from scheduler_app.engine.launch import Launcher  # noqa: E402
from scheduler_app.engine.registry import make_registry  # noqa: E402
from scheduler_app.engine.supervisor import Supervisor  # noqa: E402
from scheduler_app.jobtable import JobSpec  # noqa: E402
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
    launcher = Launcher(make_registry(lambda package, version: plugin), writer)  # type: ignore[arg-type]
    supervisor = Supervisor(writer, on_end=lambda run: launcher.ended(run.run.id))  # type: ignore[arg-type]
    spec = JobSpec(id=1, user_id=1, username="bench", plugin_id=1, package=PACKAGE, interval=1, timeout=30,
                   config={}, code_version=1, updated_ms=0)  # fmt: skip
    # Loaded once, as the registry's preload does; the probe's config has no fields, so its runs
    # share one validated config (Launcher.prepare, plugin_host.immutable_config).
    await launcher.registry.get(PACKAGE, 1)
    t0 = time.process_time()
    for i in range(runs):
        snapshot = RunSnapshot(i, 1, 1, 1, "schedule", datetime.now(UTC), "bench", "running")
        supervisor.start(launcher.supervised(snapshot, spec))
        if i % 50 == 0:
            await asyncio.sleep(0)  # let runs finish as the engine's loop would
    while supervisor.active:
        await asyncio.sleep(0.001)
    elapsed = time.process_time() - t0
    launcher.registry.close()
    return elapsed / runs * 1e6


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
