"""The live-log fan-out: one channel-layer subscription per stream and process, many viewers.

A web process may have a hundred sockets watching one stream. If every socket had its own
channel, one published batch would become a hundred channel-layer messages (a hundred Redis
writes and reads), a hundred decodes and a hundred JSON encodings. Here a process joins each
stream's group ONCE (a ``StreamFeed`` with its own channel), and each batch that arrives is
decoded once, described once (``Frame``: ids, runs, sequence ranges) and encoded once; every
local ``Viewer`` then sends the same text, unless it must filter (a one-run view, lines it
already got in its replay) or repair a gap.

Each viewer has a bounded queue drained by its own task, so a slow socket never holds up the
feed or the other viewers. A viewer whose queue passes ``max_queued_bytes`` (a backgrounded
tab, a bad network) is dropped from the live stream: it is sent ``{"type": "behind"}`` and
closed with ``CLOSE_FELL_BEHIND``; the browser reconnects with ``?after=<last id it showed>``
and catches up from the database, like after any reconnect. Memory per viewer is therefore
bounded by the queue, plus what the server buffers for the socket (see ``socket_flow.py``).

The same code runs with the in-memory channel layer (``./dev.sh run``: one process, no
Redis) and with Redis (any number of web processes; each joins the group once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger("scheduler_app.live_hub")

#: Close code telling the browser it fell behind and should resume from the database.
CLOSE_FELL_BEHIND = 4429
#: Frames a viewer may hold unsent before it is told it fell behind (bytes of encoded text).
MAX_QUEUED_BYTES = 1_000_000
#: Replayed ids remembered to drop their live duplicates; the newest ones are the only candidates.
DEDUP_WINDOW = 2000
#: A replayed line's live copy arrives within this many seconds of the replay (publishing is immediate).
DEDUP_SECONDS = 30.0
#: Runs whose last line number a viewer remembers (for gap repair).
TRACKED_RUNS = 1000
#: How often a viewer whose socket buffer is full checks whether it drained (seconds).
FLOW_POLL = 0.05
#: Pause before a feed retries after its channel layer failed (seconds).
RECEIVE_RETRY = 1.0

Gap = tuple[int, int, int]  # (run, first missing seq, next seq present)
SendText = Callable[[str], Awaitable[None]]
FetchMissing = Callable[[list[Gap], int], Awaitable[list[dict[str, Any]]]]


class WriteFlow(Protocol):
    """What the ASGI server tells about one socket's outgoing buffer (``socket_flow.py``)."""

    def paused(self) -> bool:
        """True while the server holds more unsent bytes for this socket than it wants to."""
        ...


class Frame:
    """One published message as every viewer of the stream sees it, described once."""

    __slots__ = ("_text", "inner_gaps", "kind", "lines", "max_id", "min_id", "ranges", "run")

    def __init__(self, message: dict[str, Any]) -> None:
        self._text: str | None = None
        if message.get("type") == "run.status":
            self.kind = "run"
            self.run: dict[str, Any] = message.get("run") or {}
            self.lines: list[dict[str, Any]] = []
            self.min_id = self.max_id = 0
            self.ranges: dict[int, tuple[int, int]] = {}
            self.inner_gaps: list[Gap] = []
            return
        self.kind = "lines"
        self.run = {}
        self.lines = message.get("lines") or []
        ids = [line["id"] for line in self.lines]
        self.min_id = min(ids, default=0)
        self.max_id = max(ids, default=0)
        self.ranges, self.inner_gaps = describe(self.lines)

    @property
    def text(self) -> str:
        """The frame as the browser gets it, encoded on first use and then shared."""
        if self._text is None:
            if self.kind == "run":
                self._text = json.dumps({"type": "run", "run": self.run})
            else:
                self._text = json.dumps({"type": "lines", "lines": self.lines, "replay": False})
        return self._text


