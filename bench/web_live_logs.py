"""Benchmark: live log latency and throughput, runscheduler -> Redis -> web -> websocket clients.

Topology (production): one ``manage.py runscheduler`` process runs bench_logger jobs
(bench/plugins) that log at a fixed rate; one ``manage.py serve --no-scheduler`` process
relays through the Redis channel layer to N websocket clients (this process), all watching the
same user's stream, as N browser tabs would.

Latency of a line = the time a client receives it - the time the plugin's ``logger.info`` call
created it (``ts`` of the line, same machine clock). Throughput = lines received per client per
second while the scheduler logs at the target rate. A client missing a line is reported.

    .venv/bin/python bench/web_live_logs.py                      # SQLite, 20 clients, 5,000 lines/s for 10 s
    .venv/bin/python bench/web_live_logs.py --postgres           # PostgreSQL (database jobscheduler_bench_web)
    .venv/bin/python bench/web_live_logs.py --clients 20 --rate 5000 --seconds 10 --jobs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to see who is busy."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def setup_env(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    if args.postgres:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS jobscheduler_bench_web WITH (FORCE)")
            conn.execute("CREATE DATABASE jobscheduler_bench_web")
        db = "postgres://postgres@127.0.0.1:5432/jobscheduler_bench_web"
    else:
        db = f"sqlite:///{workdir / 'bench.sqlite3'}"
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DB_CONNECTION": db,
        "REDIS_URL": args.redis,
        "CHANNEL_LAYER_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "MODULE_PATH": str(ROOT / "bench" / "plugins"),
        "SCHEDULER_EMBEDDED": "false",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    return env


def prepare_data(args: argparse.Namespace) -> tuple[str, int, int, list[int]]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from scheduler_app import services
    from scheduler_app.models import Plugin

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-pass")
    plugin = Plugin.objects.create(name="Bench", package="bench_logger@v0_1_0.plugin.Plugin", interval=86400)
    jobs = [
        services.create_job(user, plugin, {"rate": 1, "seconds": 1}, description=f"bench {i}").pk
        for i in range(args.jobs)
    ]
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value, plugin.pk, user.pk, jobs


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    full_env = {**os.environ, **env}
    return subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the web process did not listen on {port}")


def queue_runs(job_ids: list[int], rate: int, seconds: float) -> None:
    from scheduler_app import services
    from scheduler_app.models import Job

    for job in Job.objects.filter(pk__in=job_ids):
        services.update_job(job, config={"rate": rate, "seconds": seconds})
        services.run_now(job)


class Client:
    def __init__(self) -> None:
        self.received: list[tuple[float, str]] = []  # (receive time, line ts)
        self.ids: set[int] = set()
        self.duplicates = 0


async def client_loop(url: str, origin: str, cookie: str, client: Client, ready: asyncio.Event, stop: asyncio.Event):
    import websockets

    async with websockets.connect(
        url, origin=origin, additional_headers={"Cookie": f"sessionid={cookie}"}, max_size=None, max_queue=None
    ) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        await ws.recv()  # the (empty) replay
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.time()
            message = json.loads(raw)
            if message["type"] != "lines":
                continue
            for line in message["lines"]:
                if line["id"] in client.ids:
                    client.duplicates += 1
                    continue
                client.ids.add(line["id"])
                client.received.append((now, line["ts"]))


async def phase(
    name: str, args: argparse.Namespace, conn: tuple, job_ids: list[int], rate: int, seconds: float
) -> dict:
    url, origin, cookie, pids = conn
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wall_before = time.monotonic()
    clients = [Client() for _ in range(args.clients)]
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in clients]
    tasks = [
        asyncio.create_task(client_loop(url, origin, cookie, c, r, stop)) for c, r in zip(clients, readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    per_job = rate / len(job_ids)
    expected = int(per_job * seconds) * len(job_ids)
    await asyncio.to_thread(queue_runs, job_ids, int(per_job), seconds)
    deadline = time.monotonic() + seconds + args.drain
    while time.monotonic() < deadline and min(len(c.ids) for c in clients) < expected:
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.monotonic() - wall_before
    cpu = {f"cpu_{name}_pct": round(100 * (cpu_seconds(pid) - cpu_before[name]) / wall) for name, pid in pids.items()}

    latencies = []
    firsts, lasts = [], []
    for c in clients:
        stamps = [(recv, datetime.fromisoformat(ts).timestamp()) for recv, ts in c.received]
        latencies += [(recv - sent) * 1000 for recv, sent in stamps]
        if stamps:
            firsts.append(min(s for _, s in stamps))
            lasts.append(max(r for r, _ in stamps))
    received = [len(c.ids) for c in clients]
    span = (max(lasts) - min(firsts)) if firsts else float("nan")
    result = {
        "phase": name,
        "clients": args.clients,
        "target_rate": rate,
        "seconds": seconds,
        "expected_per_client": expected,
        "received_min": min(received),
        "received_max": max(received),
        "duplicates": sum(c.duplicates for c in clients),
        "delivered_lines_per_s_per_client": round(statistics.mean(received) / span, 1) if span else None,
        "delivered_lines_per_s_total": round(sum(received) / span, 1) if span else None,
        "latency_ms_p50": round(percentile(latencies, 50), 1),
        "latency_ms_p95": round(percentile(latencies, 95), 1),
        "latency_ms_p99": round(percentile(latencies, 99), 1),
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        **cpu,
    }
    print(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rate", type=int, default=5000, help="lines/s logged in the throughput phase")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=5, help="concurrent runs sharing the rate (one user, one plugin)")
    parser.add_argument("--latency-rate", type=int, default=100, help="lines/s in the latency phase")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait for stragglers")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    env = setup_env(args, workdir)
    cookie, plugin_id, user_id, job_ids = prepare_data(args)
    from tests.processes import free_port

    port = free_port()
    web = start(["serve", "--port", str(port), "--no-scheduler"], env, workdir / "web.log")
    scheduler = start(["runscheduler"], env, workdir / "scheduler.log")
    try:
        wait_port(port)
        time.sleep(1.5)  # let the scheduler node come up
        pids = {"web": web.pid, "scheduler": scheduler.pid, "clients": os.getpid()}
        url = f"ws://127.0.0.1:{port}/ws/logs/{plugin_id}/{user_id}/"
        conn = (url, f"http://127.0.0.1:{port}", cookie, pids)
        print(f"# {args.clients} clients, database {env['DB_CONNECTION'].split(':')[0]}, logs in {workdir}")
        asyncio.run(phase("latency", args, conn, job_ids[:1], args.latency_rate, 5.0))
        asyncio.run(phase("throughput", args, conn, job_ids, args.rate, args.seconds))
    finally:
        for proc in (scheduler, web):
            proc.terminate()
        for proc in (scheduler, web):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
