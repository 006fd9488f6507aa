"""Benchmark: the dashboard, plugin page and run history for a user with a long history.

Builds a database with one user owning ``--jobs`` jobs over 5 plugins and ``--runs`` runs
spread over those jobs (plus other users' data), then times each page through Django's full
request stack (middleware, session, ORM, templates; no network) and counts its SQL queries.
The query count is also measured for a user with one job and a handful of runs: it must be
the same (a page's queries do not grow with the data).

Long log: one run has ``--log-lines`` (20,000) log lines. Its run page is timed in-process
like the others, then over HTTP against a real server process (``manage.py serve
--no-scheduler``, one daphne): the dashboard's p95 alone and while 3 clients keep loading the
long run page (a page that is slow for everyone shows here: the process runs sync views on
one thread), the long run page's own p95, and the plain-text download of the whole log.

    .venv/bin/python bench/web_pages.py                 # SQLite file, 100 jobs, 100,000 runs
    .venv/bin/python bench/web_pages.py --postgres      # PostgreSQL (database jobscheduler_bench_pages)
    .venv/bin/python bench/web_pages.py --no-server     # in-process pages only
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLUGINS = [
    ("Sample", "plugins.sample_plugin@v0_1_0.plugin.Plugin", 10),
    ("Sample v2", "plugins.sample_plugin@v0_2_0.plugin.Plugin", 15),
    ("Lab", "plugins.lab_plugin@v0_1_0.plugin.Plugin", 20),
    ("Prod", "plugins.prod_plugin@v0_1_0.plugin.Plugin", 60),
    ("Stable", "plugins.stable_plugin@v0_1_0.plugin.Plugin", 30),
]


def setup(args: argparse.Namespace) -> str:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["LOG_LEVEL"] = "WARNING"
    if args.postgres:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {args.pg_database} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {args.pg_database}")
        os.environ["DB_CONNECTION"] = f"postgres://postgres@127.0.0.1:5432/{args.pg_database}"
    else:
        path = Path(tempfile.mkdtemp(prefix="bench-pages-")) / "bench.sqlite3"
        os.environ["DB_CONNECTION"] = f"sqlite:///{path}"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return os.environ["DB_CONNECTION"].split(":")[0]


def build(args: argparse.Namespace) -> dict:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from scheduler_app import services
    from scheduler_app.models import Job, JobRun, LogLine, Plugin

    users = get_user_model().objects
    heavy = users.create_user("heavy", password="x")
    light = users.create_user("light", password="x")
    others = [users.create_user(f"other{i}", password="x") for i in range(3)]
    plugins = [Plugin.objects.create(name=n, package=p, interval=i) for n, p, i in PLUGINS]

    jobs: list[Job] = []
    for i in range(args.jobs):
        plugin = plugins[i % len(plugins)]
        jobs.append(services.create_job(heavy, plugin, {}, description=f"config {i}", activate=i < len(plugins)))
    light_job = services.create_job(light, plugins[0], {}, description="only one", activate=True)
    other_jobs = [services.create_job(u, p, {}) for u in others for p in plugins]

    now = timezone.now()
    statuses = [JobRun.Status.SUCCEEDED] * 8 + [JobRun.Status.FAILED, JobRun.Status.TIMED_OUT]
    started = time.monotonic()
    batch: list[JobRun] = []

    def flush() -> None:
        JobRun.objects.bulk_create(batch, batch_size=5000)
        batch.clear()

    per_job = args.runs // len(jobs)
    for job in jobs + other_jobs:
        count = per_job if job.user_id == heavy.pk else per_job // 10
        for k in range(count):
            slot = now - timedelta(seconds=job.plugin.interval * (k + 1))
            batch.append(
                JobRun(
                    job=job,
                    slot=slot,
                    status=statuses[k % len(statuses)],
                    node="bench-node",
                    started_at=slot,
                    finished_at=slot + timedelta(milliseconds=800),
                    log_count=4,
                )
            )
            if len(batch) >= 20_000:
                flush()
    for k in range(5):
        batch.append(JobRun(job=light_job, slot=now - timedelta(seconds=10 * (k + 1)), status="succeeded"))
    flush()
    # Some log lines on the newest runs (what the live view replays).
    newest = list(JobRun.objects.filter(job__user=heavy).order_by("-slot")[:200])
    LogLine.objects.bulk_create(
        [LogLine(run=r, seq=s, created_at=r.slot, level=20, message=f"line {s}") for r in newest for s in range(1, 5)],
        batch_size=5000,
    )
    # One run with a long log (the ANSI colours and length of a chatty plugin's lines).
    long_run = JobRun.objects.create(
        job=jobs[0], slot=now + timedelta(seconds=1), status=JobRun.Status.SUCCEEDED, log_count=args.log_lines
    )
    LogLine.objects.bulk_create(
        (
            LogLine(
                run=long_run,
                seq=s,
                created_at=now,
                level=20 if s % 10 else 30,
                message=f"\x1b[32mstep {s}\x1b[0m processed batch {s} of {args.log_lines}: " + "x" * 100,
            )
            for s in range(1, args.log_lines + 1)
        ),
        batch_size=5000,
    )
    # Fresh planner statistics, as autovacuum (PostgreSQL) or a periodic ANALYZE would leave them
    # after a bulk load; without them PostgreSQL guesses 40 rows for a job's 100,000 runs.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    total_runs = JobRun.objects.count()
    print(
        f"# built {len(jobs)} jobs, {JobRun.objects.filter(job__user=heavy).count()} runs for the user, "
        f"{total_runs} runs in all, in {time.monotonic() - started:.1f} s"
    )
    return {
        "heavy": heavy,
        "light": light,
        "plugins": plugins,
        "jobs": jobs,
        "light_job": light_job,
        "long_run": long_run,
    }


def measure(client, url: str, n: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):  # warm up (plugin import, template compile)
        assert client.get(url).status_code == 200, url
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    queries = len(captured)  # now: later requests reset the connection's query log
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    times.sort()
    return {
        "queries": queries,
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "max_ms": round(times[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("-n", type=int, default=100, help="requests per page")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument(
        "--pg-database", default="jobscheduler_bench_pages", help="scratch database (dropped and created)"
    )
    parser.add_argument("--log-lines", type=int, default=20_000, help="lines of the long-log run")
    parser.add_argument("--no-server", action="store_true", help="skip the scenario against a real server")
    args = parser.parse_args()

    database = setup(args)
    data = build(args)
    from django.test import Client

    heavy, light = Client(), Client()
    heavy.force_login(data["heavy"])
    light.force_login(data["light"])
    plugin = data["plugins"][0]
    job = data["jobs"][0]
    from scheduler_app.models import JobRun

    history = JobRun.objects.filter(job=job).order_by("-slot", "-id")
    cursor_run = history[min(500, history.count() - 1)]
    from scheduler_app.selectors import encode_cursor

    pages = {
        "dashboard": "/",
        "plugin page (20 configs)": f"/plugins/{plugin.pk}/",
        "run history, first page": f"/jobs/{job.pk}/runs/",
        "run history, page 11": f"/jobs/{job.pk}/runs/?after={encode_cursor(cursor_run)}",
        "run page": f"/runs/{cursor_run.pk}/",
        f"run page, {args.log_lines}-line log": f"/runs/{data['long_run'].pk}/",
    }
    results = []
    for name, url in pages.items():
        row = {"page": name, "database": database, **measure(heavy, url, args.n)}
        results.append(row)
        print(json.dumps(row))
    for name, url in {"dashboard": "/", "plugin page (1 config)": f"/plugins/{plugin.pk}/"}.items():
        row = {"page": f"{name}, light user", "database": database, **measure(light, url, 20)}
        print(json.dumps(row))
    if not args.no_server:
        long_log_over_http(heavy.cookies["sessionid"].value, data["long_run"].pk, cursor_run.pk, database, args)


# --- the long log against a real server ---------------------------------------------------------


def _get(port: int, path: str, cookie: str) -> tuple[int, int, float]:
    """(status, body bytes, milliseconds) of one GET on a fresh connection, as a browser tab would."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path, headers={"Cookie": f"sessionid={cookie}", "Host": "127.0.0.1"})
    response = conn.getresponse()
    size = 0
    while chunk := response.read(65536):
        size += len(chunk)
    conn.close()
    return response.status, size, (time.perf_counter() - start) * 1000


