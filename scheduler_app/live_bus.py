"""How live-log messages travel from the log publisher (scheduler) to the web processes.

Two carriers, chosen from the configured channel layer by ``bus_for(layer)``, so the publisher
and the web side always agree:

- **Redis pub/sub** (``RedisBus``, when the layer is channels_redis): the publisher sends every
  message of a writer flush in ONE pipelined round trip (``PUBLISH <prefix>:live:<group>``),
  and each web process holds ONE subscriber connection, subscribed once per watched stream,
  from which Redis pushes messages (no request per message). Through the channel layer each
  message cost a Lua script on send and a blocking pop per message and process on receive:
  with 100 users' streams at 1,000 lines/s in total that was ~2,000 round trips a second,
  and lines arrived seconds late.
- **the channel layer itself** (``ChannelLayerBus``, any other layer, i.e. the in-memory one
  of ``./dev.sh run``: one process, no Redis): ``group_send`` to the stream's group, and one
  channel per watched stream joined to it. Tests that ``group_send`` to a stream's group use
  this carrier too.

Messages keep the channel-layer shapes of ``streams.py`` (``{"type": "log.lines", ...}``,
``{"type": "run.status", ...}``); on Redis they are JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("scheduler_app.live_bus")

#: Pause before a subscription retries after its connection failed (seconds).
RECEIVE_RETRY = 1.0

_SOCKET_OPTIONS = {"socket_timeout", "socket_connect_timeout", "socket_keepalive", "health_check_interval"}

Deliver = Callable[[dict[str, Any]], None]


class ChannelLayerBus:
    """Live messages over the configured channel layer: a channel per watched stream."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._subscriptions: dict[str, tuple[str, asyncio.Task[None]]] = {}

    async def publish_many(self, messages: list[tuple[str, dict[str, Any]]]) -> int:
        sent = 0
        for group, message in messages:
            await self.layer.group_send(group, message)
            sent += 1
        return sent

    async def subscribe(self, group: str, deliver: Deliver) -> None:
        channel = await self.layer.new_channel()
        await self.layer.group_add(group, channel)
        task = asyncio.get_running_loop().create_task(self._reader(group, channel, deliver), name=f"live {group}")
        self._subscriptions[group] = (channel, task)

    async def unsubscribe(self, group: str) -> None:
        channel, task = self._subscriptions.pop(group)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:
            await self.layer.group_discard(group, channel)
        except Exception as exc:  # the layer is down: the membership expires by itself
            log.warning("leaving %s failed: %s: %s", group, type(exc).__name__, exc)

    async def close(self) -> None:
        for group in list(self._subscriptions):
            await self.unsubscribe(group)

    async def _reader(self, group: str, channel: str, deliver: Deliver) -> None:
        failing = False
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("live feed %s: the channel layer failed (%s: %s); retrying", group,
                                type(exc).__name__, exc)  # fmt: skip
                failing = True
                await asyncio.sleep(RECEIVE_RETRY)
                continue
            failing = False
            deliver(message)


class RedisBus:
    """Live messages over Redis pub/sub: pipelined publishing, one subscriber connection per process."""

    def __init__(self, host: dict[str, Any], prefix: str) -> None:
        self._host = host
        self.prefix = prefix
        self._client: Any = None
        self._pubsub: Any = None
        self._handlers: dict[str, Deliver] = {}
        self._reader_task: asyncio.Task[None] | None = None

    def channel(self, group: str) -> str:
        return f"{self.prefix}:live:{group}"

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio

            # Only the socket options: the rest of a host entry configures channels_redis's pool.
            options = {k: v for k, v in self._host.items() if k in _SOCKET_OPTIONS}
            self._client = redis.asyncio.Redis.from_url(self._host["address"], **options)
        return self._client

    async def publish_many(self, messages: list[tuple[str, dict[str, Any]]]) -> int:
        async with self._redis().pipeline(transaction=False) as pipe:
            for group, message in messages:
                pipe.publish(self.channel(group), json.dumps(message))
            await pipe.execute()
        return len(messages)

    async def subscribe(self, group: str, deliver: Deliver) -> None:
        channel = self.channel(group)
        self._handlers[channel] = deliver
        if self._pubsub is None:
            self._pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
        # SUBSCRIBE is on the wire before the caller reads its backlog from the database, so a
        # line committed after that read is published after Redis subscribed us: no gap.
        await self._pubsub.subscribe(channel)
        if self._reader_task is None or self._reader_task.done():
            self._reader_task = asyncio.get_running_loop().create_task(self._reader(), name="live subscriber")

    async def unsubscribe(self, group: str) -> None:
        channel = self.channel(group)
        self._handlers.pop(channel, None)
        try:
            await self._pubsub.unsubscribe(channel)
        except Exception as exc:  # the connection is gone: the reader resubscribes only what is left
            log.warning("unsubscribing %s failed: %s: %s", channel, type(exc).__name__, exc)

    async def close(self) -> None:
        """Stop the subscriber and close the connections (tests; a web process keeps its bus)."""
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._client is not None:
            await self._client.aclose()
        self._client = self._pubsub = self._reader_task = None
        self._handlers.clear()

    async def _reader(self) -> None:
        failing = False
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("live subscription to Redis failed (%s: %s); reconnecting", type(exc).__name__, exc)
                failing = True
                await asyncio.sleep(RECEIVE_RETRY)
                await self._resubscribe()
                continue
            if failing:
                failing = False
                log.warning("live subscription to Redis works again")
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            deliver = self._handlers.get(channel.decode() if isinstance(channel, bytes) else channel)
            if deliver is not None:
                deliver(json.loads(message["data"]))

    async def _resubscribe(self) -> None:
        try:
            await self._pubsub.aclose()
        except Exception:
            pass
        self._pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
        try:
            if self._handlers:
                await self._pubsub.subscribe(*self._handlers)
        except Exception:
            pass  # still down: the next read fails and we come back here


def bus_for(layer: Any) -> ChannelLayerBus | RedisBus:
    """The carrier for live messages on ``layer``: Redis pub/sub for channels_redis, else the layer."""
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:  # pragma: no cover - channels_redis is a dependency
        return ChannelLayerBus(layer)
    if isinstance(layer, RedisChannelLayer) and layer.hosts and "address" in layer.hosts[0]:
        return RedisBus(dict(layer.hosts[0]), layer.prefix)
    return ChannelLayerBus(layer)
