"""The batched writer: one thread that owns the engine's database writes.

The event loop never touches the ORM. It hands the writer two kinds of work:

- records (log lines, finished runs), buffered and written together, one transaction per
  flush, at most ``flush_interval`` apart. Lines are inserted with one multi-row ``INSERT`` per
  chunk, and get their ids (what a live page resumes from) to be published with afterwards.
- calls (claims, heartbeats, retention batches): functions run in this thread, in order,
  before the pending records are flushed (a claim must not wait behind a large flush), with
  their result handed back through a ``concurrent.futures.Future``.

Why one thread: on SQLite, two writer threads of one process would queue on the busy
timeout (sleeps of up to 100 ms); one thread keeps writes back to back. On PostgreSQL it
keeps one connection busy instead of many idle ones.

A database that goes away (restart, network) does not lose records: the flush fails, the
connection is closed, the buffer is kept and retried with back-off until it is written.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections, transaction

from scheduler_app import metrics
from scheduler_app.models import JobRun, LogLine
from scheduler_app.streams import RunSnapshot

log = logging.getLogger("scheduler_app.writer")

RUNNING = JobRun.Status.RUNNING.value

#: Rows per INSERT statement (SQLite allows 32,766 variables; 5 per line).
CHUNK = 500
#: Buffered records (lines and finished runs) that make a flush worth its transaction at once.
FULL_FLUSH = 100
#: How much longer than ``flush_interval`` a smaller buffer may wait for more records.
MAX_FLUSH_FACTOR = 3
#: SQLite: the writer connection's page cache (SQLite's default is 2 MB). A claim round inserts
#: one row per job into the job-led unique index, a page per row scattered over the whole
#: index; with 2 MB most of those pages had dropped out and were read again (a ``pread`` and a
#: copy each). The cache fills only with pages used: a small database stays small in memory.
WRITER_CACHE_MB = 64


@dataclass(slots=True)
class PendingLine:
    run_id: int
    seq: int
    created_at: datetime
    level: int
    message: str
    #: routing for the publisher, not stored
    job_id: int = 0
    group: str = ""
    id: int | None = None


@dataclass(slots=True)
class RunFinish:
    """The final state of a run: its snapshot (stored, then published after commit) and what
    only the database keeps."""

    run: RunSnapshot
    traceback: str
    log_count: int

    @property
    def run_id(self) -> int:
        return self.run.id


@dataclass
class Batch:
    lines: list[PendingLine] = field(default_factory=list)
    finishes: list[RunFinish] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.lines or self.finishes)


class Writer:
    def __init__(
        self,
        *,
        on_committed: Callable[[Batch], None] | None = None,
        flush_interval: float = 0.05,
        name: str = "jobscheduler-writer",
        line_ids: bool = True,
    ) -> None:
        self.on_committed = on_committed
        #: whether written lines get their database ids (only a publisher needs them)
        self.line_ids = line_ids
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._lines: list[PendingLine] = []
        self._finishes: list[RunFinish] = []
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        # records taken from the buffers whose write failed: retried first, in order
        self._retry: Batch | None = None
        self._stopping = False
        self._stop_deadline = 0.0
        self._failing_since: float | None = None
        self._last_flush = time.monotonic()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._tuned: object = None
        self.written_lines = 0
        self.written_runs = 0

    # -- API for the event loop (thread-safe, never blocks on the database) ------------------

    def start(self) -> None:
        self._thread.start()

    def add_line(self, line: PendingLine) -> None:
        with self._lock:
            self._lines.append(line)

    def finish_run(self, finish: RunFinish) -> None:
        # No wake-up: the next flush (at most ``flush_interval`` away, far below the shortest job
        # interval) writes it with the others. Waking the thread per run cost an Event.set per
        # run and a transaction per handful of runs.
        with self._lock:
            self._finishes.append(finish)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` in the writer thread; await it with ``asyncio.wrap_future``."""
        future: Future[Any] = Future()
        if self._stopping and not self._thread.is_alive():
            future.set_exception(RuntimeError("the writer has stopped"))
            return future
        with self._lock:
            self._calls.append((lambda: fn(*args, **kwargs), future))
        self._wake.set()
        return future

    def pending(self) -> int:
        with self._lock:
            retry = len(self._retry.lines) + len(self._retry.finishes) if self._retry else 0
            return len(self._lines) + len(self._finishes) + retry

    def stop(self, timeout: float = 10.0) -> bool:
        """Flush what is buffered (retrying up to ``timeout``) and end the thread; True if all was written."""
        # The deadline first: the thread reads it as soon as it sees ``_stopping``.
        self._stop_deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout + 5)
        return self.pending() == 0

    # -- the thread ----------------------------------------------------------------------------

    def _flush_due(self, now: float) -> float:
        """When the buffered records are due to be written (monotonic seconds).

        A flush is a transaction whatever its size: a buffer of at least ``FULL_FLUSH`` records
        is written ``flush_interval`` after the last flush, a smaller one waits up to
        ``MAX_FLUSH_FACTOR`` times as long for more (a node with a small share of the jobs makes
        fewer, fuller transactions). Stopping or retrying: now."""
        if self._stopping or self._retry is not None:
            return now
        with self._lock:
            buffered = len(self._lines) + len(self._finishes)
        wait = self.flush_interval if buffered >= FULL_FLUSH else self.flush_interval * MAX_FLUSH_FACTOR
        return self._last_flush + wait

    def _main(self) -> None:
        try:
            while True:
                now = time.monotonic()
                self._wake.wait(max(0.0, self._flush_due(now) - now))
                self._wake.clear()
                # Calls first: a claim waiting behind a big flush is start lag for every run in it.
                self._run_calls()
                # Records on their own timer: a claim (tens a second) does not bring a flush along.
                now = time.monotonic()
                if now < self._flush_due(now):
                    continue
                self._last_flush = now
                flushed = self._flush()
                if self._stopping:
                    if self.pending() == 0 and not self._calls:
                        break
                    if time.monotonic() > self._stop_deadline:
                        log.error("writer stopping with %d unwritten records (database unreachable)", self.pending())
                        break
                if not flushed:
                    time.sleep(self._backoff())
        finally:
            connections.close_all()

    def _backoff(self) -> float:
        if self._failing_since is None:
            return 0.0
        return min(5.0, 0.25 + (time.monotonic() - self._failing_since) / 4)

    def _take(self) -> Batch:
        with self._lock:
            batch = Batch(self._lines, self._finishes)
            self._lines, self._finishes = [], []
        if self._retry is not None:
            batch = Batch(self._retry.lines + batch.lines, self._retry.finishes + batch.finishes)
            self._retry = None
        return batch

    def _tune_connection(self) -> None:
        """SQLite: no automatic WAL checkpoints in this thread (the engine checkpoints from its
        reader thread instead). An automatic checkpoint runs inside a commit, copying megabytes and
        syncing the file while every claim waits behind it: the lag spikes of the benchmark. And a
        page cache of ``WRITER_CACHE_MB``: see there.

        PostgreSQL: a transaction this process leaves open while it is frozen (SIGSTOP, a VM
        pause) is ended by the server (``nodes.tune_engine_session``): its locks would hold up the
        nodes that take its jobs over."""
        connection.ensure_connection()
        if connection.connection is self._tuned:
            return
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
                cursor.execute(f"PRAGMA cache_size=-{WRITER_CACHE_MB * 1024}")
        else:
            from scheduler_app.nodes import tune_engine_session

            tune_engine_session()
        self._tuned = connection.connection

    def _flush(self) -> bool:
        batch = self._take()
        if not batch:
            return True
        t0 = time.perf_counter()
        try:
            self._tune_connection()
            write_batch(batch, self.line_ids)
        except DatabaseError as exc:
            self._retry = batch
            self._connection_failed(exc, f"writing {len(batch.lines)} log lines and {len(batch.finishes)} runs")
            metrics.writer_queue_depth(self.pending())  # growing while the database is away
            return False
        if self._failing_since is not None:
            log.warning(
                "database writes work again after %.1f s; nothing was lost", time.monotonic() - self._failing_since
            )
            self._failing_since = None
        self.written_lines += len(batch.lines)
        self.written_runs += len(batch.finishes)
        metrics.writer_batch(time.perf_counter() - t0)
        metrics.writer_queue_depth(self.pending())
        if self.on_committed is not None:
            try:
                self.on_committed(batch)
            except Exception:
                log.exception("publishing a written batch failed")
        return True

    def _run_calls(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    return
                fn, future = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                self._tune_connection()
                result = fn()
            except (OperationalError, InterfaceError) as exc:
                self._connection_failed(exc, "a scheduler query")
                future.set_exception(exc)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _connection_failed(self, exc: Exception, what: str) -> None:
        first = self._failing_since is None
        if first:
            self._failing_since = time.monotonic()
        if first or log.isEnabledFor(logging.DEBUG):
            log.warning(
                "database error while %s (%s: %s); keeping the buffer and retrying",
                what,
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            )
        # A broken connection stays broken: drop it so the next attempt opens a new one.
        try:
            connection.close()
        except Exception:
            pass


def write_batch(batch: Batch, line_ids: bool = True) -> None:
    """Write one batch in one transaction; lines of runs deleted meanwhile are dropped.

    ``line_ids``: set each line's ``id`` (what a live page resumes from); without a publisher
    nobody reads them, and the insert skips returning them."""
    try:
        with transaction.atomic():
            _relax_commit()
            _insert_lines(batch.lines, line_ids)
            _update_runs(batch)
    except DatabaseError as exc:
        if not _is_integrity_error(exc) or not batch.lines:
            raise
        # A job (and its runs) was deleted while it ran, so its lines have no run to point to;
        # or (a bug, never seen since claims are deduplicated) a line is already stored. Keep
        # everything else: one bad line must not block the writer forever.
        run_ids = {line.run_id for line in batch.lines}
        alive = set(JobRun.objects.filter(id__in=run_ids).values_list("id", flat=True))
        stored = set(
            LogLine.objects.filter(run_id__in=alive, seq__in={line.seq for line in batch.lines}).values_list(
                "run_id", "seq"
            )
        )
        kept, seen = [], set()
        for line in batch.lines:
            key = (line.run_id, line.seq)
            if line.run_id in alive and key not in stored and key not in seen:
                seen.add(key)
                kept.append(line)
        dropped = len(batch.lines) - len(kept)
        batch.lines[:] = kept
        log.warning(
            "dropped %d log lines (%d of runs deleted meanwhile, the rest duplicates)",
            dropped,
            sum(1 for run_id in run_ids if run_id not in alive),
        )
        with transaction.atomic():
            _relax_commit()
            _insert_lines(batch.lines, line_ids)
            _update_runs(batch)


def _relax_commit() -> None:
    """PostgreSQL: this transaction's commit does not wait for the WAL flush.

    Only record batches (log lines, finished runs) commit this way; claims, which make a slot
    run once, stay durable (they are separate transactions of the writer's calls). What it
    risks: a crash of the PostgreSQL server itself (not of this process) can lose the records
    of its last fraction of a second (at most 3 x wal_writer_delay); their runs stay
    ``running`` in the table. SQLite's WAL with synchronous=NORMAL already commits without a
    sync.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _is_integrity_error(exc: Exception) -> bool:
    from django.db import IntegrityError

    return isinstance(exc, IntegrityError)


def _insert_lines(lines: list[PendingLine], with_ids: bool = True) -> None:
    if not lines:
        return
    table = connection.ops.quote_name(LogLine._meta.db_table)
    if connection.vendor == "postgresql":
        _insert_lines_postgresql(table, lines, with_ids)
        return
    to_db = datetime_adapter()
    with raw_cursor() as (cursor, p):
        for start in range(0, len(lines), CHUNK):
            chunk = lines[start : start + CHUNK]
            params: list[Any] = []
            for line in chunk:
                params.extend((line.run_id, line.seq, to_db(line.created_at), line.level, line.message))
            rows, padding = values_rows(p, 5, len(chunk), CHUNK)
            cursor.execute(
                f"INSERT INTO {table} (run_id, seq, created_at, level, message) "
                f"SELECT * FROM ({rows}) WHERE column1 IS NOT NULL",
                params + padding,
            )
            if with_ids:
                # Not ``RETURNING id``: the DB-API steps a statement once per returned row and
                # gives the GIL away around each step, a hand-over with the busy event loop per
                # line (see ``_update_runs``). The rows of one multi-row INSERT into an
                # AUTOINCREMENT table get consecutive ids in VALUES order (each is one above the
                # largest so far; a failing row fails the whole statement), the last one being
                # ``lastrowid``.
                first = cursor.lastrowid - len(chunk) + 1
                for offset, line in enumerate(chunk):
                    line.id = first + offset


def _insert_lines_postgresql(table: str, lines: list[PendingLine], with_ids: bool) -> None:
    source = json_rows(["bigint", "integer", "timestamptz", "smallint", "text"])
    with raw_cursor() as (cursor, _p):
        cursor.execute(
            f"INSERT INTO {table} (run_id, seq, created_at, level, message) "
            f"SELECT column1, column2, column3, column4, column5 FROM {source} AS v"
            f"{' RETURNING id, run_id, seq' if with_ids else ''}",
            [to_json([(ln.run_id, ln.seq, ln.created_at.isoformat(), ln.level, ln.message) for ln in lines])],
        )
        if with_ids:
            ids = {(run_id, seq): line_id for line_id, run_id, seq in cursor.fetchall()}
            for line in lines:
                line.id = ids[(line.run_id, line.seq)]


#: Finished runs per UPDATE statement (8 parameters each).
FINISH_CHUNK = 500


def _update_runs(batch: Batch) -> None:
    """Store the finished runs (one ``UPDATE .. FROM (VALUES ..)`` per chunk) and the live line
    count of runs still going.

    One statement, not ``executemany``: the DB-API steps an ``executemany`` row by row and
    gives the GIL away around each step, so every finished run cost the writer a GIL hand-over
    with the busy event loop (a convoy: several times the statement's own time at saturation).
    """
    table = connection.ops.quote_name(JobRun._meta.db_table)
    to_db = datetime_adapter()
    postgres = connection.vendor == "postgresql"
    with raw_cursor() as (cursor, p):
        if batch.finishes:
            for start in range(0, len(batch.finishes), FINISH_CHUNK):
                chunk = batch.finishes[start : start + FINISH_CHUNK]
                if postgres:
                    source = json_rows(
                        ["bigint", "text", "text", "timestamptz", "timestamptz", "text", "text", "integer"]
                    )
                    params: list[Any] = [to_json([(f.run.id, f.run.node, f.run.status, iso(f.run.started_at),
                                                   iso(f.run.finished_at), f.run.error, f.traceback, f.log_count)
                                                  for f in chunk])]  # fmt: skip
                else:
                    rows, padding = values_rows(p, 8, len(chunk), FINISH_CHUNK)
                    source = f"({rows})"
                    params = []
                    for f in chunk:
                        run = f.run
                        params.extend((run.id, run.node, run.status, to_db(run.started_at), to_db(run.finished_at),
                                       run.error, f.traceback, f.log_count))  # fmt: skip
                    params += padding
                # Fencing: only a run still running on the node that ran it is finished. A run
                # another node marked lost (this one was paused or cut off meanwhile) stays lost.
                cursor.execute(
                    f"UPDATE {table} SET status = v.column3, started_at = v.column4, finished_at = v.column5, "
                    f"error = v.column6, traceback = v.column7, log_count = v.column8 FROM {source} AS v "
                    f"WHERE {table}.id = v.column1 AND {table}.status = {p} AND {table}.node = v.column2",
                    [*params, RUNNING],
                )
        finished = {f.run_id for f in batch.finishes}
        counts: dict[int, int] = {}
        for line in batch.lines:
            if line.run_id not in finished:
                counts[line.run_id] = max(counts.get(line.run_id, 0), line.seq)
        if counts:
            # live count for runs still going (a page shows "12 lines" while it runs); one
            # statement, as the finishes above
            items = list(counts.items())
            for start in range(0, len(items), FINISH_CHUNK):
                chunk_counts = items[start : start + FINISH_CHUNK]
                if postgres:
                    source = json_rows(["bigint", "integer"])
                    params = [to_json(chunk_counts)]
                else:
                    rows, padding = values_rows(p, 2, len(chunk_counts), FINISH_CHUNK)
                    source = f"({rows})"
                    params = [value for pair in chunk_counts for value in pair] + padding
                cursor.execute(
                    f"UPDATE {table} SET log_count = v.column2 FROM {source} AS v "
                    f"WHERE {table}.id = v.column1 AND {table}.log_count < v.column2 AND {table}.status = {p}",
                    [*params, RUNNING],
                )


def datetime_adapter() -> Callable[[datetime | None], Any]:
    """How datetimes go into raw SQL on this connection, exactly as Django's adapter makes them.

    Asked once per statement, not per value: ``connection.vendor`` goes through Django's
    connection proxy (a thread-local lookup), and Django's ``adapt_datetimefield_value`` checks
    awareness and converts through the connection's time zone per value; together ~15 % of the
    engine's CPU at 2,000 runs/s. On SQLite a UTC datetime (every one the engine writes) becomes
    ``str`` of the naive value, the text Django stores, so slots claimed either way compare equal.

    The text of the whole seconds is kept from one value to the next (a statement's values fall
    in a handful of seconds): ``isoformat`` of an aware datetime costs ~0.8 us, 3-4 times per
    run; reusing the seconds' text and adding the microseconds halves it.
    """
    if connection.vendor != "sqlite":
        return connection.ops.adapt_datetimefield_value
    slow = connection.ops.adapt_datetimefield_value
    last_second: tuple[int, ...] = ()
    last_text = ""

    def adapt(value: datetime | None) -> Any:
        nonlocal last_second, last_text
        if value is not None and value.tzinfo is UTC:
            second = (value.second, value.minute, value.hour, value.day, value.month, value.year)
            if second != last_second:
                # str() of the naive value without making it: the same text less the "+00:00"
                last_second, last_text = second, value.replace(microsecond=0).isoformat(" ")[:-6]
            micro = value.microsecond
            return f"{last_text}.{micro:06d}" if micro else last_text  # as str(): no ".000000"
        return slow(value)

    return adapt


def values_rows(placeholder: str, width: int, count: int, limit: int) -> tuple[str, list[None]]:
    """SQLite: ``VALUES (?, ?), (?, ?), ..`` for ``count`` rows of ``width`` placeholders, and the
    ``None`` parameters of its padding rows (the engine's batch statements; PostgreSQL's take
    ``json_rows`` instead).

    The text has ``padded(count, limit)`` rows (``limit``: the statement's chunk size). The rows
    of all-``NULL`` after the real ones match nothing (each statement says so) and keep the texts
    to a few dozen, so the DB-API's cache of prepared statements finds them (see ``padded``)."""
    rows = padded(count, limit)
    return _values_text(placeholder, width, rows), [None] * (width * (rows - count))


def in_list(placeholder: str, count: int, limit: int) -> tuple[str, list[None]]:
    """SQLite: ``(?, ?, ..)`` for an ``IN`` of ``count`` values, padded as ``values_rows`` (a
    ``NULL`` is in no ``IN`` list), and the ``None`` parameters of its padding."""
    rows = padded(count, limit)
    return _row_text(placeholder, rows), [None] * (rows - count)


# Each text made once per shape: padded shapes are few, and a statement of hundreds of rows was
# a string of a few kilobytes joined again in the writer for every statement.
@functools.cache
def _values_text(placeholder: str, width: int, rows: int) -> str:
    return f"VALUES {', '.join([_row_text(placeholder, width)] * rows)}"


@functools.cache
def _row_text(placeholder: str, width: int) -> str:
    return f"({', '.join([placeholder] * width)})"


def _row_counts(largest: int = 1000) -> list[int]:
    """1 to 8, then each about ``PAD_RATIO`` times the one before, up to ``largest``."""
    counts, n = list(range(1, 9)), 8
    while n < largest:
        n = int(n * PAD_RATIO) + 1
        counts.append(n)
    return counts


#: Each padded row count is at most this much above the one before (at most 19 % of padding).
PAD_RATIO = 2 ** (1 / 4)
_ROW_COUNTS = _row_counts()


def padded(count: int, limit: int) -> int:
    """The row count a batch statement of ``count`` rows is written with: ``count`` itself up to 8,
    then the next of a geometric series (ratio ``PAD_RATIO``), at most ``limit`` (the chunk size:
    no statement has more rows).

    Statement texts of every row count were each new to the DB-API's statement cache, so each
    statement was prepared again (parsing and compiling hundreds of placeholders), and a prepare
    gives the GIL away once more: a round of varying size cost 10-35 % more than one of a
    repeated size (bench/engine_writer.py --vary, docs/performance.md "Saturation, wave 2g")."""
    if count > _ROW_COUNTS[-1]:
        return count
    return max(count, min(limit, _ROW_COUNTS[bisect.bisect_left(_ROW_COUNTS, count)]))


def json_rows(types: list[str]) -> str:
    """PostgreSQL: a subquery of typed rows (``column1``, ``column2``...) read from one JSON
    parameter, the shape of a ``VALUES`` list.

    The engine's batch statements pass hundreds of rows. As a ``VALUES`` list of placeholders
    each statement text is new and long, and psycopg splits every such text on its
    placeholders with a regular expression, uncached (more than half of the writer thread's
    CPU on PostgreSQL); one JSON array (``json.dumps``, C) keeps the text short and constant.
    """
    columns = ", ".join(f"(e->>{i})::{t} AS column{i + 1}" for i, t in enumerate(types))
    return f"(SELECT {columns} FROM jsonb_array_elements(%s::jsonb) AS e)"


def to_json(rows: list[Any]) -> str:
    """Rows for ``json_rows`` (datetimes already as ISO text)."""
    return json.dumps(rows, separators=(",", ":"))


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@contextmanager
def raw_cursor() -> Iterator[tuple[Any, str]]:
    """The DB-API cursor under Django's, and its placeholder, for the engine's hot statements.

    Django's cursor wrapper rewrites ``%s`` to ``?`` with a regular expression on every
    SQLite statement (multi-row VALUES lists are long) and wraps each call; database errors
    are still turned into Django's by ``wrap_database_errors``, which the writer's retry
    logic relies on.
    """
    connection.ensure_connection()
    placeholder = "?" if connection.vendor == "sqlite" else "%s"
    with connection.wrap_database_errors:
        cursor = connection.connection.cursor()
        try:
            yield cursor, placeholder
        finally:
            cursor.close()


def checkpoint() -> None:
    """SQLite: move the WAL into the database file without blocking the writer (PASSIVE)."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
