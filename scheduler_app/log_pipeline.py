"""The log pipeline: a plugin's logger -> numbered lines -> the writer -> browsers.

Each run gets its own ``logging.Logger`` (not registered with ``logging``, so thousands of
runs leave nothing behind) with a handler that numbers records (``seq`` from 1) and hands
them to the batched writer. After a batch commits, the writer calls ``on_committed`` (in its
thread); the pipeline moves the lines, now with their database ids, to the event loop and
publishes them for the stream ``streams.log_group_name(plugin_id, user_id)``: one
``{"type": "log.lines", "lines": [...]}`` per stream and batch, then one
``{"type": "run.status", "run": ...}`` per finished run, all of a batch together through
``live_bus`` (one pipelined round trip on Redis; group sends on the in-memory layer).

Publishing is best effort: the lines are already in the database, so a dead Redis costs live
updates only (a page replays from the database on reconnect). After a failure the publisher
drops messages for a short pause instead of waiting on a dead server for every batch, then
tries again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import threading
import time
import traceback as tb
from collections import defaultdict, deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from scheduler_app import live_bus, metrics, streams
from scheduler_app.writer import Batch, PendingLine, Writer

log = logging.getLogger("scheduler_app.log_pipeline")

#: logging's own start time (records' ``relativeCreated`` count from it)
_START_TIME: float = logging._startTime  # type: ignore[attr-defined]

#: A line longer than this is cut (a plugin dumping megabytes must not stall the writer).
MAX_MESSAGE = 10_000
#: Lines per run beyond this are dropped, with one line saying so.
MAX_LINES_PER_RUN = 20_000
#: How long publishing pauses after the channel layer failed (seconds).
PUBLISH_PAUSE = 2.0
PUBLISH_TIMEOUT = 2.0


def clean_text(text: str) -> str:
    # PostgreSQL text cannot hold NUL characters.
    return text.replace("\x00", "\\x00") if "\x00" in text else text


class RunLogHandler(logging.Handler):
    """Turns a run's log records into numbered lines for the writer (thread-safe)."""

    def __init__(self, writer: Writer, run_id: int, job_id: int, group: str) -> None:
        # Not Handler.__init__: it registers every handler in logging's global list under the
        # module lock and makes an RLock, per run. emit() is thread-safe without them.
        logging.Filterer.__init__(self)
        self._name = None
        self.level = logging.DEBUG
        self.formatter = None
        self._closed = False
        self.lock = None
        self.writer = writer
        self.run_id = run_id
        self.job_id = job_id
        self.group = group
        self._seq = itertools.count(1)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            seq = next(self._seq)  # atomic under the GIL: lines logged from threads keep distinct numbers
            if seq > MAX_LINES_PER_RUN:
                if seq == MAX_LINES_PER_RUN + 1:
                    message = f"(more than {MAX_LINES_PER_RUN} lines: the rest of this run's log is dropped)"
                    record = logging.LogRecord(record.name, logging.WARNING, "", 0, message, None, None)
                else:
                    return
            else:
                message = record.getMessage()
                if record.exc_info:
                    message = f"{message}\n{''.join(tb.format_exception(*record.exc_info)).rstrip()}"
            if len(message) > MAX_MESSAGE:
                message = message[:MAX_MESSAGE] + f"... ({len(message) - MAX_MESSAGE} characters cut)"
            self.count = seq
            self.writer.add_line(
                PendingLine(
                    run_id=self.run_id,
                    seq=seq,
                    created_at=datetime.fromtimestamp(record.created, UTC),
                    level=record.levelno,
                    message=clean_text(message),
                    job_id=self.job_id,
                    group=self.group,
                )
            )
        except Exception:
            self.handleError(record)


def run_logger(
    writer: Writer, *, run_id: int, job_id: int, plugin_id: int, user_id: int, package: str
) -> tuple[logging.Logger, RunLogHandler]:
    module = package.rpartition(".")[0] or package
    logger = RunLogger(f"{module}.run{run_id}", logging.DEBUG)
    logger.propagate = False
    handler = RunLogHandler(writer, run_id, job_id, streams.log_group_name(plugin_id, user_id))
    # Not addHandler(): it takes logging's module-wide lock, per run; this logger is new and ours.
    logger.handlers = [handler]
    return logger, handler


