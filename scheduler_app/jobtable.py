"""What the engine schedules, read from the ``Job`` table (the source of truth).

``JobTable`` lives in the engine's reader thread. It keeps the last snapshot of the active
jobs of enabled plugins and answers "what changed since last time" as a ``Diff``, either for
everything (the periodic reconcile, which also catches bulk ``update()`` calls that announce
nothing) or for the jobs and plugins a notification named. The event loop only applies diffs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from scheduler_app import schedules, slots
from scheduler_app.models import Job

log = logging.getLogger("scheduler_app.engine")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything needed to schedule and run one job, as of the last read."""

    id: int
    user_id: int
    username: str
    plugin_id: int
    package: str
    interval: int
    timeout: int
    config: Any
    code_version: int
    #: the job's last save (ms); a missed slot older than this is not caught up after downtime
    updated_ms: int
    enabled: bool = True
    #: when it runs (``schedules``); None: the plugin's interval (specs made outside the table)
    timing: schedules.Timing | None = None
    #: why the stored schedule cannot be used (it no longer parses): the job is not scheduled
    schedule_error: str = ""
    #: retries of a failed or timed-out run: how many, first delay, longest delay (seconds)
    max_retries: int = 0
    retry_delay_seconds: int = 10
    retry_max_delay_seconds: int = 600

    @property
    def key(self) -> tuple[Any, ...]:
        return (
            self.package,
            self.interval,
            self.timeout,
            self.config,
            self.user_id,
            self.plugin_id,
            self.enabled,
            self.timing,
            self.schedule_error,
            self.max_retries,
            self.retry_delay_seconds,
            self.retry_max_delay_seconds,
        )


@dataclass
class Diff:
    upserted: list[JobSpec] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    #: removed because the row is gone (not just deactivated): a running run is cancelled
    deleted: list[int] = field(default_factory=list)
    #: package -> code_version for packages whose version changed
    reloaded: dict[str, int] = field(default_factory=dict)


_FIELDS = (
    "id",
    "user_id",
    "user__username",
    "plugin_id",
    "plugin__package",
    "plugin__interval",
    "effective_timeout_seconds",
    "config_text",
    "plugin__code_version",
    "updated_at",
    "plugin__enabled",
    "schedule",
    "timezone",
    "jitter_seconds",
    "max_retries",
    "retry_delay_seconds",
    "retry_max_delay_seconds",
)


#: Rows converted at a time by a paced read, and the pause after each such chunk.
PACED_CHUNK = 250
PACED_PAUSE_SECONDS = 0.004


def read_rows(where: Q, paced: bool = False) -> dict[int, tuple[Any, ...]]:
    """The raw rows (config as JSON text) of the jobs matching ``where``.

    Raw, because the full reconcile runs every few seconds over every active job: Django's
    per-row conversions (JSON decoding above all) cost more than the query, and this thread
    shares the GIL with the event loop. Rows are compared as they come; only changed ones are
    decoded (``spec_from_row``).

    ``paced``: a short pause after every ``PACED_CHUNK`` rows. Turning rows into Python objects
    holds the GIL (~5 us a row), and a busy loop gets it back only every switch interval (5 ms):
    reading 20,000 jobs in one go halved the loop's share for ~0.2 s every reconcile, and the
    runs due meanwhile started up to ~100 ms late (docs/performance.md, "Saturation, wave
    2e", item 2). Paced, the read takes at most ~1/4 of the GIL and the loop keeps up.
    """
    chunk_size, pause = (PACED_CHUNK, PACED_PAUSE_SECONDS) if paced else (1000, 0.0)
    sql, params = _rows_sql(where)
    rows: dict[int, tuple[Any, ...]] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            return _read_sqlite_chunks(cursor, sql, params, chunk_size, pause)
        cursor.execute(sql, params)
        while chunk := cursor.fetchmany(chunk_size):
            for row in chunk:
                rows[row[0]] = tuple(row)
            time.sleep(pause)  # let the event loop have the GIL between chunks
    return rows


