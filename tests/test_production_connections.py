"""Production holds under bursts: bounded PostgreSQL connections per process kind, and a Redis
channel layer that never refuses a burst of websockets.

The end-to-end tests run real ``manage.py serve`` (daphne) and ``runscheduler`` processes; the
connection bound is read from PostgreSQL itself (``pg_stat_activity``), so it needs the
PostgreSQL leg of ``./dev.sh test``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio
import websockets
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client

from jobscheduler.env import (
    SCHEDULER_CONNECTIONS,
    PoolSize,
    connections_for_process,
    parse_database_url,
    process_kind,
    redis_channel_layer,
)
from scheduler_app import services
from tests.processes import ManagedProcess, database_url, free_port, manage, process_env, wait_for_port

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POOL: PoolSize = {"min_size": 1, "max_size": 3, "timeout": 20.0}
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


# -- which process kind gets which connections -------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["manage.py", "serve", "--port", "8001"], "web"),
        (["/srv/app/manage.py", "runscheduler"], "scheduler"),
        (["manage.py", "migrate"], "command"),
        (["/usr/lib/python3/site-packages/django/__main__.py", "runscheduler"], "scheduler"),
        (["/srv/app/.venv/bin/daphne", "--port", "8001", "jobscheduler.asgi:application"], "web"),
        (["/srv/app/.venv/bin/uvicorn", "jobscheduler.asgi:application"], "web"),
        (["/srv/app/.venv/lib/python3.11/site-packages/daphne/__main__.py", "-p", "8001"], "web"),
        (["/srv/app/.venv/bin/pytest", "-q"], "command"),
        ([], "command"),
    ],
)
def test_the_process_kind_comes_from_the_command_line(argv: list[str], kind: str):
    assert process_kind(argv, environ={}) == kind


def test_jobscheduler_process_overrides_the_guess_and_is_checked():
    assert process_kind(["my-asgi-launcher"], environ={"JOBSCHEDULER_PROCESS": "web"}) == "web"
    with pytest.raises(ImproperlyConfigured, match=r"JOBSCHEDULER_PROCESS='webserver': expected one of web"):
        process_kind(["manage.py", "serve"], environ={"JOBSCHEDULER_PROCESS": "webserver"})


def test_web_processes_pool_postgresql_connections_and_schedulers_keep_theirs(tmp_path: Path):
    pg = parse_database_url("postgres://u:p@db:5432/jobs", base_dir=tmp_path)
    web = connections_for_process(pg, "web", POOL)
    assert web["OPTIONS"]["pool"] == POOL
    # Django refuses a pool with persistent connections; each request hands its connection back.
    assert web["CONN_MAX_AGE"] == 0 and web["CONN_HEALTH_CHECKS"] is True
    assert web["OPTIONS"]["application_name"] == "jobscheduler-web"

    scheduler = connections_for_process(pg, "scheduler", POOL)
    assert "pool" not in scheduler["OPTIONS"] and scheduler["CONN_MAX_AGE"] == 600
    assert scheduler["OPTIONS"]["application_name"] == "jobscheduler-scheduler"
    assert "pool" not in connections_for_process(pg, "command", POOL)["OPTIONS"]
    assert pg["OPTIONS"] == {}, "the parsed entry is not changed in place"

    named = parse_database_url("postgres://u@db/jobs?application_name=web-2", base_dir=tmp_path)
    assert connections_for_process(named, "web", POOL)["OPTIONS"]["application_name"] == "web-2"

    sqlite = parse_database_url("sqlite:///jobs.db", base_dir=tmp_path)
    assert connections_for_process(sqlite, "web", POOL) == sqlite


# -- a real web process on PostgreSQL ------------------------------------------------------------


def python(args: list[str], log_path: Path, **env: str) -> ManagedProcess:
    return ManagedProcess([sys.executable, *args], log_path, process_env(**env))


def session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def connections_named(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [name],
        )
        return cursor.fetchone()[0]


class ConnectionSampler:
    """Counts a process's connections every 20 ms in a thread while a load runs."""

    def __init__(self, name: str) -> None:
        self.name, self.samples = name, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        from django.db import connection as thread_connection

        try:
            while not self._stop.wait(0.02):
                with thread_connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [self.name])
                    self.samples.append(cursor.fetchone()[0])
        finally:
            thread_connection.close()

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def get_pages(base: str, cookie: str, paths: list[str], concurrency: int) -> list[int]:
    """GET every path (``concurrency`` at a time, bounded) until one fails; return the status codes."""
    statuses: list[int] = []
    queue = list(reversed(paths))
    async with aiohttp.ClientSession(base, cookies={"sessionid": cookie}) as session:

        async def worker() -> None:
            while queue:
                async with session.get(queue.pop(), allow_redirects=False) as response:
                    await response.read()
                    statuses.append(response.status)
                    if response.status != 200:
                        queue.clear()  # one failure says it: stop instead of waiting out the rest

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not ON_POSTGRES, reason="pooling is PostgreSQL's: runs in the PostgreSQL leg of ./dev.sh test")
@pytest.mark.parametrize("launcher", ["manage.py serve", "daphne"])
def test_a_burst_of_requests_never_holds_more_connections_than_the_web_pool(
    tmp_path: Path, alice, sample_plugin, launcher: str
):
    services.create_job(alice, sample_plugin, {"name": "Pool", "times": 1}, description="pooled")
    # A pool of one: every request waits for the same connection, so one connection left
    # borrowed (by start-up, or a request that never gave it back) would stop the process.
    pool: PoolSize = {"min_size": 1, "max_size": 1, "timeout": 20.0}
    name = f"web-{uuid.uuid4().hex[:8]}"
    port = free_port()
    # Both ways docs/deployment.md starts a web process: the command, and daphne's own CLI
    # (the systemd unit), which must be recognised as a web process from its command line.
    command = (
        ["serve", "--port", str(port), "--no-scheduler"]
        if launcher == "manage.py serve"
        else ["-m", "daphne", "-p", str(port), "jobscheduler.asgi:application"]
    )
    web = (manage if launcher == "manage.py serve" else python)(
        command,
        tmp_path / "web.log",
        DB_CONNECTION=f"{database_url()}?application_name={name}",
        DB_POOL_MIN_SIZE=str(pool["min_size"]),
        DB_POOL_MAX_SIZE=str(pool["max_size"]),
        DB_POOL_TIMEOUT="5",
        SCHEDULER_EMBEDDED="false",
    )
    scheduler = manage(["runscheduler"], tmp_path / "scheduler.log", SCHEDULER_EMBEDDED="false")
    try:
        wait_for_port(port, timeout=30)
        scheduler.wait_for_output("started", timeout=30)
        cookie = session_cookie(alice)
        pages = ["/", f"/plugins/{sample_plugin.pk}/"]
        with ConnectionSampler(name) as sampler:
            # One client after the other (each request ran in a thread of its own and kept a
            # connection), then 40 at once.
            sequential = asyncio.run(get_pages(f"http://127.0.0.1:{port}", cookie, pages * 60, concurrency=1))
            burst = asyncio.run(get_pages(f"http://127.0.0.1:{port}", cookie, pages * 150, concurrency=40))
        assert sequential.count(200) == 120 and burst.count(200) == 300, (sequential, burst)
        assert sampler.samples and max(sampler.samples) <= pool["max_size"], sampler.samples
        assert max(sampler.samples) >= 1, "the sampler saw the web process's connections"
        # The scheduler keeps its few long-lived connections, named as such, beside the pool.
        assert 1 <= connections_named("jobscheduler-scheduler") <= SCHEDULER_CONNECTIONS
    except BaseException:
        print("--- web ---\n" + web.output() + "\n--- scheduler ---\n" + scheduler.output())
        raise
    finally:
        scheduler.stop(timeout=10)
        web.stop(timeout=10)


