"""Chaos benchmark: several ``runscheduler`` nodes on PostgreSQL while nodes die, pause and lose
their database and Redis; what it costs in duplicates, overlaps, missed slots and failover time.

It needs PRIVATE servers, because it restarts PostgreSQL and stops Redis: it initialises (first
time) and starts its own cluster in ``--pg-data`` on ``--pg-port`` and its own ``redis-server``
on ``--redis-port``, refuses the shared default ports, and stops what it started at the end.

    .venv/bin/python bench/chaos.py                          # chaos, then the scale figure (~4-6 min)
    .venv/bin/python bench/chaos.py --only chaos
    .venv/bin/python bench/chaos.py --only scale --scale-jobs 1000
    .venv/bin/python bench/chaos.py --heartbeat 5 --lost-after 30   # other loss settings

Chaos (``--nodes`` nodes, ``--jobs`` jobs every second, each run ~0.5 s of steps):
kill -9 the node with the most runs in flight (and start a replacement later, as systemd
would); SIGSTOP a node for ``--pause`` s and SIGCONT it; stop PostgreSQL for ``--pg-down`` s
and start it again; stop Redis for ``--redis-down`` s and start it again.

What counts is what the plugin did, not what the database says: the ``trail_probe`` test plugin
(``tests/plugins/trail_probe@v1_0_0``) appends ``start``/``step``/``end``/``cancel`` lines with
the wall time and its pid to a file, read by ``tests/trail.py`` (shared with the failover
test). From it:

- duplicate executions: a (job, slot) executed more than once (by any processes);
- overlaps: two executions of one job whose work (start .. last step or end) intersects; a run
  frozen by SIGSTOP that is cancelled when it wakes does no work after the pause;
- missed slots: slots with no execution, per phase (a database that is down misses slots by
  design: they cannot be claimed);
- failover: from the kill (or the SIGSTOP) to the next execution of each affected job on
  another node, p50 and max, for the jobs that had a run in flight on the victim and for
  every job the victim ran last;
- records lost: executions that completed (``end``) on a node that was not killed but whose
  run is not recorded ``succeeded`` with its log line; runs left in a non-final state.

Scale: the same load (``--scale-jobs`` trivial jobs every second) on 1, 2 and 3 nodes; total
CPU (user + system, from /proc/<pid>/stat) of the nodes, and of nodes plus PostgreSQL, per
recorded run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine_bench  # noqa: E402  (bench/ is this script's folder: the same database filling)

from tests import trail  # noqa: E402  (the failover test's plugin and its trail reader)

OUT = Path("/tmp/jobscheduler-chaos")
SCALE_PACKAGE = "bench_probe@v1_0_0.plugin.Plugin"
SHARED_PORTS = {5432, 6379}


# --- private servers ---------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise SystemExit(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port
        self.started_here = False

    def ready(self) -> bool:
        return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0

    def ensure(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.data.parent.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                subprocess.run(["chown", "postgres:postgres", str(self.data.parent)], check=True)
            subprocess.run(
                _as_postgres([_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        if not self.ready():
            self.start()
            self.started_here = True

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    opts,
                    "-l",
                    str(self.data.parent / "server.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def pids(self) -> list[int]:
        """The postmaster and its children (the backends serving the nodes)."""
        try:
            master = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        found = [master]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                if int(Path(stat).read_text().rsplit(")", 1)[1].split()[1]) == master:
                    found.append(int(stat.split("/")[2]))
            except (OSError, ValueError, IndexError):
                pass
        return found


class PrivateRedis:
    def __init__(self, port: int) -> None:
        self.port = port
        self.started_here = False

    def ready(self) -> bool:
        return subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode == 0

    def ensure(self) -> None:
        if not self.ready():
            self.start()
            self.started_here = True

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--logfile",
                str(OUT / "redis.log"),
            ],
            check=True,
        )
        for _ in range(50):
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)


# --- Django in this process (to prepare jobs and read the results) -----------------------------


def node_env(args: argparse.Namespace, effects: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="jobscheduler.settings",
        DB_CONNECTION=args.db_url,
        REDIS_URL=f"redis://127.0.0.1:{args.redis_port}/0",
        CHANNEL_LAYER_PREFIX="chaos",
        MODULE_PATH=str(ROOT / "bench" / "plugins"),
        TRAIL_FILE=str(effects),
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        DEBUG="false",
        SECRET_KEY="chaos-bench-not-secret",
    )
    if args.heartbeat is not None:
        env["SCHEDULER_HEARTBEAT_SECONDS"] = str(args.heartbeat)
    if args.lost_after is not None:
        env["SCHEDULER_LOST_AFTER_SECONDS"] = str(args.lost_after)
    return env


def setup_django(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{args.pg_port}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'jobscheduler_chaos'").fetchone():
            conn.execute("CREATE DATABASE jobscheduler_chaos")
    os.environ.update(node_env(args, OUT / "effects.txt"))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def prepare(jobs: int, package: str, config: dict) -> list[int]:
    from django.db import connection

    ids = engine_bench.fill_jobs("chaos", jobs, package, 1, lambda i: {"config": config})
    connection.close()  # PostgreSQL restarts later: no idle connection of ours should be in the way
    return ids


# --- the nodes ---------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    log_path: Path
    killed_at: float | None = None
    #: (SIGSTOP time, SIGCONT time) pairs
    paused: list[tuple[float, float]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_node(name: str, env: dict[str, str], wait: bool = True) -> Node:
    log_path = OUT / f"{name}-{int(time.time())}.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runscheduler", "--node-name", name],
        cwd=ROOT,
        env=env,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    node = Node(name, proc, log_path)
    if wait:
        deadline = time.monotonic() + 120
        while "started in" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {name} did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.05)
    return node


def stop_nodes(nodes: list[Node]) -> None:
    for node in nodes:
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.proc.wait(60)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(5)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the side effects (tests/trail.py reads them) --------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


def failover(executions: list[trail.Execution], victim: int, at: float) -> dict:
    """From ``at`` (kill / SIGSTOP) to the next start of each affected job on another process."""
    by_job: dict[int, list[trail.Execution]] = defaultdict(list)
    for e in executions:
        by_job[e.job].append(e)
    flying = {e.job for e in trail.in_flight(executions, victim, at)}
    last_on_victim = set()
    for job, runs in by_job.items():
        before = [e for e in runs if e.start <= at]
        if before and max(before, key=lambda e: e.start).pid == victim:
            last_on_victim.add(job)

    def delays(jobs: set[int]) -> list[float]:
        out = []
        for job in jobs:
            later = [e.start for e in by_job[job] if e.start > at and e.pid != victim]
            out.append(min(later) - at if later else float("inf"))
        return out

    result = {}
    for label, jobs in (("in_flight", flying), ("victims_jobs", last_on_victim)):
        d = delays(jobs)
        result[label] = {
            "jobs": len(jobs),
            "p50_s": percentile(d, 0.5),
            "max_s": round(max(d), 2) if d else None,
            "never": sum(1 for x in d if x == float("inf")),
        }
    return result


def analyse(
    executions: list[trail.Execution],
    nodes: list[Node],
    phases: list[tuple[str, float, float]],
    job_ids: list[int],
    window: tuple[float, float],
) -> dict:
    from django.db.models import Count

    from scheduler_app import slots
    from scheduler_app.models import JobRun

    killed = {n.pid for n in nodes if n.killed_at is not None}
    duplicates = len(trail.duplicates(executions))
    overlaps = [
        {
            "job": a.job,
            "a": [a.slot_ms, a.pid, round(a.start, 2), round(a.last_work, 2)],
            "b": [b.slot_ms, b.pid, round(b.start, 2), round(b.last_work, 2)],
        }
        for a, b in trail.overlaps(executions)
    ]
    # missed slots, per phase
    lo_ms, hi_ms = int(window[0] * 1000), int(window[1] * 1000)
    executed = {(e.job, e.slot_ms) for e in executions}
    missed: Counter[str] = Counter()
    for job in job_ids:
        slot = slots.slot_after(lo_ms, job, 1)
        while slot <= hi_ms:
            if (job, slot) not in executed:
                t = slot / 1000
                missed[next((name for name, a, b in phases if a <= t < b), "steady")] += 1
            slot += 1000
    # the database's view
    rows = list(JobRun.objects.values_list("job_id", "slot", "node", "status", "log_count", "id"))
    lines = dict(JobRun.objects.annotate(n=Count("log_lines")).values_list("id", "n")) if rows else {}
    recorded = {}
    for job_id, slot, node, status, log_count, run_id in rows:
        pid = int(node.split(":")[1]) if node.count(":") >= 2 else 0
        recorded[(job_id, slots.to_ms(slot), pid)] = (status, log_count, lines.get(run_id, 0))
    lost_records, completed_over_lost, unrecorded_starts = [], [], 0
    for e in executions:
        rec = recorded.get((e.job, e.slot_ms, e.pid))
        if rec is None:
            if e.pid not in killed:
                unrecorded_starts += 1
            continue
        if e.end is not None and e.pid not in killed:
            status, log_count, stored = rec
            if status == "lost":
                completed_over_lost.append([e.job, e.slot_ms, e.pid])
            elif status != "succeeded" or stored != log_count or stored < 1:
                lost_records.append([e.job, e.slot_ms, e.pid, status, log_count, stored])
    statuses = Counter(r[3] for r in rows)
    return {
        "executions": len(executions),
        "duplicate_executions": duplicates,
        "overlaps": len(overlaps),
        "overlap_examples": overlaps[:5],
        "missed_slots": dict(missed),
        "records_lost": len(lost_records) + unrecorded_starts,
        "records_lost_examples": lost_records[:5],
        "completed_after_marked_lost": len(completed_over_lost),
        "runs_not_final": sum(statuses.get(s, 0) for s in ("running", "queued")),
        "statuses": dict(statuses),
    }


# --- scenarios ---------------------------------------------------------------------------------


def chaos(args: argparse.Namespace, pg: PrivatePostgres, redis: PrivateRedis) -> dict:
    effects = OUT / "effects.txt"
    effects.unlink(missing_ok=True)
    job_ids = prepare(args.jobs, trail.PACKAGE, {"steps": args.steps, "step_seconds": args.step_seconds})
    env = node_env(args, effects)
    lost_after = float(args.lost_after if args.lost_after is not None else 30)
    # long enough to see the failover of today's engine (lost after 30 s) as well as a fast one
    observe = max(12.0, lost_after + 8)
    nodes = [start_node(f"chaos{i}", env) for i in range(args.nodes)]
    t_all_up = time.time()
    phases: list[tuple[str, float, float]] = []
    report: dict = {
        "settings": {
            "nodes": args.nodes,
            "jobs": args.jobs,
            "run_seconds": args.steps * args.step_seconds,
            "heartbeat": args.heartbeat,
            "lost_after": args.lost_after,
        }
    }
    time.sleep(args.warmup)

    def busiest() -> Node:
        now = time.time()
        executions = trail.read_trail(effects)
        alive = [n for n in nodes if n.killed_at is None and n.proc.poll() is None]
        return max(alive, key=lambda n: len(trail.in_flight(executions, n.pid, now)))

    # 1. kill -9 the node with the most runs in flight; a replacement starts after the observation
    victim = busiest()
    victim.killed_at = t_kill = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait()
    print(f"killed {victim.name} (pid {victim.pid})", flush=True)
    time.sleep(observe)
    phases.append(("kill", t_kill, time.time()))
    nodes.append(start_node(f"chaos{len(nodes)}", env))
    time.sleep(5)

    # 2. SIGSTOP a node for --pause seconds, then SIGCONT
    paused = busiest()
    t_stop = time.time()
    os.kill(paused.pid, signal.SIGSTOP)
    print(f"paused {paused.name} (pid {paused.pid}) for {args.pause} s", flush=True)
    time.sleep(args.pause)
    os.kill(paused.pid, signal.SIGCONT)
    t_cont = time.time()
    paused.paused.append((t_stop, t_cont))
    time.sleep(10)
    phases.append(("pause", t_stop, time.time()))

    # 3. PostgreSQL down for --pg-down seconds
    t_pg = time.time()
    pg.stop()
    print(f"PostgreSQL stopped for {args.pg_down} s", flush=True)
    time.sleep(args.pg_down)
    pg.start()
    t_pg_up = time.time()
    time.sleep(10)
    phases.append(("postgres_restart", t_pg, time.time()))

    # 4. Redis down for --redis-down seconds
    t_redis = time.time()
    redis.stop()
    print(f"Redis stopped for {args.redis_down} s", flush=True)
    time.sleep(args.redis_down)
    redis.start()
    time.sleep(10)
    t_end = time.time()
    phases.append(("redis_stop", t_redis, t_end))

    stop_nodes(nodes)
    executions = trail.read_trail(effects)
    report["failover_kill"] = failover(executions, victim.pid, t_kill)
    report["failover_pause"] = failover(executions, paused.pid, t_stop)
    report["postgres_down_s"] = round(t_pg_up - t_pg, 1)
    # the slots due while the paused node's runs were frozen: did its runs do work after SIGCONT?
    woke = [e for e in executions if e.pid == paused.pid and e.start < t_stop and e.last_work > t_cont]
    report["paused_runs_working_after_sigcont"] = len(woke)
    report.update(analyse(executions, nodes, phases, job_ids, (t_all_up + 2, t_end - 2)))
    report["node_exit_codes"] = {n.name: n.proc.returncode for n in nodes}
    return report


def scale(args: argparse.Namespace, pg: PrivatePostgres) -> list[dict]:
    from django.db import connection

    from scheduler_app.models import JobRun

    results = []
    env = node_env(args, OUT / "effects-scale.txt")
    # Rounds interleave 1, 2 and 3 nodes, so a burst of load from elsewhere on a shared machine
    # hits all three alike; the ratios are taken per round and their median reported.
    for count in [1, 2, 3] * args.scale_rounds:
        prepare(args.scale_jobs, SCALE_PACKAGE, {})
        nodes = [start_node(f"scale{count}-{i}", env) for i in range(count)]
        time.sleep(args.warmup)
        pg_pids = pg.pids()
        t1 = time.time()
        cpu1 = {n.pid: cpu_seconds(n.pid) for n in nodes}
        pg1 = {p: cpu_seconds(p) for p in pg_pids}
        time.sleep(args.scale_seconds)
        t2 = time.time()
        node_cpu = sum(cpu_seconds(n.pid) - cpu1[n.pid] for n in nodes)
        pg_cpu = sum(cpu_seconds(p) - pg1.get(p, 0.0) for p in pg.pids())
        time.sleep(1.5)  # the last runs of the window are written
        stop_nodes(nodes)
        lo, hi = datetime.fromtimestamp(t1, UTC), datetime.fromtimestamp(t2, UTC)
        recorded = JobRun.objects.filter(slot__gte=lo, slot__lt=hi, status="succeeded").count()
        connection.close()
        offered = args.scale_jobs * (t2 - t1)
        res = {
            "nodes": count,
            "jobs": args.scale_jobs,
            "recorded_runs": recorded,
            "recorded_share": round(recorded / offered, 4),
            "node_cpu_s": round(node_cpu, 2),
            "pg_cpu_s": round(pg_cpu, 2),
            "node_cpu_us_per_run": round(node_cpu / recorded * 1e6) if recorded else None,
            "total_cpu_us_per_run": round((node_cpu + pg_cpu) / recorded * 1e6) if recorded else None,
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        print("scale", json.dumps(res), flush=True)
        results.append(res)
    for start in range(0, len(results), 3):
        base = results[start]
        for res in results[start : start + 3]:
            if base["node_cpu_us_per_run"] and res["node_cpu_us_per_run"]:
                res["node_cpu_ratio_vs_1"] = round(res["node_cpu_us_per_run"] / base["node_cpu_us_per_run"], 2)
                res["total_cpu_ratio_vs_1"] = round(res["total_cpu_us_per_run"] / base["total_cpu_us_per_run"], 2)
    for count in (2, 3):
        ratios = sorted(r["node_cpu_ratio_vs_1"] for r in results if r["nodes"] == count and "node_cpu_ratio_vs_1" in r)
        totals = sorted(
            r["total_cpu_ratio_vs_1"] for r in results if r["nodes"] == count and "total_cpu_ratio_vs_1" in r
        )
        if ratios:
            print(
                f"scale: {count} nodes vs 1, median of {len(ratios)} rounds: node CPU per run "
                f"{ratios[len(ratios) // 2]}x, nodes + PostgreSQL {totals[len(totals) // 2]}x",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["chaos", "scale", "all"], default="all")
    parser.add_argument("--pg-data", type=Path, default=Path("/tmp/jobscheduler-chaos-pg/data"))
    parser.add_argument("--pg-port", type=int, default=5508)
    parser.add_argument("--redis-port", type=int, default=6408)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5, help="steps of each run (0.1 s each by default)")
    parser.add_argument("--step-seconds", type=float, default=0.1)
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument("--pause", type=float, default=15)
    parser.add_argument("--pg-down", type=float, default=5)
    parser.add_argument("--redis-down", type=float, default=20)
    parser.add_argument("--heartbeat", type=float, help="SCHEDULER_HEARTBEAT_SECONDS (default: the product's)")
    parser.add_argument("--lost-after", type=float, help="SCHEDULER_LOST_AFTER_SECONDS (default: the product's)")
    parser.add_argument("--scale-jobs", type=int, default=1000)
    parser.add_argument("--scale-seconds", type=float, default=20)
    parser.add_argument("--scale-rounds", type=int, default=1, help="repeat 1, 2, 3 nodes this many times")
    args = parser.parse_args()
    if args.pg_port in SHARED_PORTS or args.redis_port in SHARED_PORTS:
        raise SystemExit("refusing the shared PostgreSQL/Redis ports: this benchmark restarts and stops its servers")
    args.db_url = f"postgres://postgres@127.0.0.1:{args.pg_port}/jobscheduler_chaos"
    OUT.mkdir(parents=True, exist_ok=True)
    pg, redis = PrivatePostgres(args.pg_data, args.pg_port), PrivateRedis(args.redis_port)
    pg.ensure()
    redis.ensure()
    results: dict = {}
    try:
        setup_django(args)
        if args.only in ("chaos", "all"):
            results["chaos"] = chaos(args, pg, redis)
            print("chaos", json.dumps(results["chaos"], indent=2), flush=True)
        if args.only in ("scale", "all"):
            results["scale"] = scale(args, pg)
    finally:
        if not redis.ready():
            redis.start()
        if not pg.ready():
            pg.start()
        if redis.started_here:
            redis.stop()
        if pg.started_here:
            pg.stop()
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results in {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