def rows_stamp(where: Q) -> tuple[Any, ...] | None:
    """PostgreSQL: a fingerprint of the rows ``read_rows(where)`` would return (their count and
    the sum of a 64-bit hash of each row's text), computed in the server; None on SQLite.

    The periodic full reconcile almost always finds nothing changed, yet turning 10,000 rows
    into Python objects holds the GIL for ~100 ms in pieces: on PostgreSQL that made every
    reconcile a bump of start lag for every run due meanwhile (p99 108 against 64 ms with the
    reconcile off, docs/performance.md, "Saturation, wave 2h"). The stamp costs the server a
    few ms and the engine one row; only a changed stamp reads the rows. SQLite has no hash
    function to compute it in the database (a Python one would hold the GIL per row again).
    """
    if connection.vendor != "postgresql":
        return None
    sql, params = _rows_sql(where)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*), sum(hashtextextended(t::text, 0)) FROM ({sql}) AS t", params)
        return tuple(cursor.fetchone())


@contextmanager
def one_snapshot() -> Iterator[None]:
    """PostgreSQL: the statements inside see one snapshot (a REPEATABLE READ transaction), so a
    stamp and the rows read after it describe the same table. Read separately, a change landing
    between them and undone before the next reconcile would leave rows that the stamp says are
    current. Inside a caller's transaction (tests) the caller's isolation holds."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _rows_sql(where: Q) -> tuple[str, tuple[Any, ...]]:
    query = (
        Job.objects.with_effective_timeout()
        .filter(where)
        .annotate(config_text=Cast("config", TextField()))
        .values_list(*_FIELDS)
        .order_by()
    )
    return query.query.sql_with_params()


def _read_sqlite_chunks(
    cursor: Any, sql: str, params: Any, chunk_size: int, pause: float
) -> dict[int, tuple[Any, ...]]:
    """SQLite: the rows of ``sql`` a chunk at a time, each chunk as **one row** of JSON.

    Python's ``sqlite3`` steps a query once per row and gives the GIL away around every step;
    each time, the reader then waits for the busy loop to let go of the GIL. Beside a busy loop a
    re-read of 26,000 jobs took 5.5-12 s that way (``bench/engine_reader.py``), so a change made
    behind the engine's back was seen that late, and the checkpoints queued behind it; as one
    ``json_group_array`` row per chunk (one step; ``json.loads`` runs in C) it takes ~0.9 s
    (docs/performance.md, "Saturation, wave 2f"). The values come as SQLite stores them:
    ``updated_at`` as text and ``enabled`` as 0/1 where Django's converters give a datetime and a
    bool; ``spec_from_row`` makes the same spec of either, and every read of a node takes this
    path, so a row compares equal from one read to the next.
    """
    columns = ", ".join(connection.ops.quote_name(name) for name in _FIELDS)
    quoted_id = connection.ops.quote_name("id")
    chunk_sql = (
        f"SELECT json_group_array(json_array({columns})) FROM "
        f"(SELECT * FROM ({sql}) WHERE {quoted_id} > %s ORDER BY {quoted_id} LIMIT %s)"
    )
    rows: dict[int, tuple[Any, ...]] = {}
    after = 0
    while True:
        cursor.execute(chunk_sql, [*params, after, chunk_size])
        chunk = json.loads(cursor.fetchone()[0])
        for row in chunk:
            rows[row[0]] = tuple(row)
        if len(chunk) < chunk_size:
            return rows
        after = max(row[0] for row in chunk)
        time.sleep(pause)  # let the event loop have the GIL between chunks


def spec_from_row(row: tuple[Any, ...]) -> JobSpec:
    """The one way a ``JobSpec`` is made: from a ``read_rows`` row."""
    (job_id, user_id, username, plugin_id, package, interval, timeout, config, version, updated_at,
     enabled, schedule, zone, jitter, max_retries, retry_delay, retry_max_delay) = row  # fmt: skip
    if isinstance(updated_at, str):
        updated_at = parse_datetime(updated_at)
    if updated_at is not None and timezone.is_naive(updated_at):
        updated_at = updated_at.replace(tzinfo=UTC)
    timing, error = _timing(job_id, schedule, interval, zone, jitter)
    return JobSpec(
        id=job_id,
        user_id=user_id,
        username=username,
        plugin_id=plugin_id,
        package=package,
        interval=interval,
        timeout=timeout,
        config=json.loads(config) if isinstance(config, str | bytes) else config,
        code_version=version,
        updated_ms=slots.to_ms(updated_at) if updated_at is not None else 0,
        enabled=bool(enabled),
        timing=timing,
        schedule_error=error,
        max_retries=max_retries,
        retry_delay_seconds=retry_delay,
        retry_max_delay_seconds=retry_max_delay,
    )


def _timing(job_id: int, schedule: str, interval: int, zone: str, jitter: int) -> tuple[schedules.Timing | None, str]:
    try:
        return schedules.Timing.of(job_id, schedule, interval, zone or settings.TIME_ZONE, jitter), ""
    except schedules.ScheduleError as exc:
        # Saved through services it parsed; a raw update() or a removed time zone can break it.
        log.warning("job %s is not scheduled: its schedule %r no longer parses (%s)", job_id, schedule, exc)
        return None, str(exc)


SCHEDULED = Q(active=True, plugin__enabled=True)


class JobTable:
    """The reader thread's view of the scheduled jobs (not thread-safe: one thread uses it)."""

    def __init__(self) -> None:
        self.specs: dict[int, JobSpec] = {}
        self.rows: dict[int, tuple[Any, ...]] = {}
        self.code_versions: dict[str, int] = {}
        #: ``rows_stamp`` of the table when ``rows`` were last read whole (None: read them)
        self._stamp: tuple[Any, ...] | None = None

    def full(self) -> Diff:
        with one_snapshot():
            stamp = rows_stamp(SCHEDULED)
            if stamp is not None and stamp == self._stamp:
                return Diff()
            # The first read (start-up) at full speed: no runs yet to make late.
            diff = self._diff(read_rows(SCHEDULED, paced=bool(self.rows)), scope=None)
        self._stamp = stamp
        return diff

    def partial(self, job_ids: Iterable[int] = (), plugin_ids: Iterable[int] = ()) -> Diff:
        # ``rows`` now differ from the last whole read: a later change back would match its stamp.
        self._stamp = None
        job_ids, plugin_ids = set(job_ids), set(plugin_ids)
        scope = Q(id__in=job_ids) | Q(plugin_id__in=plugin_ids)
        fresh = read_rows(SCHEDULED & scope)
        # jobs we schedule that belong to the named plugins but are no longer returned
        in_scope = {jid for jid, spec in self.specs.items() if jid in job_ids or spec.plugin_id in plugin_ids}
        return self._diff(fresh, scope=in_scope | set(fresh))

    def _diff(self, fresh_rows: dict[int, tuple[Any, ...]], scope: set[int] | None) -> Diff:
        diff = Diff()
        fresh: dict[int, JobSpec] = {}
        for job_id, row in fresh_rows.items():
            if self.rows.get(job_id) == row:
                fresh[job_id] = self.specs[job_id]
                continue
            spec = spec_from_row(row)
            fresh[job_id] = spec
            old = self.specs.get(job_id)
            if old is None or old.key != spec.key:
                diff.upserted.append(spec)
            self.specs[job_id] = spec
            self.rows[job_id] = row
        candidates = self.specs.keys() if scope is None else scope
        gone = [job_id for job_id in candidates if job_id in self.specs and job_id not in fresh]
        for job_id in gone:
            del self.specs[job_id]
            self.rows.pop(job_id, None)
        diff.removed = gone
        if gone:
            existing = set(Job.objects.filter(id__in=gone).values_list("id", flat=True))
            diff.deleted = [job_id for job_id in gone if job_id not in existing]
        for spec in {spec.package: spec for spec in fresh.values()}.values():
            known = self.code_versions.get(spec.package)
            if known is None:
                self.code_versions[spec.package] = spec.code_version
            elif known != spec.code_version:
                self.code_versions[spec.package] = spec.code_version
                diff.reloaded[spec.package] = spec.code_version
        return diff
