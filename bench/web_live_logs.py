"""Benchmark: live logs for a crowd, runscheduler -> Redis -> web -> websocket clients.

Topology (production): one ``manage.py runscheduler`` process runs bench_logger jobs
(bench/plugins) that log at a fixed rate; one or two ``manage.py serve --no-scheduler`` web
processes relay through a PRIVATE Redis (started here, so other work on the machine does not
mix into its CPU figure) to websocket clients in this process, as browser tabs would.

Scenarios (``--scenarios``, all by default):
- ``one-100``: 100 viewers of one user's stream, 1,000 lines/s (5 concurrent runs).
- ``one-20``: 20 viewers of one stream, 5,000 lines/s.
- ``many``: 100 users, one viewer each on their own stream, 1,000 lines/s in total.
- ``slow``: ``one-100`` plus one viewer that stops reading; it must be told it fell behind
  (close 4429), the others' latency must not change, and it must catch up from the database
  through ``?after=`` with every line once.
- ``two-web``: ``one-100`` and ``many`` with the viewers split over two web processes.

Each fan-out scenario is followed by the **bare reference**: a minimal ``websockets`` server
(its own process) broadcasting the same number of frames of the same size, of lines of the
same shape, to the same number of clients, for the same time. CPU is reported per delivered
line (CPU seconds / lines received by all clients) for the web process(es), the scheduler,
Redis and the bare server; ``web_vs_bare`` is the ratio the issue bounds (at most 3).

Latency of a line = the time a client receives it - the time the plugin's ``logger.info`` call
created it (the line's ``ts``, same clock).

    .venv/bin/python bench/web_live_logs.py                           # every scenario, SQLite
    .venv/bin/python bench/web_live_logs.py --scenarios one-100,slow --seconds 10
    .venv/bin/python bench/web_live_logs.py --postgres                # database jobscheduler_bench_web
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLOSE_FELL_BEHIND = 4429


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


# ---------------------------------------------------------------- set-up


def setup_env(args: argparse.Namespace, workdir: Path, redis_url: str) -> dict[str, str]:
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
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "MODULE_PATH": str(ROOT / "bench" / "plugins"),
        "SCHEDULER_EMBEDDED": "false",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    return env


@dataclass
class Stream:
    user_id: int
    cookie: str
    jobs: list[int]


def prepare_data(args: argparse.Namespace) -> tuple[int, list[Stream]]:
    """One plugin; user 0 has ``--jobs`` jobs (the crowded stream), users 1..99 one job each."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client as DjangoClient

    from scheduler_app import services
    from scheduler_app.models import Plugin

    call_command("migrate", verbosity=0)
    plugin = Plugin.objects.create(name="Bench", package="bench_logger@v0_1_0.plugin.Plugin", interval=86400)
    streams = []
    for u in range(args.users):
        user = get_user_model().objects.create_user(f"bench{u}", password="bench-pass")
        count = args.jobs if u == 0 else 1
        jobs = [
            services.create_job(user, plugin, {"rate": 1, "seconds": 1}, description=f"bench {u}.{i}").pk
            for i in range(count)
        ]
        client = DjangoClient()
        client.force_login(user)
        streams.append(Stream(user.pk, client.cookies["sessionid"].value, jobs))
    return plugin.pk, streams


