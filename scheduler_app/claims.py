"""Claims: how a scheduler node wins the right to run a slot, so each runs exactly once.

Scheduled slots: every node inserts a ``running`` ``JobRun`` for each due (job, slot) in one
multi-row ``INSERT .. ON CONFLICT (job_id, slot, attempt) DO NOTHING``; the unique constraint
decides, and the rows it inserted are exactly the claims this node won (PostgreSQL returns them
with ``RETURNING id, job_id``; SQLite reads them back as one row, ``_won``). One statement per
batch, raw DB-API statements as the writer's, because this runs tens of times a second. A job
with a run still ``running`` on another node is left out, so a job never overlaps itself across
nodes either (the engine skips the jobs it runs itself before asking).

Manual runs ("run now"): the service layer inserts a ``queued`` run; a node claims it with a
conditional update (``status=queued`` -> ``running``); a count of 0 means another node won.

These functions are synchronous: the engine runs them in its writer thread (SQLite) or its
claims thread (PostgreSQL), ``engine.access.Database.claim``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from scheduler_app import slots
from scheduler_app.jobtable import JobSpec, read_rows, spec_from_row
from scheduler_app.models import Job, JobRun
from scheduler_app.writer import datetime_adapter, in_list, json_rows, raw_cursor, to_json, values_rows

CHUNK = 400  # rows per INSERT (3 parameters each; SQLite allows 32,766)

#: A claim inserts runs only for jobs that still exist. A job deleted since the schedule last
#: heard of it would otherwise fail the run's foreign key check at commit (the constraint is
#: deferred), and with it the whole claim: every other job's slot of that round skipped.
_JOB_EXISTS = f"EXISTS (SELECT 1 FROM {Job._meta.db_table} WHERE {Job._meta.db_table}.id = column1)"


@dataclass(frozen=True, slots=True)
class SlotClaim:
    job_id: int
    slot_ms: int
    package: str


def claim_slots(node: str, claims: list[SlotClaim], now: datetime, lock: bool = True) -> dict[tuple[int, int], int]:
    """Claim the given slots for ``node``; return ``{(job_id, slot_ms): run_id}`` for the ones it won.

    At most one slot per job is claimed (the latest given): a job never overlaps itself. ``lock``
    (``lock_jobs``) may be left out while no other node can be claiming these jobs: the engine
    does so while the division of jobs has been stable for a while.
    """
    if not claims:
        return {}
    latest: dict[int, SlotClaim] = {}
    for claim in claims:
        if claim.job_id not in latest or claim.slot_ms > latest[claim.job_id].slot_ms:
            latest[claim.job_id] = claim
    claims = list(latest.values())
    table = connection.ops.quote_name(JobRun._meta.db_table)
    if connection.vendor == "postgresql":
        return _claim_postgresql(table, node, claims, latest, now, lock)
    won: dict[tuple[int, int], int] = {}
    to_db = datetime_adapter()
    now_db = to_db(now)
    running, scheduled = JobRun.Status.RUNNING.value, JobRun.Trigger.SCHEDULE.value
    with transaction.atomic(), raw_cursor() as (cursor, p):
        if lock:
            locked = lock_jobs([c.job_id for c in claims])
            claims = [c for c in claims if c.job_id in locked]
        # This node knows its own running jobs (and may not have flushed the finish of one that
        # just ended); the database tells about the other nodes'.
        # Every statement below returns one row: the DB-API gives the GIL away around each step
        # of a statement, so a row per claimed run (``RETURNING``) cost a GIL hand-over with the
        # busy event loop per run (see ``_won``).
        before = 0
        busy: set[int] = set()
        for start in range(0, len(claims), CHUNK):
            ids = [c.job_id for c in claims[start : start + CHUNK]]
            values, padding = in_list(p, len(ids), CHUNK)
            cursor.execute(
                f"SELECT (SELECT max(id) FROM {table}), (SELECT group_concat(job_id) FROM {table} "
                f"WHERE status = {p} AND node <> {p} AND job_id IN {values})",
                [running, node, *ids, *padding],
            )
            top, elsewhere = cursor.fetchone()
            before = before or top or 0
            if elsewhere:
                busy.update(map(int, elsewhere.split(",")))
        todo = [c for c in claims if c.job_id not in busy]
        # Most claims of a round share a handful of slots (the jobs due in one tick): each slot
        # is converted once.
        slot_db: dict[int, Any] = {}
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            params: list[Any] = [scheduled, running, node, now_db, now_db]
            for c in chunk:
                slot = slot_db.get(c.slot_ms)
                if slot is None:
                    slot = slot_db[c.slot_ms] = to_db(slots.to_datetime(c.slot_ms))
                params += (c.job_id, slot, c.package)
            rows, padding = values_rows(p, 3, len(chunk), CHUNK)
            # What all rows share is given once (three parameters a row, not twelve: binding
            # them was most of a claim's CPU). The WHERE (a job deleted meanwhile gets no run)
            # also keeps SQLite's parser from reading ON CONFLICT as a join constraint.
            cursor.execute(
                f"INSERT INTO {table} (job_id, slot, attempt, trigger, status, node, plugin_package, created_at, "
                f"started_at, error, traceback, log_count) "
                f"SELECT column1, column2, 1, {p}, {p}, {p}, column3, {p}, {p}, '', '', 0 "
                f"FROM ({rows}) WHERE {_JOB_EXISTS} "  # no job has the NULL id of a padding row
                "ON CONFLICT (job_id, slot, attempt) DO NOTHING",
                params + padding,
            )
        for run_id, job_id in _won(cursor, table, p, before):
            won[(job_id, latest[job_id].slot_ms)] = run_id
    return won


def _won(cursor: Any, table: str, p: str, before: int) -> list[tuple[int, int]]:
    """SQLite: ``(run id, job id)`` of the runs this transaction inserted, read as one row.

    The claim's transaction holds SQLite's write lock (``BEGIN IMMEDIATE``), so every run with an
    id above the largest before it is one of its own. (Not ``lastrowid - rowcount``: a row
    skipped by ``DO NOTHING`` still uses up an AUTOINCREMENT id, so the ids can have gaps.)
    Both aggregates step through the same rows in the same order, so their lists pair up.
    """
    cursor.execute(f"SELECT group_concat(id), group_concat(job_id) FROM {table} WHERE id > {p}", [before])
    run_ids, job_ids = cursor.fetchone()
    if not run_ids:
        return []
    return list(zip(map(int, run_ids.split(",")), map(int, job_ids.split(",")), strict=True))


def _claim_postgresql(
    table: str, node: str, claims: list[SlotClaim], latest: dict[int, SlotClaim], now: datetime, lock: bool
) -> dict[tuple[int, int], int]:
    """``claim_slots`` on PostgreSQL: one statement, the rows in one JSON parameter (``json_rows``).

    The "running on another node" check is part of the ``INSERT``. Without ``lock`` the statement
    is its own transaction (autocommit, durable): one round trip to the server where a
    transaction of a check and an insert took four (``BEGIN``, two statements, ``COMMIT``), each
    a wake-up of this thread and of the server's process on a busy machine: most of a claim's
    time, so most of the start lag (docs/performance.md, "Saturation, wave 2h"). With ``lock``
    the insert follows ``lock_jobs`` in one transaction; under READ COMMITTED its snapshot is
    taken after the locks are held, so it sees every claim committed before them.
    """
    slot_text: dict[int, str] = {}
    rows = []
    for c in claims:
        slot = slot_text.get(c.slot_ms)
        if slot is None:
            slot = slot_text[c.slot_ms] = slots.to_datetime(c.slot_ms).isoformat()
        rows.append((c.job_id, slot, c.package))
    running, scheduled = JobRun.Status.RUNNING.value, JobRun.Trigger.SCHEDULE.value
    with transaction.atomic() if lock else nullcontext():
        if lock:
            locked = lock_jobs([c.job_id for c in claims])
            rows = [row for row in rows if row[0] in locked]
        if not rows:
            return {}
        with raw_cursor() as (cursor, _p):
            # NOT IN a subquery: one hashed set of the jobs running elsewhere (read through the
            # (status, node) index), not a probe per row through each job's whole history.
            cursor.execute(
                f"INSERT INTO {table} (job_id, slot, attempt, trigger, status, node, plugin_package, created_at, "
                f"started_at, error, traceback, log_count) "
                f"SELECT column1, column2, 1, %s, %s, %s, column3, %s, %s, '', '', 0 "
                f"FROM {json_rows(['bigint', 'timestamptz', 'text'])} AS v WHERE {_JOB_EXISTS} "
                f"AND column1 NOT IN (SELECT job_id FROM {table} WHERE status = %s AND node <> %s) "
                "ON CONFLICT (job_id, slot, attempt) DO NOTHING RETURNING id, job_id",
                [scheduled, running, node, now, now, to_json(rows), running, node],
            )
            return {(job_id, latest[job_id].slot_ms): run_id for run_id, job_id in cursor.fetchall()}


def lock_jobs(job_ids: list[int]) -> set[int]:
    """Lock the jobs' rows for this transaction; return those locked (all of them on SQLite).

    Claims of one job then follow each other, so the "running anywhere" check sees every other
    node's committed claim: without it two nodes whose views of the division differ for a moment
    could each claim a different slot of one job and run them side by side. A job another node
    is claiming right now is left out (SKIP LOCKED: its claim settles it; waiting would let a
    frozen node's open transaction hold this node up). ``NO KEY UPDATE`` does not conflict with
    the foreign-key checks of run inserts. SQLite writes one transaction at a time anyway."""
    if not connection.features.has_select_for_update_skip_locked:
        return set(job_ids)
    if connection.vendor == "postgresql":
        # One JSON parameter, not an IN list of thousands of placeholders (see ``json_rows``).
        with raw_cursor() as (cursor, _p):
            cursor.execute(
                f"SELECT id FROM {connection.ops.quote_name(Job._meta.db_table)} "
                "WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text(%s::jsonb)) "
                "ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
                [to_json(job_ids)],
            )
            return {row[0] for row in cursor.fetchall()}
    return set(
        Job.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(id__in=job_ids)
        .order_by("id")
        .values_list("id", flat=True)
    )


@dataclass(frozen=True, slots=True)
class ManualClaim:
    """A queued run this node won: a manual run ("run now") or a retry."""

    run_id: int
    slot: datetime
    started_at: datetime
    spec: JobSpec
    trigger: str = JobRun.Trigger.MANUAL.value
    attempt: int = 1


def queued_run_ids(limit: int = 200, now: datetime | None = None) -> list[int]:
    """Queued runs ready to start: manual runs, and retries whose delay has passed."""
    return [run_id for run_id, _job_id in queued_runs(limit, now)]


def queued_runs(limit: int = 200, now: datetime | None = None) -> list[tuple[int, int]]:
    """``(run id, job id)`` of the queued runs ready to start (the engine keeps its share's)."""
    ready = Q(not_before__isnull=True) | Q(not_before__lte=now or timezone.now())
    return list(
        JobRun.objects.filter(ready, status=JobRun.Status.QUEUED)
        .order_by("created_at", "id")
        .values_list("id", "job_id")[:limit]
    )


def queue_retry(job_id: int, slot: datetime, attempt: int, not_before: datetime, package: str) -> None:
    """Queue attempt ``attempt`` of (job, slot), to start at ``not_before``, claimed like a manual
    run. Queued twice (two nodes), it exists once: the unique (job, slot, attempt) decides."""
    retry = JobRun(
        job_id=job_id,
        slot=slot,
        attempt=attempt,
        trigger=JobRun.Trigger.RETRY,
        status=JobRun.Status.QUEUED,
        not_before=not_before,
        plugin_package=package,
    )
    JobRun.objects.bulk_create([retry], ignore_conflicts=True)


def cancel_requests(node: str, run_ids: list[int]) -> dict[int, str]:
    """Runs of ``node`` (among ``run_ids``) someone asked to cancel: run id -> who asked.

    The fallback for a lost ``run.cancel`` message."""
    if not run_ids:
        return {}
    rows = JobRun.objects.filter(
        id__in=run_ids, node=node, status=JobRun.Status.RUNNING, cancel_requested_at__isnull=False
    ).values_list("id", "cancelled_by__username")
    return {run_id: username or "an operator" for run_id, username in rows}


def claim_queued(node: str, run_ids: list[int], busy_job_ids: set[int], now: datetime) -> list[ManualClaim]:
    """Claim queued runs (manual runs, due retries) by conditional update; skip jobs running anywhere."""
    running_elsewhere = JobRun.objects.filter(job_id=OuterRef("job_id"), status=JobRun.Status.RUNNING)
    won: list[int] = []
    jobs = dict(JobRun.objects.filter(id__in=run_ids).values_list("id", "job_id"))
    for run_id in run_ids:
        with transaction.atomic():
            if run_id not in jobs or not lock_jobs([jobs[run_id]]):
                continue
            updated = (
                JobRun.objects.filter(id=run_id, status=JobRun.Status.QUEUED)
                .exclude(job_id__in=busy_job_ids)
                .filter(~Exists(running_elsewhere))
                .update(status=JobRun.Status.RUNNING, node=node, started_at=now)
            )
        if updated == 1:
            won.append(run_id)
    if not won:
        return []
    runs = list(
        JobRun.objects.filter(id__in=won).order_by("id").values_list("id", "job_id", "slot", "trigger", "attempt")
    )
    rows = read_rows(Q(id__in={run[1] for run in runs}))
    return [
        ManualClaim(run_id, slot, now, spec_from_row(rows[job_id]), trigger, attempt)
        for run_id, job_id, slot, trigger, attempt in runs
    ]
