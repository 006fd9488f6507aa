"""The live-log fan-out: one subscription per stream and process, many viewers.

A web process may have a hundred sockets watching one stream. If every socket had its own
channel, one published batch would become a hundred channel-layer messages (a hundred Redis
writes and reads), a hundred decodes and a hundred JSON encodings. Here a process subscribes
to each stream ONCE (a ``StreamFeed``, on the carrier of ``live_bus.py``), and each batch
that arrives is decoded once, described once (``Frame``: ids, runs, sequence ranges) and
encoded once; every local ``Viewer`` then sends the same text (under daphne the same
websocket bytes, ``socket_flow.py``), unless it must filter (a one-run view, lines it
already got in its replay) or repair a gap.

Each viewer has a bounded queue drained by its own task, so a slow socket never holds up the
feed or the other viewers. A viewer whose queue passes ``max_queued_bytes`` (a backgrounded
tab, a bad network) is dropped from the live stream: it is sent ``{"type": "behind"}`` (and
closed with ``CLOSE_FELL_BEHIND`` if it does not close by itself); the browser reconnects
with ``?after=<last id it showed>`` and catches up from the database, like after any
reconnect. Memory per viewer is therefore bounded by the queue, plus what the server
buffers for the socket (see ``socket_flow.py``).

The same code runs with the in-memory channel layer (``./dev.sh run``: one process, no
Redis) and with Redis (any number of web processes; each subscribes once per stream).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from scheduler_app import live_bus

#: Close code telling the browser it fell behind and should resume from the database.
CLOSE_FELL_BEHIND = 4429
#: Largest websocket message sent for a replay (daphne's default limit is 1 MiB, both ways).
MAX_MESSAGE_BYTES = 512 * 1024
#: Seconds a viewer told it fell behind has to close by itself before it is closed.
BEHIND_GRACE = 10.0
#: Frames a viewer may hold unsent before it is told it fell behind (bytes of encoded text).
MAX_QUEUED_BYTES = 1_000_000
#: A replayed line's live copy arrives within this many seconds of the replay (publishing is immediate).
DEDUP_SECONDS = 30.0
#: Runs whose last line number a viewer remembers (for gap repair).
TRACKED_RUNS = 1000
#: How often a viewer whose socket buffer is full checks whether it drained (seconds).
FLOW_POLL = 0.05

Gap = tuple[int, int, int]  # (run, first missing seq, next seq present)
SendText = Callable[[str], Awaitable[None]]
FetchMissing = Callable[[list[Gap], int], Awaitable[list[dict[str, Any]]]]


class WriteFlow(Protocol):
    """What the ASGI server offers for one socket beyond ``send`` (``socket_flow.py``)."""

    def paused(self) -> bool:
        """True while the server holds more unsent bytes for this socket than it wants to."""
        ...

    def write_frame(self, wire: bytes) -> bool:
        """Queue an encoded websocket frame on the socket at once; False if it is not open."""
        ...


class Frame:
    """One published message as every viewer of the stream sees it, described once."""

    __slots__ = ("_text", "_wire", "inner_gaps", "kind", "lines", "max_id", "min_id", "ranges", "run")

    def __init__(self, message: dict[str, Any]) -> None:
        self._text: str | None = None
        self._wire: bytes | None = None
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

    @property
    def wire(self) -> bytes:
        """The frame as websocket bytes (server frames are unmasked: the same for every socket)."""
        if self._wire is None:
            self._wire = text_frame(self.text)
        return self._wire


def text_frame(text: str) -> bytes:
    """One final, unmasked websocket text frame (RFC 6455 5.2) carrying ``text``."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


def by_size(lines: list[dict[str, Any]], limit: int = MAX_MESSAGE_BYTES) -> list[list[dict[str, Any]]]:
    """``lines`` cut into runs whose messages stay under ``limit`` bytes (daphne refuses larger ones)."""
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    for line in lines:
        # the message dominates; ~120 bytes for the other fields, escapes make it at most 6x
        cost = 120 + 6 * len(line["message"]) if not line["message"].isascii() else 160 + len(line["message"])
        if parts[-1] and size + cost > limit:
            parts.append([])
            size = 0
        parts[-1].append(line)
        size += cost
    return parts


class _Repair:
    """Lines to send after the stored lines that fill ``gaps`` are fetched."""

    __slots__ = ("gaps", "lines")

    def __init__(self, gaps: list[Gap], lines: list[dict[str, Any]]) -> None:
        self.gaps = gaps
        self.lines = lines


