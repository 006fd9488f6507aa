"""The live log websocket: ``/ws/logs/<plugin_id>/<user_id>/``.

Thin on purpose: authenticate, authorise, subscribe, relay. The fan-out (one subscription per
stream and process, shared encoding, per-socket bounded queues, gap repair) is ``live_hub.py``.

Order on connect matters:
1. authenticate and authorise (``access.can_view``: the owner, or a user allowed to read all)
   *before* subscribing to anything; a refused socket is accepted only to be closed at once
   with a code the browser can show (4401 not logged in, 4403 not allowed, 4404 no such
   plugin), so it stops retrying;
2. join the stream's feed, *then* read the backlog from the database: a line persisted in
   between is both replayed and relayed, and the viewer drops the duplicate by id, so there
   is no gap;
3. relay ``log.lines`` and ``run.status`` messages (shapes in ``streams.py``; carried by
   ``live_bus.py``).

Messages to the browser: ``{"type": "hello", "jobs": {id: label}, "runs": [...]}``,
``{"type": "lines", "lines": [...], "replay": bool}``, ``{"type": "run", "run": {...}}`` and
``{"type": "behind"}`` (then close code 4429: this socket fell too far behind; reconnect with
``after=``). Query parameters: ``after=<LogLine id>`` resumes after the last line seen;
``run=<JobRun id>`` narrows the view to one run.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from scheduler_app import access, live_hub, metrics, selectors, socket_flow, streams
from scheduler_app.live_hub import CLOSE_FELL_BEHIND as CLOSE_FELL_BEHIND
from scheduler_app.models import Plugin
from scheduler_app.session_watch import SessionWatch

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
#: The most lines one gap repair fetches.
_GAP_MAX = 5000
#: The most stored lines one reconnect replays (in chunks of selectors.REPLAY_MAX).
CATCH_UP_MAX = 100_000
#: The ASGI scope extension through which the server reports a socket's send buffer (socket_flow.py).
WRITE_FLOW_EXTENSION = socket_flow.EXTENSION


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    try:
        value = int(values[0])
    except ValueError:
        return None
    return value if value >= 0 else None


def _layer_notice(layer: Any) -> str:
    """Why live lines cannot arrive, if the configuration makes that certain; else ``""``."""
    from channels.layers import InMemoryChannelLayer

    if isinstance(layer, InMemoryChannelLayer) and not settings.SCHEDULER["EMBEDDED"]:
        # The scheduler runs in another process and the in-memory layer never leaves this one.
        return (
            "This web server has no shared channel layer (REDIS_URL is not set) and no embedded "
            "scheduler: stored lines are shown, new ones only after a reload."
        )
    return ""


@database_sync_to_async
def _missing_lines(gaps: list[tuple[int, int, int]], floor: int) -> list[dict[str, Any]]:
    return selectors.lines_between(gaps, after_id=floor, limit=_GAP_MAX)


@database_sync_to_async
def _may_view(user: Any, owner_id: int) -> bool:
    # A thread: checking a permission may read the user's groups from the database.
    return access.can_view(user, owner_id)


@database_sync_to_async
def _replay_after(plugin_id: int, user_id: int, after: int, run_id: int | None) -> list[dict[str, Any]]:
    return selectors.replay_lines(plugin_id, user_id, after=after, run_id=run_id)


@database_sync_to_async
def _plugin_exists(plugin_id: int) -> bool:
    return Plugin.objects.filter(pk=plugin_id).exists()


@database_sync_to_async
def _backlog(plugin_id: int, user_id: int, after: int | None, run_id: int | None) -> tuple[dict, list]:
    return selectors.stream_context(plugin_id, user_id), selectors.replay_lines(
        plugin_id, user_id, after=after, run_id=run_id
    )


class LogConsumer(AsyncJsonWebsocketConsumer):
    # No channel of its own: one more channel-layer reader per socket would cost a Redis round
    # trip per message; live frames come through the process's feed (live_hub) instead.
    channel_layer_alias = None
    group: str | None = None
    session_watch: SessionWatch | None = None
    viewer: live_hub.Viewer | None = None

    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        plugin_id, user_id = int(kwargs["plugin_id"]), int(kwargs["user_id"])
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED)
            return
        if not await _may_view(user, user_id):
            await self._refuse(CLOSE_FORBIDDEN)
            return
        if not await _plugin_exists(plugin_id):
            await self._refuse(CLOSE_NOT_FOUND)
            return

        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        after = _int_param(query, "after")
        run_filter = _int_param(query, "run")

        self.viewer = live_hub.Viewer(
            self._send_text,
            self._close_with,
            fetch_missing=_missing_lines,
            run_filter=run_filter,
            flow=self.scope.get("extensions", {}).get(WRITE_FLOW_EXTENSION),
            max_queued_bytes=settings.LIVE_LOG_VIEWER_BUFFER,
        )
        self.group = streams.log_group_name(plugin_id, user_id)
        await live_hub.hub_for(get_channel_layer()).join(self.group, self.viewer)
        await self.accept()
        metrics.websocket_opened()
        # Logging out (in any tab) ends this stream within a few seconds: closed with 4401.
        self.session_watch = SessionWatch(self)
        self.session_watch.start()
        # Live frames queue in the viewer until start(), so everything relayed comes after the backlog.
        context, lines = await _backlog(plugin_id, user_id, after, run_filter)
        hello = {"type": "hello", "jobs": context["jobs"], "runs": context["runs"]}
        notice = _layer_notice(get_channel_layer())
        if notice:
            hello["notice"] = notice
        await self.send_json(hello)
        floor = after if after is not None else (lines[0]["id"] - 1 if lines else 0)
        await self._replay(lines)
        # A resume that found a full chunk catches up in further chunks (a socket that fell far
        # behind), each sent once the previous one has left the server's buffer.
        sent = len(lines)
        while after is not None and len(lines) == selectors.REPLAY_MAX and sent < CATCH_UP_MAX:
            await self.viewer.writable()
            lines = await _replay_after(plugin_id, user_id, lines[-1]["id"], run_filter)
            await self._replay(lines)
            sent += len(lines)
        self.viewer.start(floor)

    async def _replay(self, lines: list[dict[str, Any]]) -> None:
        assert self.viewer is not None
        self.viewer.note_replay(lines)
        for part in live_hub.by_size(lines):
            await self.send_json({"type": "lines", "lines": part, "replay": True})

    async def _refuse(self, code: int) -> None:
        # Accept-then-close: closing before accept() is an HTTP 403 in which the browser sees no code.
        await self.accept()
        await self.close(code=code)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def _close_with(self, code: int) -> None:
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        if self.session_watch is not None:
            self.session_watch.stop()
        if self.group is not None and self.viewer is not None:
            metrics.websocket_closed()
            await live_hub.hub_for(get_channel_layer()).leave(self.group, self.viewer)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The browser has nothing to say; ignore whatever it sends."""
