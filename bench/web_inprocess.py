"""Quick in-process cost of each user page: CPU per request through Django's full stack, no server.

The fast loop for page cost (``bench/web_ratio.py`` is the real measure, through daphne): the
trivial view (``/favicon.ico``) and the three user pages of ``bench/web_ratio.py`` requested by
Django's test client as a logged-in user (middleware, session, ORM, templates), on PostgreSQL
with the demo data, in a process that pools its connections as a web process does. Reports the
CPU time (``time.process_time``) per request and the queries per request; ``--profile PAGE``
prints a cProfile of that page's requests instead.

    .venv/bin/python bench/web_inprocess.py --pg postgres://postgres@127.0.0.1:5512 --redis redis://127.0.0.1:6412/0
    .venv/bin/python bench/web_inprocess.py ... --no-setup --profile "plugin page"
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("JOBSCHEDULER_PROCESS", "web")  # the pool, as in a served process

import web_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", required=True, help="PostgreSQL server URL without database (a private instance)")
    parser.add_argument("--redis", required=True, help="Redis URL (a private instance)")
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--requests", type=int, default=300, help="requests per page")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-setup", action="store_true", help="reuse the database of an earlier run")
    parser.add_argument("--profile", help="cProfile this page (its label) instead of timing all")
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args()

    if args.no_setup:
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "DB_CONNECTION": f"{args.pg}/{web_load.DATABASE}",
                "REDIS_URL": args.redis,
                "SCHEDULER_EMBEDDED": "false",
                "DB_POOL_MAX_SIZE": str(args.pool),
                "LOG_LEVEL": "WARNING",
            }
        )
        import django

        django.setup()
    else:
        web_load.setup(args)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from scheduler_app.models import Job

    job = Job.objects.filter(user__username="alice", plugin_id=1).order_by("pk").first()
    assert job is not None, "the demo data has alice's jobs"
    pages = {
        "trivial view": ("/favicon.ico", 302),
        "dashboard": ("/", 200),
        "plugin page": (f"/plugins/{job.plugin_id}/", 200),
        "run history": (f"/jobs/{job.pk}/runs/", 200),
    }
    client = Client()
    client.force_login(get_user_model().objects.get(username="alice"))
    connection.close()

    def hit(path: str, expect: int) -> None:
        response = client.get(path)
        assert response.status_code == expect, (path, response.status_code)

    for path, expect in pages.values():  # warm-up: templates, per-process caches, the pool
        for _ in range(5):
            hit(path, expect)
    if args.profile:
        path, expect = pages[args.profile]
        profiler = cProfile.Profile(time.process_time)  # CPU, not waits for the database
        profiler.enable()
        for _ in range(args.requests):
            hit(path, expect)
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats(args.sort).print_stats(args.limit)
        return
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for label, (path, expect) in pages.items():
            start = time.process_time()
            for _ in range(args.requests):
                hit(path, expect)
            ms = (time.process_time() - start) / args.requests * 1000
            best[label] = min(best.get(label, ms), ms)
    for label, (path, expect) in pages.items():
        with CaptureQueriesContext(connection) as queries:
            hit(path, expect)
        print(f"{label:14} {best[label]:6.2f} ms CPU/request (best of {args.rounds}), {len(queries)} queries")


if __name__ == "__main__":
    main()