# -- a burst of websockets through Redis -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_hundred_websockets_connecting_at_once_are_all_accepted(tmp_path: Path, alice, sample_plugin):
    services.create_job(alice, sample_plugin, {"name": "Burst", "times": 1}, description="burst")
    prefix = f"test-{os.environ.get('CHANNEL_LAYER_PREFIX', 'x')}-{uuid.uuid4().hex[:8]}"
    port = free_port()
    # A small Redis pool, so the burst must wait for connections (the old pool raised
    # MaxConnectionsError past its bound and the handshake answered 500).
    web = manage(
        ["serve", "--port", str(port), "--no-scheduler"],
        tmp_path / "web.log",
        REDIS_URL=REDIS_URL,
        CHANNEL_LAYER_PREFIX=prefix,
        REDIS_MAX_CONNECTIONS="5",
        SCHEDULER_EMBEDDED="false",
    )
    try:
        wait_for_port(port, timeout=30)
        cookie = session_cookie(alice)
        url = f"ws://127.0.0.1:{port}/ws/logs/{sample_plugin.pk}/{alice.pk}/"
        start = asyncio.Event()

        async def one_browser() -> str:
            await start.wait()
            try:
                async with websockets.connect(
                    url,
                    origin=f"http://127.0.0.1:{port}",
                    additional_headers={"Cookie": f"sessionid={cookie}"},
                    open_timeout=60,
                ) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    return hello["type"]
            except websockets.InvalidStatus as exc:
                return f"HTTP {exc.response.status_code}"

        async def burst() -> list[str]:
            tasks = [asyncio.create_task(one_browser()) for _ in range(200)]
            await asyncio.sleep(0.1)
            start.set()
            return await asyncio.gather(*tasks)

        answers = asyncio.run(burst())
        refused = [a for a in answers if a != "hello"]
        assert not refused, f"{len(refused)} of 200 handshakes failed: {sorted(set(refused))}"
        assert "MaxConnectionsError" not in web.output() and "Traceback" not in web.output()
    except BaseException:
        print("--- web ---\n" + web.output())
        raise
    finally:
        web.stop(timeout=10)


