"""Live logs across processes: a separate ``runscheduler`` publishes through Redis, a separate
web process (``serve`` without the embedded scheduler) relays to a real websocket client.

This is the production topology; with the in-memory layer these lines would never arrive.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest
import redis.asyncio
import websockets
from django.db import connection
from django.test import Client

from scheduler_app import services, streams
from scheduler_app.models import Job
from tests.processes import free_port, manage, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def queue_run(job_id: int) -> None:
    # Runs in a worker thread: close its connection, or the test database cannot be dropped.
    try:
        services.run_now(Job.objects.get(pk=job_id))
    finally:
        connection.close()


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def receive_until(ws, predicate, timeout: float) -> list[dict]:
    """Collect messages until ``predicate(all_lines)`` holds; return every line received."""
    lines: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate(lines):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"timed out; lines so far: {json.dumps(lines)[:2000]}")
        message = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        if message["type"] == "lines":
            lines.extend(message["lines"])
    return lines


def test_lines_from_a_separate_scheduler_reach_the_browser_through_redis(tmp_path: Path, alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "Redis", "times": 2}, description="across")
    prefix = f"test-{os.environ.get('CHANNEL_LAYER_PREFIX', 'x')}-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": REDIS_URL, "CHANNEL_LAYER_PREFIX": prefix, "SCHEDULER_EMBEDDED": "false"}
    port = free_port()
    web = manage(["serve", "--port", str(port), "--no-scheduler"], tmp_path / "web.log", **env)
    scheduler = manage(["runscheduler"], tmp_path / "scheduler.log", **env)
    try:
        wait_for_port(port, timeout=30)
        scheduler.wait_for_output("started", timeout=30)
        cookie = session_cookie(alice)

        async def scenario() -> list[dict]:
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws/logs/{sample_plugin.pk}/{alice.pk}/",
                origin=f"http://127.0.0.1:{port}",
                additional_headers={"Cookie": f"sessionid={cookie}"},
            ) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert hello["type"] == "hello" and hello["jobs"] == {str(job.pk): "across"}
                replay = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert replay == {"type": "lines", "lines": [], "replay": True}
                # Idle longer than redis-py's default 5 s read timeout: the socket must survive it
                # (channels_redis's blocking read used to time out and crash the consumer).
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 7)
                await asyncio.to_thread(queue_run, job.pk)
                return await receive_until(ws, lambda ls: any(x["message"] == "done" for x in ls), timeout=30)

        lines = asyncio.run(scenario())
        messages = [line["message"] for line in lines]
        assert "Hello, Redis! (1/2)" in messages and "Hello, Redis! (2/2)" in messages
        ids = [line["id"] for line in lines]
        assert len(ids) == len(set(ids)) and ids == sorted(ids)
        assert {line["job"] for line in lines} == {job.pk}
    except BaseException:
        print("--- web ---\n" + web.output() + "\n--- scheduler ---\n" + scheduler.output())
        raise
    finally:
        scheduler.stop(timeout=10)
        web.stop(timeout=10)


def test_two_web_processes_each_relay_every_line_once_to_their_own_viewers(tmp_path: Path, alice, sample_plugin):
    # Each web process subscribes to the stream once and fans out to its own viewers.
    job = services.create_job(alice, sample_plugin, {"name": "Crowd", "times": 4}, description="crowd")
    prefix = f"test-{os.environ.get('CHANNEL_LAYER_PREFIX', 'x')}-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": REDIS_URL, "CHANNEL_LAYER_PREFIX": prefix, "SCHEDULER_EMBEDDED": "false"}
    ports = [free_port(), free_port()]
    webs = [
        manage(["serve", "--port", str(port), "--no-scheduler"], tmp_path / f"web{i}.log", **env)
        for i, port in enumerate(ports)
    ]
    scheduler = manage(["runscheduler"], tmp_path / "scheduler.log", **env)
    try:
        for port in ports:
            wait_for_port(port, timeout=30)
        scheduler.wait_for_output("started", timeout=30)
        cookie = session_cookie(alice)

        async def viewer(port: int, connected: asyncio.Event) -> list[dict]:
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws/logs/{sample_plugin.pk}/{alice.pk}/",
                origin=f"http://127.0.0.1:{port}",
                additional_headers={"Cookie": f"sessionid={cookie}"},
            ) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["lines"] == []
                connected.set()
                return await receive_until(ws, lambda ls: any(x["message"] == "done" for x in ls), timeout=30)

        async def scenario() -> list[list[dict]]:
            events = [asyncio.Event() for _ in range(4)]
            tasks = [asyncio.create_task(viewer(ports[i % 2], e)) for i, e in enumerate(events)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 20)
            # Four sockets, two processes: two subscriptions to the stream, not four (live_bus).
            async with redis.asyncio.from_url(REDIS_URL) as client:
                group = streams.log_group_name(sample_plugin.pk, alice.pk)
                assert await client.pubsub_numsub(f"{prefix}:live:{group}") == [(f"{prefix}:live:{group}".encode(), 2)]
            await asyncio.to_thread(queue_run, job.pk)
            return await asyncio.gather(*tasks)

        seen = asyncio.run(scenario())
        expected = [f"Hello, Crowd! ({i}/4)" for i in range(1, 5)]
        for lines in seen:
            ids = [line["id"] for line in lines]
            assert len(ids) == len(set(ids)) and ids == sorted(ids)
            assert [m for m in (line["message"] for line in lines) if m.startswith("Hello")] == expected
        assert [line["id"] for line in seen[0]] == [line["id"] for line in seen[1]]  # the same, from either process
    except BaseException:
        for web in webs:
            print("--- web ---\n" + web.output())
        print("--- scheduler ---\n" + scheduler.output())
        raise
    finally:
        scheduler.stop(timeout=10)
        for web in webs:
            web.stop(timeout=10)