def start_manage(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def queue_runs(job_ids: list[int], rate: int, seconds: float) -> None:
    from django.db import connection

    from scheduler_app import services
    from scheduler_app.models import Job

    try:
        for job in Job.objects.filter(pk__in=job_ids):
            services.update_job(job, config={"rate": rate, "seconds": seconds})
            services.run_now(job)
    finally:
        connection.close()


# ---------------------------------------------------------------- clients


@dataclass
class Client:
    url: str
    origin: str
    cookie: str
    expected: int = 0
    slow: bool = False
    received: list[tuple[float, str]] = field(default_factory=list)  # (receive time, line ts)
    ids: set[int] = field(default_factory=set)
    last_id: int = 0
    last_by_run: dict[int, int] = field(default_factory=dict)
    frames: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    behind: bool = False
    close_code: int | None = None
    caught_up_lines: int = 0
    replayed: int = 0

    @property
    def delivered(self) -> int:
        return len(self.ids) - self.replayed


def take(client: Client, lines: list[dict], now: float) -> None:
    for line in lines:
        if line["id"] in client.ids:
            client.duplicates += 1
            if client.duplicates == 1 and os.environ.get("BENCH_SHOW_DUPLICATES"):
                print(f"# duplicate {line} (last id {client.last_id})", file=sys.stderr)
            continue
        if line["id"] < client.last_by_run.get(line["run"], 0):
            client.out_of_order += 1  # a run's lines must arrive in the order they were logged
        client.ids.add(line["id"])
        client.last_id = max(client.last_id, line["id"])
        client.last_by_run[line["run"]] = line["id"]
        client.received.append((now, line["ts"]))


async def open_socket(url: str, origin: str, cookie: str, *, slow: bool = False):
    import websockets

    sock = None
    if slow:
        # A tab on a bad network: a small receive window, and nothing read after the replay.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        host, port = url.split("//")[1].split("/")[0].split(":")
        sock.connect((host, int(port)))
    return await websockets.connect(
        url,
        origin=origin,
        additional_headers={"Cookie": f"sessionid={cookie}"} if cookie else None,
        max_size=None,
        max_queue=(1 if slow else None),
        sock=sock,
        ping_interval=None,
        open_timeout=60,
    )


async def client_loop(client: Client, ready: asyncio.Event, stop: asyncio.Event, slow_for: float = 0.0) -> None:
    from websockets.exceptions import ConnectionClosed

    ws = await open_socket(client.url, client.origin, client.cookie, slow=client.slow)
    try:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        # The replay holds earlier scenarios' lines: remembered (a live copy would be a
        # duplicate) but not counted as delivered.
        client.ids.update(line["id"] for line in json.loads(await ws.recv())["lines"])
        client.replayed = len(client.ids)
        ready.set()
        if client.slow:
            await asyncio.sleep(slow_for)  # stops reading: a backgrounded tab
        idle_since = time.monotonic()
        while not stop.is_set() or (client.slow and time.monotonic() - idle_since < 10):
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            idle_since = time.monotonic()
            now = time.time()
            message = json.loads(raw)
            if message["type"] == "lines":
                client.frames += 1
                take(client, message["lines"], now)
            elif message["type"] == "behind":
                client.behind = True
                break  # what the browser does: close, and resume from the last line shown
    except ConnectionClosed as closed:
        client.close_code = closed.rcvd.code if closed.rcvd else None
    finally:
        await ws.close()
    if client.behind or client.close_code == CLOSE_FELL_BEHIND or (client.slow and client.delivered < client.expected):
        # What the browser does: reconnect (at once after 'behind', else after a back-off: a
        # socket aborted while nobody read it loses what was in flight), resuming after the
        # last line it showed.
        before = len(client.ids)
        resumed = client.url + ("&" if "?" in client.url else "?") + f"after={client.last_id}"
        async with await open_socket(resumed, client.origin, client.cookie) as ws2:
            json.loads(await ws2.recv())
            take(client, json.loads(await ws2.recv())["lines"], time.time())
            while not stop.is_set() or client.delivered < client.expected:
                try:
                    message = json.loads(await asyncio.wait_for(ws2.recv(), 2.0))
                except TimeoutError:
                    if stop.is_set():
                        break
                    continue
                if message["type"] == "lines":
                    take(client, message["lines"], time.time())
        client.caught_up_lines = len(client.ids) - before


def summarise(name: str, clients: list[Client], cpu: dict[str, float], wall: float, extra: dict) -> dict:
    normal = [c for c in clients if not c.slow]
    latencies: list[float] = []
    firsts, lasts = [], []
    for c in normal:
        stamps = [(recv, datetime.fromisoformat(ts).timestamp()) for recv, ts in c.received]
        latencies += [(recv - sent) * 1000 for recv, sent in stamps]
        if stamps:
            firsts.append(min(s for _, s in stamps))
            lasts.append(max(r for r, _ in stamps))
    delivered = sum(c.delivered for c in clients)
    span = (max(lasts) - min(firsts)) if firsts else float("nan")
    frames = sum(c.frames for c in normal)
    result = {
        "scenario": name,
        "clients": len(clients),
        "expected_per_client": sorted({c.expected for c in clients}),
        "complete_clients": sum(c.delivered >= c.expected for c in clients),
        "missing_lines": sum(max(0, c.expected - c.delivered) for c in clients),
        "duplicates": sum(c.duplicates for c in clients),
        "told_behind": sum(c.behind for c in normal),  # viewers that could not keep up (should be 0)
        "out_of_order": sum(c.out_of_order for c in clients),
        "delivered_lines": delivered,
        "delivered_lines_per_s": round(delivered / span) if span == span and span else None,
        "frames_per_client_per_s": round(frames / len(normal) / span, 1) if normal and span else None,
        "lines_per_frame": round(sum(c.delivered for c in normal) / frames, 1) if frames else None,
        "latency_ms_p50": round(percentile(latencies, 50), 1),
        "latency_ms_p95": round(percentile(latencies, 95), 1),
        "latency_ms_p99": round(percentile(latencies, 99), 1),
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "wall_s": round(wall, 1),
        # the machine's 1-minute load average at the end: on a shared 2-core machine above ~3,
        # latency says more about the neighbours than about us (CPU per line still holds)
        "load_average": round(os.getloadavg()[0], 1),
    }
    for who, seconds in cpu.items():
        result[f"cpu_{who}_pct"] = round(100 * seconds / wall, 1)
        result[f"cpu_{who}_us_per_line"] = round(1e6 * seconds / delivered, 2) if delivered else None
    result.update(extra)
    return result


async def run_clients(
    clients: list[Client],
    pids: dict[str, list[int]],
    start_load,
    seconds: float,
    drain: float,
    slow_for: float = 0.0,
) -> tuple[dict[str, float], float, dict]:
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in clients]
    tasks = []
    for c, r in zip(clients, readies, strict=True):
        tasks.append(asyncio.create_task(client_loop(c, r, stop, slow_for)))
        await asyncio.sleep(0.01)  # browsers do not all arrive in the same millisecond
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    web_rss_before = {pid: rss_mb(pid) for pid in pids.get("web", [])}
    cpu_before = {who: sum(cpu_seconds(p) for p in ps) for who, ps in pids.items()}
    wall_before = time.monotonic()
    await start_load()
    deadline = time.monotonic() + seconds + drain
    peak_rss = dict(web_rss_before)
    while time.monotonic() < deadline and any(c.delivered < c.expected for c in clients if not c.slow):
        for pid in peak_rss:
            peak_rss[pid] = max(peak_rss[pid], rss_mb(pid))
        await asyncio.sleep(0.2)
    stop.set()
    wall = time.monotonic() - wall_before
    cpu = {who: sum(cpu_seconds(p) for p in ps) - cpu_before[who] for who, ps in pids.items()}
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), seconds + drain + 30)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            print(f"# a client failed: {t.exception()!r}", file=sys.stderr)
    extra = {"web_rss_mb_before": [round(v) for v in web_rss_before.values()]}
    extra["web_rss_mb_peak"] = [round(v) for v in peak_rss.values()]
    return cpu, wall, extra