def pool_of(argv: list[str], **env: str) -> object:
    """The pool options ``jobscheduler.settings`` gives a process started as ``argv``."""
    code = (
        "import json, sys; sys.argv = json.loads(sys.argv[1]); from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default']['OPTIONS'].get('pool')))"
    )
    full_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "jobscheduler.settings",
        "SECRET_KEY": "x" * 50,
        "DB_CONNECTION": "postgres://u@db.invalid:5432/jobs",
        **env,
    }
    full_env.pop("JOBSCHEDULER_PROCESS", None)
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)], env=full_env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_settings_pool_web_processes_and_leave_room_for_an_embedded_scheduler():
    assert pool_of(["manage.py", "serve"], DB_POOL_MAX_SIZE="6") == {"min_size": 1, "max_size": 6, "timeout": 20.0}
    assert pool_of(["manage.py", "runscheduler"], DB_POOL_MAX_SIZE="6") is None
    # The embedded scheduler's threads hold their connections for good: on top of the requests'.
    embedded = pool_of(["manage.py", "serve"], DB_POOL_MAX_SIZE="6", SCHEDULER_EMBEDDED="true")
    assert embedded["max_size"] == 6 + SCHEDULER_CONNECTIONS


async def test_a_burst_of_channel_layer_commands_waits_for_the_pools_connections():
    """Whatever uses the layer (group_add for a socket, group_send for a change notification),
    300 commands at once through a layer of 5 connections all succeed, on 5 connections."""
    from channels_redis.core import RedisChannelLayer
    from redis.exceptions import MaxConnectionsError

    from jobscheduler.redis_layer import WaitingRedisChannelLayer

    prefix = f"test-{os.environ.get('CHANNEL_LAYER_PREFIX', 'x')}-{uuid.uuid4().hex[:8]}"
    name = f"{prefix}-burst"
    config = redis_channel_layer(REDIS_URL, prefix=prefix, max_connections=5, client_name=name)["CONFIG"]
    layer = WaitingRedisChannelLayer(**config)
    peak = 0

    async def count_connections(stop: asyncio.Event) -> None:
        nonlocal peak
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            while not stop.is_set():
                peak = max(peak, sum(1 for c in await client.client_list() if c["name"] == name))
                await asyncio.sleep(0.005)
        finally:
            await client.aclose()

    stop = asyncio.Event()
    counter = asyncio.create_task(count_connections(stop))
    try:
        await asyncio.gather(*(layer.group_add(f"burst{i % 20}", f"specific.burst!{i}") for i in range(300)))
        await asyncio.gather(*(layer.group_send(f"burst{i}", {"type": "x.y"}) for i in range(20)))
    finally:
        stop.set()
        await counter
        await layer.flush()
    assert 1 <= peak <= 5, peak

    # channels_redis's own pool, the same bound: the burst fails (what 200 browsers met).
    stock = RedisChannelLayer(
        hosts=[{k: v for k, v in config["hosts"][0].items() if k != "timeout"}], prefix=f"{prefix}-stock"
    )
    results = await asyncio.gather(
        *(stock.group_add(f"burst{i % 20}", f"specific.burst!{i}") for i in range(300)), return_exceptions=True
    )
    await stock.flush()
    assert any(isinstance(r, MaxConnectionsError) for r in results)