#: What a viewer queues: a shared frame, its own text, or a gap to repair first.
_Item = Frame | str | _Repair


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

    Frames are held from the moment the viewer joins (before its replay is read) and sent only
    after ``start()``, so nothing persisted between the join and the replay is lost; the lines
    that arrive both ways are dropped here by id. After that, each frame is prepared for this
    viewer as it arrives (filters, sequence bookkeeping) and, when the socket is idle and the
    server lets us (``WriteFlow.write_frame``), written at once as shared bytes; otherwise it
    waits in the queue for the viewer's own task.
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
        self._held: list[Frame] = []  # frames that arrived before start()
        self._queue: deque[tuple[_Item, int]] = deque()
        self.queued_bytes = 0
        self.started = False
        self.fell_behind = False
        self._busy = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.replayed: set[int] = set()
        self._previous_replay: set[int] = set()
        self._replayed_max = 0
        self._dedupe_until = 0.0
        self.floor = 0
        self.last_seq: dict[int, int] = {}
        self.sent_frames = 0

    # -- called by the consumer
    def note_replay(self, lines: list[dict[str, Any]]) -> None:
        """Record lines the socket got from the database (in chunks, oldest first) before ``start()``."""
        ids = {line["id"] for line in lines}
        # The live copies of replayed lines can only be among the newest: the last two chunks.
        self.replayed = self._previous_replay | ids
        self._previous_replay = ids
        self._replayed_max = max(self._replayed_max, max(ids, default=0))
        self._note(*describe(lines))

    def start(self, floor: int) -> None:
        """Begin sending live frames, after the replay; lines below ``floor`` are never fetched."""
        self._dedupe_until = time.monotonic() + DEDUP_SECONDS
        self.floor = floor
        self._task = asyncio.get_running_loop().create_task(self._sender(), name="live log viewer")
        self.started = True
        held, self._held = self._held, []
        self.queued_bytes = 0
        for frame in held:
            self.offer(frame)

    async def writable(self) -> None:
        """Wait until the server's buffer for this socket has room (a no-op for servers whose send waits)."""
        while self._flow is not None and self._flow.paused():
            await asyncio.sleep(FLOW_POLL)

    async def stop(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    # -- called by the feed, on the loop, once per frame: must stay cheap and never wait
    def offer(self, frame: Frame) -> None:
        if self.fell_behind:
            return
        if not self.started:
            self._hold(frame, len(frame.text))
            return
        item = self._prepare(frame)
        if item is None:
            return
        flow = self._flow
        if not self._queue and not self._busy and flow is not None and not isinstance(item, _Repair):
            # The common case: nothing waiting, so write now (no task switch, no per-socket encoding).
            if not flow.paused():
                flow.write_frame(item.wire if isinstance(item, Frame) else text_frame(item))
                self.sent_frames += 1
                return
        if isinstance(item, Frame):
            size = len(item.text)
        elif isinstance(item, str):
            size = len(item)
        else:
            size = 200 * len(item.lines)
        self._hold(item, size)

    def _hold(self, item: _Item, size: int) -> None:
        if self.queued_bytes + size > self.max_queued_bytes:
            # Buffering more would let one stalled socket eat the process's memory: drop what is
            # queued and let the browser catch up from the database instead.
            self.fell_behind = True
            self._held = []
            self._queue.clear()
            self.queued_bytes = 0
            self._wake.set()
            return
        self.queued_bytes += size
        if self.started:
            self._queue.append((item, size))
            self._wake.set()
        else:
            assert isinstance(item, Frame)
            self._held.append(item)

    async def _sender(self) -> None:
        while True:
            if self.fell_behind:
                await self._send_text(json.dumps({"type": "behind"}))
                # The browser closes and resumes when it reads this. A socket that reads nothing
                # for a while longer is closed from here; closing at once would make the server
                # abort the connection after its short close handshake, and an abort can discard
                # the notice still in flight.
                await asyncio.sleep(BEHIND_GRACE)
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
            item, size = self._queue.popleft()
            self._busy = True
            try:
                if isinstance(item, _Repair):
                    # The publisher dropped a batch (Redis outage, overflow): the lines are
                    # stored, so fetch them rather than show a log with a hole in it.
                    missing = await self._fetch_missing(item.gaps, self.floor)
                    merged = sorted(missing + item.lines, key=lambda line: line["id"])  # stored order
                    item = json.dumps({"type": "lines", "lines": merged, "replay": False})
                if self._flow is not None:
                    self._flow.write_frame(item.wire if isinstance(item, Frame) else text_frame(item))
                else:
                    await self._send_text(item.text if isinstance(item, Frame) else item)
            finally:
                self._busy = False
                self.queued_bytes -= size
            self.sent_frames += 1

    def _prepare(self, frame: Frame) -> _Item | None:
        """What this viewer sends for ``frame``: the shared frame when nothing differs."""
        if frame.kind == "run":
            if self.run_filter is not None and frame.run.get("id") != self.run_filter:
                return None
            return frame
        lines = frame.lines
        ranges, inner_gaps = frame.ranges, frame.inner_gaps
        filtered = False
        if self.replayed:
            if time.monotonic() >= self._dedupe_until:
                # anything replayed has long been published: stop checking
                self.replayed = self._previous_replay = set()
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
            return _Repair(gaps, lines)
        if not filtered:
            return frame
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
    """One stream's subscription in this process (on the bus of ``live_bus.py``) and its viewers."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.viewers: list[Viewer] = []
        self.frames = 0

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
        self.bus = live_bus.bus_for(layer)
        self.feeds: dict[str, StreamFeed] = {}
        self._lock = asyncio.Lock()

    async def join(self, group: str, viewer: Viewer) -> StreamFeed:
        async with self._lock:
            feed = self.feeds.get(group)
            if feed is None:
                feed = StreamFeed(group)
                await self.bus.subscribe(group, feed.dispatch)
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
                await self.bus.unsubscribe(group)


_HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LiveHub] = weakref.WeakKeyDictionary()


def hub_for(layer: Any) -> LiveHub:
    """This event loop's hub for ``layer`` (made on first use; tests each get a fresh loop)."""
    loop = asyncio.get_running_loop()
    hub = _HUBS.get(loop)
    if hub is None or hub.layer is not layer:
        hub = _HUBS[loop] = LiveHub(layer)
    return hub
