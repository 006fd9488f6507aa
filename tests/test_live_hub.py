"""The live-log fan-out (``scheduler_app/live_hub.py``) on a real in-memory channel layer.

One subscription per stream and process, whatever the number of viewers; one encoding per
frame, shared by every viewer; a viewer that stops draining is bounded, told it fell behind
and closed, while the others keep getting every frame in order; frames that arrive before a
viewer's replay are held, then deduplicated against it; gaps are repaired from the store.
The end-to-end versions (daphne, real sockets, a client that stops reading) are in
``tests/test_live_logs_slow_viewer.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from scheduler_app import live_bus, live_hub
from scheduler_app.live_hub import CLOSE_FELL_BEHIND, LiveHub, Viewer, text_frame
from tests.processes import free_port, wait_until

GROUP = "logs.1.2"


def line(id: int, seq: int, run: int = 7, message: str = "x") -> dict[str, Any]:
    return {"id": id, "run": run, "job": 3, "seq": seq, "ts": "2026-11-27T00:00:00+00:00", "level": "INFO",
            "message": message}  # fmt: skip


class Socket:
    """What a viewer writes to: text sends (ASGI path) and, with ``fast``, raw frame writes."""

    def __init__(self, *, fast: bool = False) -> None:
        self.texts: list[str] = []
        self.wires: list[bytes] = []
        self.closed: int | None = None
        self.full = False
        self.fast = fast
        self.fetches: list[tuple[list, int]] = []

    async def send_text(self, text: str) -> None:
        self.texts.append(text)

    async def close(self, code: int) -> None:
        self.closed = code

    async def fetch_missing(self, gaps: list, floor: int) -> list[dict[str, Any]]:
        self.fetches.append((gaps, floor))
        return [line(100 + seq, seq) for run, first, stop in gaps for seq in range(first, stop)]

    # WriteFlow
    def paused(self) -> bool:
        return self.full

    def write_frame(self, wire: bytes) -> bool:
        self.wires.append(wire)
        return True

    def viewer(self, **kwargs: Any) -> Viewer:
        return Viewer(
            self.send_text, self.close, fetch_missing=self.fetch_missing, flow=self if self.fast else None, **kwargs
        )

    def messages(self) -> list[dict[str, Any]]:
        texts = self.texts + [unframe(w) for w in self.wires]
        return [json.loads(t) for t in texts]

    def line_ids(self) -> list[int]:
        return [x["id"] for m in self.messages() if m["type"] == "lines" for x in m["lines"]]


def unframe(wire: bytes) -> str:
    assert wire[0] == 0x81  # FIN + text
    size = wire[1]
    offset = 2
    if size == 126:
        size, offset = int.from_bytes(wire[2:4], "big"), 4
    elif size == 127:
        size, offset = int.from_bytes(wire[2:10], "big"), 10
    assert len(wire) == offset + size
    return wire[offset:].decode()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def publish(layer: InMemoryChannelLayer, lines: list[dict[str, Any]]) -> None:
    await layer.group_send(GROUP, {"type": "log.lines", "lines": lines})


@pytest.fixture
def layer() -> InMemoryChannelLayer:
    return InMemoryChannelLayer()


async def test_a_hundred_viewers_share_one_subscription_and_one_encoding(layer):
    hub = LiveHub(layer)
    sockets = [Socket() for _ in range(100)]
    viewers = [s.viewer() for s in sockets]
    for v in viewers:
        await hub.join(GROUP, v)
        v.start(floor=0)
    assert len(layer.groups[GROUP]) == 1  # one channel for the process, not one per socket

    await publish(layer, [line(1, 1), line(2, 2)])
    await until(lambda: all(s.texts for s in sockets))
    texts = [s.texts[0] for s in sockets]
    assert all(t is texts[0] for t in texts)  # encoded once, the same object sent to all
    assert json.loads(texts[0]) == {"type": "lines", "lines": [line(1, 1), line(2, 2)], "replay": False}

    for v in viewers:
        await hub.leave(GROUP, v)
    assert not layer.groups.get(GROUP)  # the last viewer out leaves the group
    assert hub.feeds == {}


async def test_viewers_with_a_write_flow_get_the_same_frame_bytes(layer):
    hub = LiveHub(layer)
    sockets = [Socket(fast=True) for _ in range(3)]
    for s in sockets:
        v = s.viewer()
        await hub.join(GROUP, v)
        v.start(floor=0)
    await publish(layer, [line(1, 1)])
    await until(lambda: all(s.wires for s in sockets))
    assert all(s.wires[0] is sockets[0].wires[0] for s in sockets)
    assert json.loads(unframe(sockets[0].wires[0]))["lines"] == [line(1, 1)]
    assert all(not s.texts for s in sockets)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_text_frames_follow_rfc_6455_lengths(size):
    text = "é" * (size // 2) + "a" * (size % 2)
    assert unframe(text_frame(text)) == text


async def test_a_viewer_that_stops_draining_is_bounded_told_and_closed_while_others_get_everything(layer, monkeypatch):
    monkeypatch.setattr(live_hub, "BEHIND_GRACE", 0.05)
    hub = LiveHub(layer)
    stalled, healthy = Socket(fast=True), Socket(fast=True)
    slow_viewer = stalled.viewer(max_queued_bytes=20_000)
    good_viewer = healthy.viewer(max_queued_bytes=20_000)
    for v in (slow_viewer, good_viewer):
        await hub.join(GROUP, v)
        v.start(floor=0)
    stalled.full = True  # its socket buffer is full: nothing more may be written to it

    peak = 0
    for seq in range(1, 201):
        await publish(layer, [line(seq, seq, message="m" * 200)])
        await settle()
        peak = max(peak, slow_viewer.queued_bytes)
    await until(lambda: stalled.closed is not None)

    assert peak <= 20_000
    assert slow_viewer.fell_behind and slow_viewer.queued_bytes == 0
    assert stalled.closed == CLOSE_FELL_BEHIND
    assert stalled.messages()[-1] == {"type": "behind"}
    assert healthy.line_ids() == list(range(1, 201))  # every line, once, in order
    assert healthy.closed is None
    await hub.leave(GROUP, slow_viewer)
    await hub.leave(GROUP, good_viewer)


async def test_a_paused_socket_gets_its_queue_in_order_once_it_drains(layer):
    hub = LiveHub(layer)
    sock = Socket(fast=True)
    viewer = sock.viewer()
    await hub.join(GROUP, viewer)
    viewer.start(floor=0)
    sock.full = True
    for seq in range(1, 6):
        await publish(layer, [line(seq, seq)])
    await settle()
    assert sock.wires == []
    sock.full = False
    await until(lambda: len(sock.wires) == 5)
    assert sock.line_ids() == [1, 2, 3, 4, 5]
    await hub.leave(GROUP, viewer)


async def test_frames_before_start_are_held_then_deduplicated_against_the_replay(layer):
    hub = LiveHub(layer)
    sock = Socket()
    viewer = sock.viewer()
    await hub.join(GROUP, viewer)
    # Published while the replay is read: lines 3-4 are in both, 5 only live.
    await publish(layer, [line(3, 3), line(4, 4), line(5, 5)])
    await settle()
    assert sock.texts == []
    viewer.note_replay([line(1, 1), line(2, 2), line(3, 3), line(4, 4)])
    viewer.start(floor=0)
    await until(lambda: sock.texts)
    assert sock.line_ids() == [5]
    await hub.leave(GROUP, viewer)


async def test_a_one_run_view_gets_only_its_run_and_its_status(layer):
    hub = LiveHub(layer)
    sock = Socket()
    viewer = sock.viewer(run_filter=8)
    await hub.join(GROUP, viewer)
    viewer.start(floor=0)
    await publish(layer, [line(1, 1, run=7), line(2, 1, run=8)])
    await layer.group_send(GROUP, {"type": "run.status", "run": {"id": 7, "status": "failed"}})
    await layer.group_send(GROUP, {"type": "run.status", "run": {"id": 8, "status": "succeeded"}})
    await until(lambda: len(sock.texts) == 2)
    assert sock.messages() == [
        {"type": "lines", "lines": [line(2, 1, run=8)], "replay": False},
        {"type": "run", "run": {"id": 8, "status": "succeeded"}},
    ]
    await hub.leave(GROUP, viewer)


async def test_a_dropped_batch_is_fetched_before_the_next_one(layer):
    hub = LiveHub(layer)
    sock = Socket(fast=True)
    viewer = sock.viewer()
    await hub.join(GROUP, viewer)
    viewer.note_replay([line(1, 1)])
    viewer.start(floor=1)
    # seq 2-3 were stored but their batch never arrived; seq 4 does, then 5 (a hole inside it at 6).
    await publish(layer, [line(104, 4)])
    await publish(layer, [line(105, 5), line(107, 7)])
    await until(lambda: len(sock.wires) == 2)
    assert sock.fetches == [([(7, 2, 4)], 1), ([(7, 6, 7)], 1)]
    assert [(x["id"], x["seq"]) for m in sock.messages() for x in m["lines"]] == [
        (102, 2), (103, 3), (104, 4), (105, 5), (106, 6), (107, 7)
    ]  # fmt: skip
    await hub.leave(GROUP, viewer)


async def test_the_feed_survives_a_failing_channel_layer(layer, monkeypatch):
    monkeypatch.setattr(live_bus, "RECEIVE_RETRY", 0.01)
    hub = LiveHub(layer)
    sock = Socket()
    viewer = sock.viewer()
    await hub.join(GROUP, viewer)
    viewer.start(floor=0)
    real_receive = layer.receive
    failures = 0

    async def flaky(channel: str) -> dict:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise ConnectionError("redis went away")
        return await real_receive(channel)

    monkeypatch.setattr(layer, "receive", flaky)
    await publish(layer, [line(1, 1)])
    await until(lambda: sock.texts)
    assert sock.line_ids() == [1] and failures == 3
    await hub.leave(GROUP, viewer)


async def test_each_event_loop_has_its_own_hub(layer):
    hub = live_hub.hub_for(layer)
    assert live_hub.hub_for(layer) is hub
    other = await asyncio.to_thread(lambda: asyncio.run(_hub_in_new_loop(layer)))
    assert other is not hub


async def _hub_in_new_loop(layer: InMemoryChannelLayer) -> LiveHub:
    return live_hub.hub_for(layer)


def test_replays_are_cut_into_messages_daphne_accepts():
    lines = [line(i, i, message="é" * 1000 if i % 2 else "a" * 3000) for i in range(1, 2001)]
    parts = live_hub.by_size(lines)
    assert [x for part in parts for x in part] == lines  # nothing lost, order kept
    assert all(len(json.dumps({"type": "lines", "lines": p, "replay": True})) < 1_048_576 for p in parts)
    assert len(parts) > 1
    assert live_hub.by_size([]) == [[]]  # an empty replay is still one message


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def test_redis_carries_a_flush_in_one_publish_round_and_each_stream_to_its_subscribers():
    host = {"address": REDIS_URL, "socket_connect_timeout": 5, "max_connections": 50, "timeout": 20}
    prefix = f"test-{os.environ.get('CHANNEL_LAYER_PREFIX', 'x')}-{uuid.uuid4().hex[:8]}"
    web, scheduler = live_bus.RedisBus(host, prefix), live_bus.RedisBus(host, prefix)
    got: dict[str, list[dict]] = {"logs.1.1": [], "logs.1.2": []}
    for group, received in got.items():
        await web.subscribe(group, received.append)
    flush = [("logs.1.1", {"type": "log.lines", "lines": [line(i, i)]}) for i in range(1, 4)]
    flush += [("logs.1.2", {"type": "run.status", "run": {"id": 9, "status": "running"}}), ("logs.9.9", {"x": 1})]
    assert await scheduler.publish_many(flush) == 5
    await until(lambda: len(got["logs.1.1"]) == 3 and got["logs.1.2"])
    assert [m["lines"][0]["id"] for m in got["logs.1.1"]] == [1, 2, 3]
    assert got["logs.1.2"] == [{"type": "run.status", "run": {"id": 9, "status": "running"}}]

    await web.unsubscribe("logs.1.1")
    await scheduler.publish_many([("logs.1.1", {"type": "log.lines", "lines": [line(4, 4)]})])
    await scheduler.publish_many([("logs.1.2", {"type": "log.lines", "lines": [line(5, 5)]})])
    await until(lambda: len(got["logs.1.2"]) == 2)
    assert len(got["logs.1.1"]) == 3  # no longer subscribed
    await web.close()
    await scheduler.close()


def test_the_carrier_follows_the_channel_layer(layer):
    from channels_redis.core import RedisChannelLayer

    from jobscheduler.env import redis_channel_layer

    assert isinstance(live_bus.bus_for(layer), live_bus.ChannelLayerBus)
    config = redis_channel_layer(REDIS_URL, prefix="p")["CONFIG"]
    bus = live_bus.bus_for(RedisChannelLayer(**config))
    assert isinstance(bus, live_bus.RedisBus) and bus.channel("logs.1.2") == "p:live:logs.1.2"


async def test_a_web_process_subscription_comes_back_after_redis_restarts(tmp_path, monkeypatch):
    monkeypatch.setattr(live_bus, "RECEIVE_RETRY", 0.1)
    port = free_port()
    server = await asyncio.to_thread(_redis_server, port, tmp_path)
    host = {"address": f"redis://127.0.0.1:{port}/0", "socket_connect_timeout": 2}
    web, scheduler = live_bus.RedisBus(host, "restart"), live_bus.RedisBus(host, "restart")
    got: list[dict] = []
    try:
        await web.subscribe(GROUP, got.append)
        await scheduler.publish_many([(GROUP, {"type": "log.lines", "lines": [line(1, 1)]})])
        await until(lambda: len(got) == 1)

        server.terminate()
        await asyncio.to_thread(server.wait, 10)
        server = await asyncio.to_thread(_redis_server, port, tmp_path)

        async def published_and_received() -> bool:
            try:
                await scheduler.publish_many([(GROUP, {"type": "log.lines", "lines": [line(2, 2)]})])
            except Exception:
                return False  # the publisher's connection is being re-made
            await asyncio.sleep(0.2)
            return len(got) > 1

        deadline = asyncio.get_running_loop().time() + 15
        while not await published_and_received():
            assert asyncio.get_running_loop().time() < deadline, "the subscription never came back"
        assert got[-1]["lines"] == [line(2, 2)]
    finally:
        await web.close()
        await scheduler.close()
        server.terminate()
        await asyncio.to_thread(server.wait, 10)


def _redis_server(port: int, workdir) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0,
               10, "redis")  # fmt: skip
    return proc