# ---------------------------------------------------------------- the bare reference


def bare_server_main(port: int) -> None:
    """A minimal websockets broadcast server: what fan-out costs with nothing else in the way."""
    import websockets
    from websockets.asyncio.server import broadcast, serve

    groups: dict[str, set] = {}

    async def handler(ws) -> None:
        path = ws.request.path
        if path == "/control":
            spec = json.loads(await ws.recv())
            await ws.send(json.dumps(await publish(spec)))
            return
        groups.setdefault(path, set()).add(ws)
        try:
            await ws.send(json.dumps({"type": "hello", "jobs": {}, "runs": []}))
            await ws.send(json.dumps({"type": "lines", "lines": [], "replay": True}))
            await ws.wait_closed()
        finally:
            groups[path].discard(ws)

    async def publish(spec: dict) -> dict:
        period = 1.0 / spec["frames_per_s"]
        per_frame = spec["lines_per_frame"]
        start = time.monotonic()
        tick = 0
        next_id = 1
        seqs: dict[str, int] = {}
        while time.monotonic() - start < spec["seconds"]:
            now = datetime.now(UTC).isoformat()
            for path, members in list(groups.items()):
                if not members:
                    continue  # a stream of an earlier scenario: nobody to send to
                lines = []
                for _ in range(per_frame):
                    seq = seqs[path] = seqs.get(path, 0) + 1
                    lines.append(
                        {"id": next_id, "run": 1, "job": 1, "seq": seq, "ts": now, "level": "INFO",
                         "message": f"line {seq} of {spec['total']}"}
                    )  # fmt: skip
                    next_id += 1
                broadcast(members, json.dumps({"type": "lines", "lines": lines, "replay": False}))
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * period - time.monotonic()))
        return {"frames": tick}

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, max_size=None, compression=None, ping_interval=None):
            await asyncio.Future()

    del websockets
    asyncio.run(main())