def describe(lines: list[dict[str, Any]]) -> tuple[dict[int, tuple[int, int]], list[Gap]]:
    """Per run, the first and last sequence number in ``lines``; and the holes between them."""
    ranges: dict[int, tuple[int, int]] = {}
    gaps: list[Gap] = []
    for line in lines:
        run, seq = line["run"], line["seq"]
        span = ranges.get(run)
        if span is None:
            ranges[run] = (seq, seq)
            continue
        first, last = span
        if seq > last + 1:
            gaps.append((run, last + 1, seq))
        ranges[run] = (first, max(last, seq))
    return ranges, gaps


class Viewer:
    """One socket's view of a stream: its filters, its gap repair and its bounded send queue.

    Frames are queued from the moment the viewer joins (before its replay is read), and sent
    only after ``start()``, so nothing persisted between the join and the replay is lost; the
    lines that arrive both ways are dropped here by id.
    """

    def __init__(
        self,
        send_text: SendText,
        close: Callable[[int], Awaitable[None]],
        *,
        fetch_missing: FetchMissing,
        run_filter: int | None = None,
        flow: WriteFlow | None = None,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._send_text = send_text
        self._close = close
        self._fetch_missing = fetch_missing
        self.run_filter = run_filter
        self._flow = flow
        self.max_queued_bytes = max_queued_bytes
        self._queue: deque[Frame] = deque()
        self.queued_bytes = 0
        self.fell_behind = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.replayed: set[int] = set()
        self._replayed_max = 0
        self._dedupe_until = 0.0
        self.floor = 0
        self.last_seq: dict[int, int] = {}
        self.sent_frames = 0

    # -- called by the consumer
    def start(self, replayed: list[dict[str, Any]], floor: int) -> None:
        """Begin sending live frames; ``replayed`` are the lines the socket just got from the database."""
        self.replayed = {line["id"] for line in replayed[-DEDUP_WINDOW:]}
        self._replayed_max = max(self.replayed, default=0)
        self._dedupe_until = time.monotonic() + DEDUP_SECONDS
        # Lines below the floor are history this view deliberately does not show: never fetch them.
        self.floor = floor
        self._note(*describe(replayed))
        self._task = asyncio.get_running_loop().create_task(self._sender(), name="live log viewer")

    async def stop(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    # -- called by the feed, on the loop, once per frame: must stay cheap and never wait
    def offer(self, frame: Frame) -> None:
        if self.fell_behind:
            return
        size = len(frame.text)
        if self.queued_bytes + size > self.max_queued_bytes:
            # Buffering more would let one stalled socket eat the process's memory: drop what is
            # queued and let the browser catch up from the database instead.
            self.fell_behind = True
            self._queue.clear()
            self.queued_bytes = 0
            self._wake.set()
            return
        self._queue.append(frame)
        self.queued_bytes += size
        self._wake.set()

    async def _sender(self) -> None:
        while True:
            if self.fell_behind:
                await self._send_text(json.dumps({"type": "behind"}))
                await self._close(CLOSE_FELL_BEHIND)
                return
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._flow is not None and self._flow.paused():
                # The server already holds a full buffer for this socket: keep frames here,
                # where they are counted against the bound, until it drains.
                await asyncio.sleep(FLOW_POLL)
                continue
            frame = self._queue.popleft()
            self.queued_bytes -= len(frame.text)
            text = await self._render(frame)
            if text is not None:
                await self._send_text(text)
                self.sent_frames += 1

    async def _render(self, frame: Frame) -> str | None:
        """The text this viewer sends for ``frame``: the shared encoding when nothing differs."""
        if frame.kind == "run":
            if self.run_filter is not None and frame.run.get("id") != self.run_filter:
                return None
            return frame.text
        lines = frame.lines
        ranges, inner_gaps = frame.ranges, frame.inner_gaps
        filtered = False
        if self.replayed:
            if time.monotonic() >= self._dedupe_until:
                self.replayed = set()  # anything replayed has long been published: stop checking
            elif frame.min_id <= self._replayed_max:
                lines = [line for line in lines if line["id"] not in self.replayed]
                filtered = len(lines) != len(frame.lines)
        if self.run_filter is not None and set(ranges) != {self.run_filter}:
            lines = [line for line in lines if line["run"] == self.run_filter]
            filtered = True
        if not lines:
            return None
        if filtered:
            ranges, inner_gaps = describe(lines)
        gaps = self._note(ranges, inner_gaps)
        if gaps:
            # The publisher dropped a batch (Redis outage, overflow): the lines are stored, so
            # fetch them rather than show a log with a hole in it.
            missing = await self._fetch_missing(gaps, self.floor)
            return json.dumps({"type": "lines", "lines": missing + lines, "replay": False})
        if not filtered:
            return frame.text
        return json.dumps({"type": "lines", "lines": lines, "replay": False})

    def _note(self, ranges: dict[int, tuple[int, int]], inner_gaps: list[Gap]) -> list[Gap]:
        """Record the runs' sequence ranges as sent; return the gaps before and inside them."""
        gaps: list[Gap] = []
        last_seq = self.last_seq
        for run, (first, last) in ranges.items():
            seen = last_seq.get(run)
            expected = 1 if seen is None else seen + 1
            if first > expected:
                gaps.append((run, expected, first))
            if seen is None or last > seen:
                last_seq[run] = last
        gaps += inner_gaps
        if len(last_seq) > TRACKED_RUNS:
            for run in sorted(last_seq)[: len(last_seq) - TRACKED_RUNS]:
                del last_seq[run]
        return gaps


class StreamFeed:
    """One group's subscription in this process: a channel joined to the group, one reader task."""

    def __init__(self, layer: Any, group: str) -> None:
        self.layer = layer
        self.group = group
        self.channel = ""
        self.viewers: list[Viewer] = []
        self.frames = 0
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        self._task = asyncio.get_running_loop().create_task(self._reader(), name=f"live feed {self.group}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.layer.group_discard(self.group, self.channel)
        except Exception as exc:  # Redis down: the membership expires by itself
            log.warning("leaving %s failed: %s: %s", self.group, type(exc).__name__, exc)

    async def _reader(self) -> None:
        failing = False
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning(
                        "live feed %s: the channel layer failed (%s: %s); retrying",
                        self.group,
                        type(exc).__name__,
                        exc,
                    )
                failing = True
                await asyncio.sleep(RECEIVE_RETRY)
                continue
            failing = False
            self.dispatch(message)

    def dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") not in ("log.lines", "run.status"):
            return
        frame = Frame(message)
        self.frames += 1
        for viewer in self.viewers:
            viewer.offer(frame)


class LiveHub:
    """The feeds of one process (one event loop), opened on first viewer and closed after the last."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.feeds: dict[str, StreamFeed] = {}
        self._lock = asyncio.Lock()

    async def join(self, group: str, viewer: Viewer) -> StreamFeed:
        async with self._lock:
            feed = self.feeds.get(group)
            if feed is None:
                feed = StreamFeed(self.layer, group)
                await feed.open()
                self.feeds[group] = feed
            feed.viewers.append(viewer)
            return feed

    async def leave(self, group: str, viewer: Viewer) -> None:
        await viewer.stop()
        async with self._lock:
            feed = self.feeds.get(group)
            if feed is None or viewer not in feed.viewers:
                return
            feed.viewers.remove(viewer)
            if not feed.viewers:
                del self.feeds[group]
                await feed.close()


_HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LiveHub] = weakref.WeakKeyDictionary()


def hub_for(layer: Any) -> LiveHub:
    """This event loop's hub for ``layer`` (made on first use; tests each get a fresh loop)."""
    loop = asyncio.get_running_loop()
    hub = _HUBS.get(loop)
    if hub is None or hub.layer is not layer:
        hub = _HUBS[loop] = LiveHub(layer)
    return hub