UNKNOWN_FILE = "(unknown file)"


class RunLogger(logging.Logger):
    """A run's logger, made for one run and dropped after it: what ``logging.Logger`` does once
    per process for a long-lived logger, this one would pay per run, so it does not.

    - No caller lookup per record (a stored line has no file or line number, and walking the
      stack for every line cost more than the line itself).
    - ``isEnabledFor`` compares levels directly: the standard one fills a per-logger cache under
      logging's module lock, raising a ``KeyError`` first, i.e. once per new logger (per run).
      Same answer: the logger's level (a plugin may ``setLevel``) and ``logging.disable``.
    - Records are ``RunLogRecord``s (``makeRecord``), not the process's record factory.
    """

    def findCaller(self, stack_info: bool = False, stacklevel: int = 1) -> tuple[str, int, str, str | None]:
        return UNKNOWN_FILE, 0, "(unknown function)", None

    def isEnabledFor(self, level: int) -> bool:
        if self.disabled or self.manager.disable >= level:
            return False
        return level >= self.getEffectiveLevel()

    def makeRecord(
        self,
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        extra: Mapping[str, object] | None = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        record = RunLogRecord(name, level, fn, lno, msg, args, exc_info, func, sinfo)
        if extra is not None:
            for key in extra:
                if (key in ["message", "asctime"]) or (key in record.__dict__):
                    raise KeyError(f"Attempt to overwrite {key!r} in LogRecord")
                record.__dict__[key] = extra[key]
        return record


_process: tuple[int, str | None] = (0, None)
#: Python 3.12 added ``taskName`` to ``LogRecord`` (a formatter may ask for ``%(taskName)s``).
_TASK_NAMES = sys.version_info >= (3, 12)


class RunLogRecord(logging.LogRecord):
    """A ``LogRecord`` with the same attributes, made with less work per record: the file name
    is the constant ``findCaller`` gives, and the process's name is looked up once per process
    (not through ``multiprocessing`` for every record)."""

    def __init__(
        self,
        name: str,
        level: int,
        pathname: str,
        lineno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        sinfo: str | None = None,
    ) -> None:
        global _process
        ct = time.time()
        self.name = name
        self.msg = msg
        if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]
        self.args = args
        self.levelname = logging.getLevelName(level)
        self.levelno = level
        self.pathname = pathname
        if pathname == UNKNOWN_FILE:
            self.filename = self.module = pathname
        else:
            self.filename = os.path.basename(pathname)
            self.module = os.path.splitext(self.filename)[0]
        self.exc_info = exc_info
        self.exc_text = None
        self.stack_info = sinfo
        self.lineno = lineno
        self.funcName = func  # type: ignore[assignment]  # as the standard record: None when not told
        self.created = ct
        self.msecs = int((ct - int(ct)) * 1000) + 0.0
        self.relativeCreated = (ct - _START_TIME) * 1000
        self.thread = threading.get_ident()
        self.threadName = threading.current_thread().name
        pid = os.getpid()
        if _process[0] != pid:
            _process = (pid, logging.LogRecord("", 0, "", 0, "", None, None).processName)
        self.process = pid
        self.processName = _process[1]
        if _TASK_NAMES:  # Python 3.12+: the standard record names the asyncio task it was made in
            self.taskName = None
            if logging.logAsyncioTasks:  # type: ignore[attr-defined]
                try:
                    self.taskName = asyncio.current_task().get_name()  # type: ignore[union-attr]
                except Exception:
                    pass