async def bare_reference(port: int, paths: list[str], measured: dict, seconds: float, pid: int) -> dict:
    """The same clients, frames and frame sizes as ``measured``, from the bare server."""
    import websockets

    origin = f"http://127.0.0.1:{port}"
    clients = [Client(f"ws://127.0.0.1:{port}{p}", origin, "") for p in paths]
    frames_per_s = measured["frames_per_client_per_s"] or 20
    lines_per_frame = max(1, round(measured["lines_per_frame"] or 1))
    total = int(frames_per_s * seconds) * lines_per_frame
    for c in clients:
        c.expected = total

    async def start_load() -> None:
        async def control() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}/control") as ws:
                await ws.send(
                    json.dumps(
                        {"frames_per_s": frames_per_s, "lines_per_frame": lines_per_frame, "seconds": seconds,
                         "total": total}
                    )
                )  # fmt: skip
                await ws.recv()

        asyncio.get_running_loop().create_task(control())

    cpu, wall, _ = await run_clients(clients, {"bare": [pid]}, start_load, seconds, 5.0)
    result = summarise(f"{measured['scenario']} (bare reference)", clients, cpu, wall, {})
    return result


# ---------------------------------------------------------------- scenarios


@dataclass
class Setup:
    args: argparse.Namespace
    plugin_id: int
    streams: list[Stream]
    web_ports: list[int]
    pids: dict[str, list[int]]
    bare_port: int
    bare_pid: int


def stream_url(setup: Setup, stream: Stream, web: int) -> tuple[str, str]:
    port = setup.web_ports[web % len(setup.web_ports)]
    return f"ws://127.0.0.1:{port}/ws/logs/{setup.plugin_id}/{stream.user_id}/", f"http://127.0.0.1:{port}"


async def scenario(setup: Setup, name: str, *, viewers: int, rate: int, many: bool, webs: int, slow: int = 0) -> list:
    args = setup.args
    seconds = args.seconds * (2 if slow else 1)  # long enough for a stalled socket to pass its bound
    if many:
        streams = setup.streams[:viewers]
        per_job = rate // len(streams)
        runs = [(s.jobs[0], per_job) for s in streams]
    else:
        streams = [setup.streams[0]] * viewers
        per_job = rate // len(setup.streams[0].jobs)
        runs = [(j, per_job) for j in setup.streams[0].jobs]
    clients = []
    for i, stream in enumerate(streams):
        url, origin = stream_url(setup, stream, i % webs)
        expected = int(per_job * seconds) * (1 if many else len(setup.streams[0].jobs))
        clients.append(Client(url, origin, stream.cookie, expected))
    for k in range(slow):
        url, origin = stream_url(setup, setup.streams[0], k % webs)
        clients.append(Client(url, origin, setup.streams[0].cookie, clients[0].expected, slow=True))

    async def start_load() -> None:
        job_rates: dict[int, list[int]] = {}
        for job, r in runs:
            job_rates.setdefault(r, []).append(job)
        for r, jobs in job_rates.items():
            await asyncio.to_thread(queue_runs, jobs, r, seconds)

    pids = {
        "web": setup.pids["web"][:webs],
        "scheduler": setup.pids["scheduler"],
        "redis": setup.pids["redis"],
        "clients": [os.getpid()],
    }
    # The stalled viewer reads again after 60 % of the phase: past its bound (~1.3 MB, ~9 s at
    # 1,000 lines/s) and within the 10 s it has to close by itself.
    cpu, wall, extra = await run_clients(clients, pids, start_load, seconds, args.drain, slow_for=0.6 * seconds)
    if slow:
        slow_clients = [c for c in clients if c.slow]
        extra["slow_told_behind"] = sum(c.behind for c in slow_clients)
        extra["slow_close_codes"] = [c.close_code for c in slow_clients]
        extra["slow_closed_4429"] = sum(c.close_code == CLOSE_FELL_BEHIND for c in slow_clients)
        extra["slow_complete_after_resume"] = sum(c.delivered >= c.expected for c in slow_clients)
        extra["slow_lines_from_resume"] = [c.caught_up_lines for c in slow_clients]
    result = summarise(name, clients, cpu, wall, extra)
    print(json.dumps(result), flush=True)
    out = [result]
    if not slow and not args.no_bare:
        paths = [f"/stream/{i if many else 0}" for i in range(viewers)]
        bare = await bare_reference(setup.bare_port, paths, result, seconds, setup.bare_pid)
        bare["scenario"] = f"{name} (bare reference)"
        print(json.dumps(bare), flush=True)
        if bare.get("cpu_bare_us_per_line"):
            ratio = sum(result[f"cpu_{w}_us_per_line"] for w in ["web"]) / bare["cpu_bare_us_per_line"]
            print(json.dumps({"scenario": name, "web_vs_bare": round(ratio, 2)}), flush=True)
            result["web_vs_bare"] = round(ratio, 2)
        out.append(bare)
    return out


