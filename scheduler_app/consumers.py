"""The live log websocket: ``/ws/logs/<plugin_id>/<user_id>/``.

Order on connect matters:
1. authenticate and authorise (the owner or staff) *before* joining any group; a refused
   socket is accepted only to be closed at once with a code the browser can show
   (4401 not logged in, 4403 not allowed, 4404 no such plugin), so it stops retrying;
2. join the group, *then* read the backlog from the database: a line persisted in between is
   both replayed and relayed, and the duplicate is dropped here by id, so there is no gap;
3. relay ``log.lines`` and ``run.status`` group messages (shapes in ``streams.py``).

Messages to the browser: ``{"type": "hello", "jobs": {id: label}, "runs": [...]}``,
``{"type": "lines", "lines": [...], "replay": bool}`` and ``{"type": "run", "run": {...}}``.
Query parameters: ``after=<LogLine id>`` resumes after the last line seen;
``run=<JobRun id>`` narrows the view to one run.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from scheduler_app import selectors, streams
from scheduler_app.models import Plugin
from scheduler_app.session_watch import SessionWatch

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
#: Replayed ids remembered to drop their live duplicates; the newest ones are the only candidates.
_DEDUP_WINDOW = 2000
#: A replayed line's live copy arrives within this many seconds of the replay (publishing is immediate).
_DEDUP_SECONDS = 30.0
#: Runs whose last line number a socket remembers (for gap repair), and the most lines one repair fetches.
_TRACKED_RUNS = 1000
_GAP_MAX = 5000


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    try:
        value = int(values[0])
    except ValueError:
        return None
    return value if value >= 0 else None


# Every browser watching a stream gets the same batch: encode it once per process, not once
# per socket (20 sockets on one stream made JSON encoding the web process's biggest cost).
_ENCODED: OrderedDict[tuple[str, int, int, int], str] = OrderedDict()
_ENCODED_MAX = 256


def _encoded_live(group: str, lines: list[dict[str, Any]]) -> str:
    key = (group, lines[0]["id"], lines[-1]["id"], len(lines))
    text = _ENCODED.get(key)
    if text is None:
        text = json.dumps({"type": "lines", "lines": lines, "replay": False})
        _ENCODED[key] = text
        if len(_ENCODED) > _ENCODED_MAX:
            _ENCODED.popitem(last=False)
    return text


def _layer_notice(layer: Any) -> str:
    """Why live lines cannot arrive, if the configuration makes that certain; else ``""``."""
    from channels.layers import InMemoryChannelLayer
    from django.conf import settings

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
def _plugin_exists(plugin_id: int) -> bool:
    return Plugin.objects.filter(pk=plugin_id).exists()


@database_sync_to_async
def _backlog(plugin_id: int, user_id: int, after: int | None, run_id: int | None) -> tuple[dict, list]:
    return selectors.stream_context(plugin_id, user_id), selectors.replay_lines(
        plugin_id, user_id, after=after, run_id=run_id
    )


class LogConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    session_watch: SessionWatch | None = None

    async def connect(self) -> None:
        self.group = None
        kwargs = self.scope["url_route"]["kwargs"]
        plugin_id, user_id = int(kwargs["plugin_id"]), int(kwargs["user_id"])
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED)
            return
        if user.pk != user_id and not user.is_staff:
            await self._refuse(CLOSE_FORBIDDEN)
            return
        if not await _plugin_exists(plugin_id):
            await self._refuse(CLOSE_NOT_FOUND)
            return

        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        after = _int_param(query, "after")
        self.run_filter = _int_param(query, "run")

        self.group = streams.log_group_name(plugin_id, user_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # Logging out (in any tab) ends this stream within a few seconds: closed with 4401.
        self.session_watch = SessionWatch(self)
        self.session_watch.start()
        # Group messages queue up while this handler runs (Channels dispatches one at a time),
        # so everything relayed later comes after the backlog.
        context, lines = await _backlog(plugin_id, user_id, after, self.run_filter)
        self.replayed = {line["id"] for line in lines[-_DEDUP_WINDOW:]}
        self.dedupe_until = time.monotonic() + _DEDUP_SECONDS
        # Gap repair: the highest line number sent per run, and the id below which lines are
        # history this view deliberately does not show.
        self.floor = after if after is not None else (lines[0]["id"] - 1 if lines else 0)
        self.last_seq: dict[int, int] = {}
        self._note_sent(lines)
        hello = {"type": "hello", "jobs": context["jobs"], "runs": context["runs"]}
        notice = _layer_notice(self.channel_layer)
        if notice:
            hello["notice"] = notice
        await self.send_json(hello)
        await self.send_json({"type": "lines", "lines": lines, "replay": True})

    async def _refuse(self, code: int) -> None:
        # Accept-then-close: closing before accept() is an HTTP 403 in which the browser sees no code.
        await self.accept()
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        if self.session_watch is not None:
            self.session_watch.stop()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The browser has nothing to say; ignore whatever it sends."""

    async def log_lines(self, event: dict[str, Any]) -> None:
        lines = event.get("lines", [])
        if self.replayed:
            if time.monotonic() < self.dedupe_until:
                lines = [line for line in lines if line["id"] not in self.replayed]
            else:  # anything replayed has long been published: stop checking every line
                self.replayed = set()
        if self.run_filter is not None:
            lines = [line for line in lines if line["run"] == self.run_filter]
        if not lines:
            return
        gaps = self._note_sent(lines)
        if gaps:
            # The publisher dropped a batch (Redis outage, overflow): the lines are stored, so
            # fetch them rather than show a log with a hole in it.
            missing = await _missing_lines(gaps, self.floor)
            await self.send_json({"type": "lines", "lines": missing + lines, "replay": False})
        elif len(lines) == len(event.get("lines", ())):
            await self.send(text_data=_encoded_live(self.group or "", lines))
        else:
            await self.send_json({"type": "lines", "lines": lines, "replay": False})

    def _note_sent(self, lines: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
        """Record the lines as sent; return the gaps ``(run, first missing seq, next seq)`` before them."""
        gaps = []
        last_seq = self.last_seq
        for line in lines:
            run, seq = line["run"], line["seq"]
            last = last_seq.get(run)
            expected = 1 if last is None else last + 1
            if seq > expected:
                gaps.append((run, expected, seq))
            if last is None or seq > last:
                last_seq[run] = seq
        if len(last_seq) > _TRACKED_RUNS:
            for run in sorted(last_seq)[: len(last_seq) - _TRACKED_RUNS]:
                del last_seq[run]
        return gaps

    async def run_status(self, event: dict[str, Any]) -> None:
        run = event.get("run") or {}
        if self.run_filter is not None and run.get("id") != self.run_filter:
            return
        await self.send_json({"type": "run", "run": run})
