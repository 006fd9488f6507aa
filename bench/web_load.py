"""Benchmark: logged-in clients against the production topology on PostgreSQL + Redis.

Topology: two ``manage.py serve --no-scheduler`` web processes (daphne), one ``manage.py
runscheduler`` running the demo data's active jobs, PostgreSQL and Redis. Use a PRIVATE
PostgreSQL with a known ``max_connections`` (the benchmark creates and drops its own database
there) and a private Redis: the point is to show that a burst cannot exhaust the server.

For each concurrency level (default 20, 100 and 200 clients) and each page (the trivial view
``/favicon.ico`` as the reference, then the dashboard, the plugin page and the run history),
the clients request the page in a loop for a bounded time, spread over both web processes, and
the benchmark reports requests/s, p50/p95/p99, errors (any status other than the page's, or a
failed request), and the most PostgreSQL connections each process held meanwhile, sampled from
``pg_stat_activity`` every 100 ms (each process names itself through ``application_name``).
A page's ratio is its requests/s over the trivial view's at the same level in the same run.

    # a private PostgreSQL (max_connections=60) and Redis, as root:
    mkdir -p /tmp/pg && chown postgres /tmp/pg
    runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D /tmp/pg/data -A trust -U postgres
    echo "max_connections = 60" >> /tmp/pg/data/postgresql.conf
    runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D /tmp/pg/data -l /tmp/pg/log \\
        -o "-p 5502 -k /tmp/pg -c listen_addresses=127.0.0.1" start
    redis-server --port 6402 --save "" --daemonize yes
    .venv/bin/python bench/web_load.py --pg postgres://postgres@127.0.0.1:5502 --redis redis://127.0.0.1:6402/0

Load generation is aiohttp in this one process (cheap per request); every loop is bounded by
``--seconds`` and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE = "jobscheduler_bench_load"
WEB = ("web-1", "web-2")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def setup(args: argparse.Namespace) -> dict[str, str]:
    import psycopg

    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DB_CONNECTION": f"{args.pg}/{DATABASE}",
        "REDIS_URL": args.redis,
        "CHANNEL_LAYER_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "SCHEDULER_EMBEDDED": "false",
        "DB_POOL_MAX_SIZE": str(args.pool),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("loaddata", "demo", verbosity=0)
    return env


def session_cookie(username: str) -> str:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    connection.close()
    return client.cookies["sessionid"].value


def start(args: list[str], env: dict[str, str], name: str, log: Path) -> subprocess.Popen:
    full_env = {**os.environ, **env, "DB_CONNECTION": f"{env['DB_CONNECTION']}?application_name={name}"}
    return subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def wait_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the web process did not listen on {port}")


class ConnectionSampler:
    """The most connections each named process held, sampled every 100 ms in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peak: Counter[str] = Counter()
        self.total_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.1):
                rows = conn.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1"
                ).fetchall()
                for name, count in rows:
                    self.peak[name] = max(self.peak[name], count)
                self.total_peak = max(self.total_peak, sum(count for _, count in rows))

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def load(
    ports: list[int], path: str, expect: int, cookies: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` loops, each GETting ``path`` from one web process until the time is up."""
    import aiohttp

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=60)
    sessions = [
        aiohttp.ClientSession(
            f"http://127.0.0.1:{port}",
            cookies={"sessionid": cookie},
            connector=aiohttp.TCPConnector(limit=0),
            timeout=timeout,
        )
        for port in ports
        for cookie in cookies
    ]
    started = time.monotonic()
    deadline = started + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                async with session.get(path, allow_redirects=False) as response:
                    await response.read()
                    if response.status != expect:
                        errors[f"HTTP {response.status}"] += 1
                        continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.monotonic() - sent)

    try:
        await asyncio.gather(*(client(sessions[i % len(sessions)]) for i in range(clients)))
    finally:
        for session in sessions:
            await session.close()
    elapsed = time.monotonic() - started
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p95": percentile(latencies, 95) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": dict(errors),
    }


def user_pages() -> list[tuple[str, str, int]]:
    """The pages measured, as (name, path, expected status): the trivial view and alice's three
    pages in the demo data. Also bench/web_ratio.py's."""
    from scheduler_app.models import Job

    job = Job.objects.filter(user__username="alice", plugin_id=1).order_by("pk").first()
    assert job is not None, "the demo data has alice's jobs"
    return [
        ("trivial view (/favicon.ico)", "/favicon.ico", 302),
        ("dashboard", "/", 200),
        ("plugin page", f"/plugins/{job.plugin_id}/", 200),
        ("run history", f"/jobs/{job.pk}/runs/", 200),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", required=True, help="PostgreSQL server URL without database (a private instance)")
    parser.add_argument("--redis", required=True, help="Redis URL (a private instance)")
    parser.add_argument("--levels", default="20,100,200", help="concurrent clients per level (comma-separated)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each page at each level")
    parser.add_argument("--pool", type=int, default=4, help="DB_POOL_MAX_SIZE of each web process")
    parser.add_argument("--ports", default="8211,8212", help="ports of the two web processes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    env = setup(args)
    pages = user_pages()
    # two sessions of alice per web process (every page is hers)
    cookies = [session_cookie("alice"), session_cookie("alice")]
    from django.db import connection

    connection.close()  # only the processes under test hold connections while measuring
    ports = [int(p) for p in args.ports.split(",")]
    logs = Path(tempfile.mkdtemp(prefix="bench-load-"))
    procs = [
        start(["serve", "--no-scheduler", "--port", str(port)], env, name, logs / f"{name}.log")
        for name, port in zip(WEB, ports, strict=True)
    ]
    procs.append(start(["runscheduler"], env, "scheduler", logs / "scheduler.log"))
    results: list[dict[str, Any]] = []
    import psycopg

    with psycopg.connect(f"{args.pg}/{DATABASE}") as conn:
        max_connections = conn.execute("SHOW max_connections").fetchone()[0]
    print(
        f"PostgreSQL max_connections={max_connections}; DB_POOL_MAX_SIZE={args.pool} per web process; logs in {logs}",
        flush=True,
    )
    try:
        for port in ports:
            wait_port(port)
        time.sleep(3)  # the scheduler starts and its jobs begin to run
        for level in [int(x) for x in args.levels.split(",")]:
            for label, path, expect in pages:
                with ConnectionSampler(f"{args.pg}/{DATABASE}") as sampler:
                    result = asyncio.run(load(ports, path, expect, cookies, level, args.seconds))
                result.update(
                    clients=level,
                    page=label,
                    connections={name: sampler.peak.get(name, 0) for name in (*WEB, "scheduler")},
                    connections_total=sampler.total_peak,
                )
                results.append(result)
                print(json.dumps(result), flush=True)
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a process exited during the benchmark (code {proc.returncode}); see {logs}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    print()
    print("| clients | page | req/s | x trivial | p50 | p95 | p99 | errors | connections web-1 / web-2 / scheduler |")
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results:
        trivial = next(r for r in results if r["clients"] == result["clients"] and r["page"].startswith("trivial"))
        c = result["connections"]
        print(
            f"| {result['clients']} | {result['page']} | {result['rps']:.0f} | {result['rps'] / trivial['rps']:.2f} "
            f"| {result['p50']:.0f} ms | {result['p95']:.0f} ms | {result['p99']:.0f} ms "
            f"| {sum(result['errors'].values())} | {c['web-1']} / {c['web-2']} / {c['scheduler']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"max_connections": max_connections, "results": results}, indent=1))


if __name__ == "__main__":
    main()
