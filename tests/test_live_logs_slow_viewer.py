"""A viewer that stops reading, through the real server: ``manage.py serve`` (daphne) with the
embedded scheduler and the in-memory channel layer, as ``./dev.sh run`` starts it.

Two real websocket clients watch alice's stream while a run logs 10,000 lines (2.5 MB of
frames) over two seconds: one reads everything, the other stops reading (a small receive
window and nothing read, like a tab on a bad network). The reading one gets every line once
and in order without waiting for the stalled one; the stalled one, when it reads again, finds
it was told it fell behind (before receiving all lines: what did not fit was dropped, not
buffered) and resumes with ``?after=`` from the database, ending with every line once.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
import websockets
from django.db import connection
from django.test import Client

from scheduler_app import services
from scheduler_app.models import Job, Plugin
from tests.processes import free_port, manage, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LINES = 10_000
CHATTY = "tests.plugins.chatty@v1_0_0.plugin.Plugin"


def queue_run(job_id: int) -> None:
    try:
        services.run_now(Job.objects.get(pk=job_id))
    finally:
        connection.close()


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def connect(url: str, origin: str, cookie: str, *, stalled: bool = False):
    sock = None
    if stalled:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
    return await websockets.connect(
        url,
        origin=origin,
        additional_headers={"Cookie": f"sessionid={cookie}"},
        max_size=None,
        max_queue=1 if stalled else None,  # a full queue stops reading the socket
        sock=sock,
    )


def done(lines: list[dict]) -> bool:
    return any(line["message"] == "chatty done" for line in lines)


async def read_lines(ws, until, timeout: float, lines: list[dict] | None = None) -> tuple[list[dict], list[dict]]:
    """Lines and other messages received until ``until(lines)`` holds (or a 'behind' notice)."""
    lines = [] if lines is None else lines
    others: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not until(lines):
        message = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - loop.time())))
        if message["type"] == "lines":
            lines += message["lines"]
        else:
            others.append(message)
            if message["type"] == "behind":
                break
    return lines, others


def test_a_stalled_viewer_is_told_it_fell_behind_and_resumes_while_the_other_gets_everything(tmp_path: Path, alice):
    plugin = Plugin.objects.create(name="Chatty", package=CHATTY, interval=86400)
    job = services.create_job(alice, plugin, {"lines": LINES, "rate": 5000, "width": 100}, activate=False)
    port = free_port()
    web = manage(
        ["serve", "--port", str(port)],
        tmp_path / "web.log",
        SCHEDULER_EMBEDDED="true",
        REDIS_URL="",
        LIVE_LOG_VIEWER_BUFFER="200000",
    )
    try:
        wait_for_port(port, timeout=30)
        cookie = session_cookie(alice)
        url = f"ws://127.0.0.1:{port}/ws/logs/{job.plugin_id}/{alice.pk}/"
        origin = f"http://127.0.0.1:{port}"

        async def scenario() -> None:
            reader = await connect(url, origin, cookie)
            stalled = await connect(url, origin, cookie, stalled=True)
            for ws in (reader, stalled):
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["lines"] == []
            await asyncio.to_thread(queue_run, job.pk)

            # The reader takes the run as it comes while the stalled socket reads nothing...
            lines: list[dict] = []
            reading = asyncio.create_task(read_lines(reader, done, timeout=90, lines=lines))
            while len(lines) < 0.6 * LINES:
                assert not reading.done(), reading
                await asyncio.sleep(0.05)
            # ...until well past its bound (~1/3 of the run): it reads again and finds part of
            # the run, then the notice (read within the 10 s it has before being closed).
            partial, notices = await read_lines(stalled, done, timeout=30)
            assert notices and notices[-1] == {"type": "behind"}, (len(partial), notices)
            assert 0 < len(partial) < LINES  # the rest was dropped, not buffered
            await stalled.close()

            await reading
            ids = [line["id"] for line in lines]
            assert len(ids) == LINES + 1 and len(set(ids)) == len(ids) and ids == sorted(ids)
            assert [line["seq"] for line in lines] == list(range(1, LINES + 2))
            await reader.close()

            last = max(line["id"] for line in partial)
            async with await connect(f"{url}?after={last}", origin, cookie) as resumed:
                assert json.loads(await asyncio.wait_for(resumed.recv(), 10))["type"] == "hello"
                rest, _ = await read_lines(resumed, done, timeout=30)
            together = [line["id"] for line in partial + rest]
            assert together == ids  # every line once, in order

        asyncio.run(scenario())
    except BaseException:
        print("--- web ---\n" + web.output())
        raise
    finally:
        web.stop(timeout=10)