def _timed(port: int, path: str, cookie: str, n: int) -> dict:
    for _ in range(3):
        _get(port, path, cookie)
    times, size = [], 0
    for _ in range(n):
        status, size, ms = _get(port, path, cookie)
        assert status == 200, (path, status)
        times.append(ms)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "bytes": size,
    }


def long_log_over_http(cookie: str, run_id: int, short_run_id: int, database: str, args: argparse.Namespace) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(tempfile.mkdtemp(prefix="bench-serve-")) / "serve.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--no-scheduler"],
        cwd=ROOT,
        env={**os.environ, "SCHEDULER_EMBEDDED": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        long_page = f"/runs/{run_id}/"
        rows = {
            "dashboard alone": _timed(port, "/", cookie, 60),
            f"run page, {args.log_lines}-line log": _timed(port, long_page, cookie, 60),
        }
        # Three clients keep loading a run page while the dashboard is timed: the long log's,
        # then (the reference, same run) a run page with a 4-line log.
        for label, path in (("the long run page", long_page), ("a short run page", f"/runs/{short_run_id}/")):
            stop = threading.Event()
            loads = [0]

            def hammer(path: str = path, stop: threading.Event = stop, loads: list[int] = loads) -> None:
                while not stop.is_set():
                    _get(port, path, cookie)
                    loads[0] += 1

            threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
            for thread in threads:
                thread.start()
            try:
                row = _timed(port, "/", cookie, 60)
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            rows[f"dashboard while 3 clients load {label}"] = {**row, "pages_served_meanwhile": loads[0]}
        status, size, ms = _get(port, f"/runs/{run_id}/log.txt", cookie)
        assert status == 200
        rows[f"download, {args.log_lines} lines"] = {"ms": round(ms, 1), "bytes": size}
        for name, row in rows.items():
            print(json.dumps({"http": name, "database": database, **row}))
        long_load = rows["dashboard while 3 clients load the long run page"]["p95_ms"]
        short_load = rows["dashboard while 3 clients load a short run page"]["p95_ms"]
        print(
            json.dumps(
                {
                    "http": "dashboard p95: beside the long run page / beside a short one",
                    "ratio": round(long_load / short_load, 2),
                }
            )
        )
    finally:
        server.terminate()
        server.wait(20)
        log.close()


if __name__ == "__main__":
    main()
