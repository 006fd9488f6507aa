"""The live log websocket on the real ASGI application (origin check, session auth, routing).

Matrix: anonymous (4401), another user and staff without the permission (4403), owner,
superuser and a user with ``scheduler_app.view_job`` (streamed); a refused socket never joins
the group. Then the stream itself: replay, resume after a cursor without gap or
duplicate, live relay of ``log.lines`` and ``run.status``, one-run filtering.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from jobscheduler.asgi import application
from scheduler_app import services, streams
from scheduler_app.consumers import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from scheduler_app.models import JobRun, LogLine

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def communicator(path: str, user=None, origin: str = "http://127.0.0.1") -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1")]
    if origin:
        headers.append((b"origin", origin.encode()))
    if user is not None:
        headers.append((b"cookie", f"sessionid={session_cookie(user)}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.fixture
def stream(alice, bob, staff, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "Ann"}, description="greeter", activate=True)
    run = JobRun.objects.create(
        job=job, slot=timezone.now() - timedelta(seconds=5), status=JobRun.Status.SUCCEEDED, trigger="manual"
    )
    now = timezone.now()
    lines = LogLine.objects.bulk_create(
        LogLine(run=run, seq=i, created_at=now, level=20, message=f"line {i}") for i in range(1, 6)
    )
    lines = list(LogLine.objects.filter(run=run).order_by("seq"))
    return {
        "alice": alice,
        "bob": bob,
        "staff": staff,
        "plugin": sample_plugin,
        "job": job,
        "run": run,
        "lines": lines,
        "path": f"/ws/logs/{sample_plugin.pk}/{alice.pk}/",
        "group": streams.log_group_name(sample_plugin.pk, alice.pk),
    }


async def refused_with(comm: WebsocketCommunicator) -> int:
    connected, _ = await comm.connect()
    assert connected  # accepted only to say why, then closed
    message = await comm.receive_output(timeout=5)
    assert message["type"] == "websocket.close"
    await comm.wait()
    return message["code"]


def group_members(group: str) -> int:
    return len(get_channel_layer().groups.get(group, {}))


async def test_anonymous_is_refused_with_4401_and_joins_nothing(stream):
    comm = communicator(stream["path"])
    assert await refused_with(comm) == CLOSE_UNAUTHENTICATED
    assert group_members(stream["group"]) == 0


async def test_another_user_is_refused_with_4403_and_joins_nothing(stream):
    comm = await sync_to_async(communicator)(stream["path"], stream["bob"])
    assert await refused_with(comm) == CLOSE_FORBIDDEN
    assert group_members(stream["group"]) == 0


async def test_an_unknown_plugin_is_refused_with_4404(stream):
    comm = await sync_to_async(communicator)(f"/ws/logs/999999/{stream['alice'].pk}/", stream["alice"])
    assert await refused_with(comm) == CLOSE_NOT_FOUND


async def test_a_foreign_origin_is_rejected_before_anything(stream):
    comm = await sync_to_async(communicator)(stream["path"], stream["alice"], origin="http://evil.example")
    connected, _ = await comm.connect()
    assert not connected
    assert group_members(stream["group"]) == 0


async def test_the_owner_gets_the_backlog_then_live_lines(stream):
    comm = await sync_to_async(communicator)(stream["path"], stream["alice"])
    connected, _ = await comm.connect()
    assert connected
    try:
        hello = await comm.receive_json_from(timeout=5)
        assert hello["type"] == "hello"
        assert hello["jobs"] == {str(stream["job"].pk): "greeter"}
        replay = await comm.receive_json_from(timeout=5)
        assert replay["replay"] is True
        assert [line["message"] for line in replay["lines"]] == [f"line {i}" for i in range(1, 6)]
        assert {line["run"] for line in replay["lines"]} == {stream["run"].pk}
        assert {line["job"] for line in replay["lines"]} == {stream["job"].pk}
        assert group_members(stream["group"]) == 1

        live = streams.line_payload(
            id=10_000_000,
            run_id=stream["run"].pk,
            job_id=stream["job"].pk,
            seq=6,
            created_at=timezone.now(),
            level=30,
            message="<b>live</b>",
        )
        await get_channel_layer().group_send(stream["group"], {"type": "log.lines", "lines": [live]})
        message = await comm.receive_json_from(timeout=5)
        assert message == {"type": "lines", "lines": [live], "replay": False}

        status = {"id": stream["run"].pk, "job": stream["job"].pk, "status": "running"}
        await get_channel_layer().group_send(stream["group"], {"type": "run.status", "run": status})
        assert await comm.receive_json_from(timeout=5) == {"type": "run", "run": status}
    finally:
        await comm.disconnect()
    assert group_members(stream["group"]) == 0


async def test_staff_may_watch_anyones_stream(stream):
    comm = await sync_to_async(communicator)(stream["path"], stream["staff"])
    connected, _ = await comm.connect()
    assert connected
    try:
        assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
        assert len((await comm.receive_json_from(timeout=5))["lines"]) == 5
    finally:
        await comm.disconnect()


async def test_a_reconnect_resumes_after_its_cursor_and_drops_replayed_duplicates(stream):
    lines = stream["lines"]
    comm = await sync_to_async(communicator)(f"{stream['path']}?after={lines[2].pk}", stream["alice"])
    await comm.connect()
    try:
        await comm.receive_json_from(timeout=5)  # hello
        replay = await comm.receive_json_from(timeout=5)
        assert [line["id"] for line in replay["lines"]] == [lines[3].pk, lines[4].pk]
        # A line persisted while the socket was joining arrives both ways: shown once.
        duplicate = replay["lines"][-1]
        fresh = {**duplicate, "id": lines[4].pk + 1000, "seq": 99, "message": "fresh"}
        await get_channel_layer().group_send(stream["group"], {"type": "log.lines", "lines": [duplicate, fresh]})
        message = await comm.receive_json_from(timeout=5)
        assert [line["message"] for line in message["lines"]] == ["fresh"]
    finally:
        await comm.disconnect()


async def test_a_single_run_view_gets_only_that_run(stream):
    other = await sync_to_async(JobRun.objects.create)(job=stream["job"], slot=timezone.now(), status="running")
    await sync_to_async(LogLine.objects.create)(run=other, seq=1, created_at=timezone.now(), message="other run")
    comm = await sync_to_async(communicator)(f"{stream['path']}?run={other.pk}", stream["alice"])
    await comm.connect()
    try:
        hello = await comm.receive_json_from(timeout=5)
        assert [r["id"] for r in hello["runs"]] == [other.pk]
        replay = await comm.receive_json_from(timeout=5)
        assert [line["message"] for line in replay["lines"]] == ["other run"]
        mine = streams.line_payload(
            id=10_000_001,
            run_id=other.pk,
            job_id=stream["job"].pk,
            seq=2,
            created_at=timezone.now(),
            level=20,
            message="mine",
        )
        theirs = {**mine, "id": 10_000_002, "run": stream["run"].pk, "message": "not mine"}
        await get_channel_layer().group_send(stream["group"], {"type": "log.lines", "lines": [theirs, mine]})
        await get_channel_layer().group_send(
            stream["group"], {"type": "run.status", "run": {"id": stream["run"].pk, "status": "failed"}}
        )
        await get_channel_layer().group_send(
            stream["group"], {"type": "run.status", "run": {"id": other.pk, "status": "succeeded"}}
        )
        assert [x["message"] for x in (await comm.receive_json_from(timeout=5))["lines"]] == ["mine"]
        assert (await comm.receive_json_from(timeout=5))["run"]["id"] == other.pk
    finally:
        await comm.disconnect()


async def test_another_users_run_cannot_be_replayed_through_the_run_filter(stream):
    bob_job = await sync_to_async(services.create_job)(stream["bob"], stream["plugin"], {})
    bob_run = await sync_to_async(JobRun.objects.create)(job=bob_job, slot=timezone.now())
    await sync_to_async(LogLine.objects.create)(run=bob_run, seq=1, created_at=timezone.now(), message="bob's secret")
    comm = await sync_to_async(communicator)(f"{stream['path']}?run={bob_run.pk}", stream["alice"])
    await comm.connect()
    try:
        await comm.receive_json_from(timeout=5)
        assert (await comm.receive_json_from(timeout=5))["lines"] == []
    finally:
        await comm.disconnect()


async def test_a_fresh_view_replays_only_the_newest_lines(stream, monkeypatch):
    from scheduler_app import selectors

    monkeypatch.setattr(selectors, "REPLAY_RECENT", 2)
    comm = await sync_to_async(communicator)(stream["path"], stream["alice"])
    await comm.connect()
    try:
        await comm.receive_json_from(timeout=5)
        replay = await comm.receive_json_from(timeout=5)
        assert [line["message"] for line in replay["lines"]] == ["line 4", "line 5"]
    finally:
        await comm.disconnect()


async def test_the_view_is_told_when_live_lines_cannot_arrive(stream, settings):
    # In-memory layer and no embedded scheduler: the scheduler's lines can never reach this process.
    settings.SCHEDULER = {**settings.SCHEDULER, "EMBEDDED": False}
    comm = await sync_to_async(communicator)(stream["path"], stream["alice"])
    await comm.connect()
    try:
        hello = await comm.receive_json_from(timeout=5)
        assert "REDIS_URL" in hello["notice"]
    finally:
        await comm.disconnect()
    settings.SCHEDULER = {**settings.SCHEDULER, "EMBEDDED": True}
    comm = await sync_to_async(communicator)(stream["path"], stream["alice"])
    await comm.connect()
    try:
        assert "notice" not in await comm.receive_json_from(timeout=5)
    finally:
        await comm.disconnect()


async def test_lines_the_publisher_dropped_are_fetched_from_the_database(stream):
    comm = await sync_to_async(communicator)(stream["path"], stream["alice"])
    await comm.connect()
    try:
        await comm.receive_json_from(timeout=5)
        assert len((await comm.receive_json_from(timeout=5))["lines"]) == 5  # seq 1-5
        # Lines 6 and 7 were stored but their live batch was lost (Redis hiccup); 8 arrives.
        now = timezone.now()
        await sync_to_async(LogLine.objects.bulk_create)(
            [LogLine(run=stream["run"], seq=s, created_at=now, message=f"line {s}") for s in (6, 7, 8)]
        )
        eighth = await sync_to_async(LogLine.objects.get)(run=stream["run"], seq=8)
        live = streams.line_payload(
            id=eighth.pk,
            run_id=stream["run"].pk,
            job_id=stream["job"].pk,
            seq=8,
            created_at=now,
            level=20,
            message="line 8",
        )
        await get_channel_layer().group_send(stream["group"], {"type": "log.lines", "lines": [live]})
        message = await comm.receive_json_from(timeout=5)
        assert [line["message"] for line in message["lines"]] == ["line 6", "line 7", "line 8"]
    finally:
        await comm.disconnect()


async def test_staff_status_without_the_permission_is_refused_with_4403(stream, staff_only):
    comm = await sync_to_async(communicator)(stream["path"], staff_only)
    assert await refused_with(comm) == CLOSE_FORBIDDEN
    assert group_members(stream["group"]) == 0


async def test_the_view_permission_without_staff_status_may_watch(stream, auditor):
    comm = await sync_to_async(communicator)(stream["path"], auditor)
    connected, _ = await comm.connect()
    assert connected
    try:
        assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
        assert len((await comm.receive_json_from(timeout=5))["lines"]) == 5
    finally:
        await comm.disconnect()


async def test_open_websockets_are_counted_for_metrics(stream):
    from scheduler_app import metrics

    before = metrics.WEBSOCKETS._value.get()
    comm = await sync_to_async(communicator)(stream["path"], stream["alice"])
    connected, _ = await comm.connect()
    assert connected
    await comm.receive_json_from(timeout=5)
    assert metrics.WEBSOCKETS._value.get() == before + 1
    await comm.disconnect()
    assert metrics.WEBSOCKETS._value.get() == before
    refused = await sync_to_async(communicator)(stream["path"])  # anonymous: refused, never counted
    await refused.connect()
    await refused.disconnect()
    assert metrics.WEBSOCKETS._value.get() == before