SCENARIOS = {
    "one-100": {"viewers": 100, "rate": 1000, "many": False, "webs": 1},
    "one-20": {"viewers": 20, "rate": 5000, "many": False, "webs": 1},
    "many": {"viewers": 100, "rate": 1000, "many": True, "webs": 1},
    "slow": {"viewers": 100, "rate": 1000, "many": False, "webs": 1, "slow": 1},
    "two-web-one": {"viewers": 100, "rate": 1000, "many": False, "webs": 2},
    "two-web-many": {"viewers": 100, "rate": 1000, "many": True, "webs": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=5, help="concurrent runs on the crowded stream")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait for stragglers")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--redis-port", type=int, default=6404, help="port of the private redis-server started here")
    parser.add_argument("--port", type=int, default=8400, help="first of the ports used (web 1, web 2, bare server)")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare websockets reference")
    parser.add_argument("--viewer-buffer", type=int, default=None, help="LIVE_LOG_VIEWER_BUFFER for the web processes")
    args = parser.parse_args()
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")

    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    workdir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    redis = subprocess.Popen(
        ["redis-server", "--port", str(args.redis_port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=(workdir / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    procs: list[subprocess.Popen] = []
    try:
        wait_port(args.redis_port)
        env = setup_env(args, workdir, f"redis://127.0.0.1:{args.redis_port}/0")
        if args.viewer_buffer:
            env["LIVE_LOG_VIEWER_BUFFER"] = str(args.viewer_buffer)
        plugin_id, streams = prepare_data(args)
        web_ports = [args.port, args.port + 1]
        bare_port = args.port + 2
        webs = [
            start_manage(["serve", "--port", str(p), "--no-scheduler"], env, workdir / f"web{i}.log")
            for i, p in enumerate(web_ports)
        ]
        scheduler = start_manage(["runscheduler"], env, workdir / "scheduler.log")
        bare = subprocess.Popen([sys.executable, __file__, "--bare-server", str(bare_port)], cwd=ROOT)
        procs = [scheduler, *webs, bare]
        for p in [*web_ports, bare_port]:
            wait_port(p)
        time.sleep(2)  # let the scheduler node come up
        setup = Setup(
            args,
            plugin_id,
            streams,
            web_ports,
            {"web": [w.pid for w in webs], "scheduler": [scheduler.pid], "redis": [redis.pid]},
            bare_port,
            bare.pid,
        )
        print(f"# database {env['DB_CONNECTION'].split(':')[0]}, {args.seconds:g} s per scenario, logs in {workdir}")
        for name in names:
            asyncio.run(scenario(setup, name, **SCENARIOS[name]))
            time.sleep(2)  # let the runs finish before the next scenario
    finally:
        for proc in [*procs, redis]:
            proc.terminate()
        for proc in [*procs, redis]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bare-server":
        bare_server_main(int(sys.argv[2]))
    else:
        main()