class Publisher:
    """Sends committed lines and run status changes to the channel layer from the event loop."""

    def __init__(self, layer: Any, loop: asyncio.AbstractEventLoop, max_pending: int = 20_000) -> None:
        self.layer = layer
        self.loop = loop
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._max_pending = max_pending
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self._failing = False
        self.dropped = 0
        self.sent = 0
        self._sent_in_batch = 0
        self._bus: live_bus.ChannelLayerBus | live_bus.RedisBus | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self.loop.create_task(self._main(), name="log publisher")

    async def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued (bounded by ``timeout``), then stop."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline and not self._failing:
            self._wake.set()
            await asyncio.sleep(0.02)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # called from the writer thread
    def on_committed(self, batch: Batch) -> None:
        metrics.log_lines_written(len(batch.lines))
        if self.layer is None:
            return
        messages: list[tuple[str, dict[str, Any]]] = []
        by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in batch.lines:
            if line.id is None:
                continue
            by_group[line.group].append(
                streams.line_payload(
                    id=line.id,
                    run_id=line.run_id,
                    job_id=line.job_id,
                    seq=line.seq,
                    created_at=line.created_at,
                    level=line.level,
                    message=line.message,
                )
            )
        for group, lines in by_group.items():
            messages.append((group, {"type": "log.lines", "lines": lines}))
        for finish in batch.finishes:
            messages.append(status_message(finish.run))
        if messages:
            self.loop.call_soon_threadsafe(self.enqueue, messages)

    # called on the loop
    def enqueue(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        if self.layer is None:
            return
        self._queue.extend(messages)
        overflow = len(self._queue) - self._max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            self.dropped += overflow
        self._wake.set()

    def publish_status(self, record: streams.RunSnapshot) -> None:
        if self.layer is not None:
            self.enqueue([status_message(record)])

    async def _main(self) -> None:
        from channels.layers import InMemoryChannelLayer

        # The in-memory layer never blocks on a network: no timeout task per send.
        local = isinstance(self.layer, InMemoryChannelLayer)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                if time.monotonic() < self._paused_until:
                    # Redis is down: the lines are stored; drop live copies rather than pile up.
                    self.dropped += len(self._queue)
                    self._queue.clear()
                    break
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), 200))]
                try:
                    if local:
                        await self._send(batch)
                    else:
                        # One timeout for the batch (a task per message would cost more than the send).
                        await asyncio.wait_for(self._send(batch), PUBLISH_TIMEOUT + len(batch) * 0.01)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._paused_until = time.monotonic() + PUBLISH_PAUSE
                    self.dropped += len(batch) - self._sent_in_batch
                    if not self._failing:
                        self._failing = True
                        log.warning(
                            "publishing to the channel layer failed (%s: %s); log lines are still stored, "
                            "live streaming resumes when it is back",
                            type(exc).__name__,
                            exc,
                        )
                else:
                    if self._failing:
                        self._failing = False
                        log.warning(
                            "publishing to the channel layer works again (%d live messages dropped)", self.dropped
                        )

    async def _send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        self._sent_in_batch = 0
        if self._bus is None:
            self._bus = live_bus.bus_for(self.layer)
        # One pipelined round trip for the batch on Redis (live_bus.py), group sends otherwise.
        sent = await self._bus.publish_many(batch)
        self._sent_in_batch = sent
        self.sent += sent
        metrics.log_lines_published(sum(len(m["lines"]) for _, m in batch[:sent] if m["type"] == "log.lines"))


def publisher_layer(layer: Any, embedded: bool, reconcile_seconds: float) -> Any:
    """The channel layer the engine's publisher sends to, or None; warns when lines cannot reach browsers.

    The in-memory layer in a scheduler-only process: no browser can ever be in its groups, so
    nothing is published (and the lines need no ids back: the insert returns none)."""
    from channels.layers import InMemoryChannelLayer

    if layer is None:
        log.warning("no channel layer configured: log lines are stored but not streamed")
    elif isinstance(layer, InMemoryChannelLayer) and not embedded:
        log.warning(
            "REDIS_URL is not set: this scheduler runs in its own process with the in-memory channel layer. "
            "Log lines are stored, but they will NOT reach browsers served by another process, and change "
            "notifications from the web process will not arrive (changes apply on the next reconcile, every "
            "%g s). Set REDIS_URL=redis://host:6379/0 for the web and the scheduler processes.",
            reconcile_seconds,
        )
        return None
    return layer


def status_message(record: streams.RunSnapshot) -> tuple[str, dict[str, Any]]:
    return (
        streams.log_group_name(record.plugin_id, record.user_id),
        {"type": "run.status", "run": streams.run_payload(record)},
    )
