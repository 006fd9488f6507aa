"""Read-side queries for the users' pages and the live log consumer.

Every function here issues a fixed number of queries, whatever the size of the history: the
"last run" of a job is one correlated subquery served by the (job, -slot) index, and run
history pages use keyset pagination instead of OFFSET and a full COUNT(*).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from scheduler_app import schedules, slots, streams
from scheduler_app.compiled_sql import CompiledQuery
from scheduler_app.models import Job, JobRun, LogLine, Plugin

#: Lines a fresh log view gets (the newest); a resume gets every line after its cursor, up to REPLAY_MAX.
REPLAY_RECENT = 300
REPLAY_MAX = 5000
#: The replay looks at this many of the newest runs; a resume cursor older than their lines starts at them.
REPLAY_RUNS = 100
#: The run page shows this many lines of a log at once (the tail, then earlier pages on request).
LOG_PAGE = 500
#: Lines per database read of a log download.
LOG_TEXT_CHUNK = 2000
#: Run history: rows per page and how far the "how many runs" count goes before it says "more than".
HISTORY_PAGE = 50
HISTORY_COUNT_CAP = 10_000


def job_timing(job: Job, plugin: Plugin) -> schedules.Timing | None:
    """The slot math's view of a saved job; None if its stored schedule no longer parses."""
    try:
        return schedules.Timing.of(job.pk, job.schedule, plugin.interval, job.effective_timezone, job.jitter_seconds)
    except schedules.ScheduleError:
        return None


def schedule_words(job: Job, plugin: Plugin) -> str:
    timing = job_timing(job, plugin)
    if timing is None:
        return f"“{job.schedule}” (no longer valid: edit and save)"
    return schedules.describe(timing.schedule, timing.timezone, plugin.interval)


def roll_interval(job: Job, plugin: Plugin) -> int:
    """Seconds between the job's slots if they are evenly spaced (no cron, no jitter), else 0."""
    timing = job_timing(job, plugin)
    if timing is None or timing.schedule.kind == "cron" or timing.jitter_seconds:
        return 0
    return timing.interval_seconds


def next_run_at(job: Job, plugin: Plugin, now: datetime | None = None) -> datetime | None:
    """When the scheduler will next run ``job`` (the engine's slot math), in the job's time zone;
    None if it is not scheduled."""
    if not job.active or not plugin.enabled:
        return None
    timing = job_timing(job, plugin)
    if timing is None:
        return None
    now_ms = slots.to_ms(now or timezone.now())
    return slots.to_datetime(schedules.next_slot(timing, now_ms)).astimezone(schedules.zone(timing.timezone))


def _with_last_run(jobs: Any) -> Any:
    newest = JobRun.objects.filter(job=OuterRef("pk")).order_by("-slot", "-id").values("id")[:1]
    return jobs.annotate(last_run_id=Subquery(newest))


@dataclass
class JobRow:
    """A job as a page shows it: with its last and next run (and, added by the view, its form)."""

    job: Job
    last_run: JobRun | None = None
    next_run: datetime | None = None
    form: Any = None
    #: the schedule in words, e.g. "every weekday at 08:00 (Europe/Paris)"
    schedule_words: str = ""
    #: seconds between slots when they are evenly spaced (the page rolls a passed next run on by
    #: it); 0 for cron and jittered schedules, whose next run only the server computes
    roll_interval: int = 0
    history_url: str = ""
    last_run_url: str = ""
    #: Why the stored config no longer validates (set by the plugin page), else "".
    config_problem: str = ""

    # what templates read from the job itself
    @property
    def pk(self) -> int:
        return self.job.pk

    @property
    def description(self) -> str:
        return self.job.description

    @property
    def active(self) -> bool:
        return self.job.active


def _rows(jobs: list[Job], plugins: dict[int, Plugin]) -> list[JobRow]:
    ids = [getattr(j, "last_run_id", None) for j in jobs]
    runs = JobRun.objects.defer("traceback").in_bulk([i for i in ids if i]) if any(ids) else {}
    now = timezone.now()
    rows = []
    for job, run_id in zip(jobs, ids, strict=True):
        plugin = plugins[job.plugin_id]
        job.plugin = plugin  # avoid one query per job for job.plugin
        rows.append(
            JobRow(
                job,
                runs.get(run_id) if run_id else None,
                next_run_at(job, plugin, now),
                schedule_words=schedule_words(job, plugin),
                roll_interval=roll_interval(job, plugin),
            )
        )
    return rows


@dataclass
class PluginRow:
    plugin: Plugin
    jobs: list[JobRow] = field(default_factory=list)
    url: str = ""


def dashboard(user: Any) -> list[PluginRow]:
    """Every enabled plugin, and every disabled one ``user`` has jobs for (shown as disabled, not
    silently gone), with ``user``'s jobs, each with its last and next run (3 queries)."""
    jobs = _DASHBOARD_JOBS.run(user_id=user.pk)
    used = {job.plugin_id for job in jobs}
    # All plugins (a site has a handful) and the filter here: the same SQL for every user.
    rows = {p.pk: PluginRow(p) for p in _ALL_PLUGINS.run() if p.enabled or p.pk in used}
    for job_row in _rows(jobs, {pk: row.plugin for pk, row in rows.items()}):
        rows[job_row.job.plugin_id].jobs.append(job_row)
    return list(rows.values())


# The pages' fixed queries, compiled once per process (scheduler_app/compiled_sql.py says why).
_DASHBOARD_JOBS = CompiledQuery(
    lambda user_id: _with_last_run(Job.objects.filter(user_id=user_id)).order_by("plugin_id", "-active", "id"),
    user_id=-7_000_001,
)
_ALL_PLUGINS = CompiledQuery(lambda: Plugin.objects.order_by("name", "package"))
_PLUGIN_JOBS = CompiledQuery(
    lambda user_id, plugin_id: _with_last_run(Job.objects.filter(user_id=user_id, plugin_id=plugin_id)).order_by(
        "-active", "id"
    ),
    user_id=-7_000_001,
    plugin_id=-7_000_002,
)


def plugin_jobs(user: Any, plugin: Plugin) -> list[JobRow]:
    """``user``'s jobs of ``plugin``, active first, each with its last and next run (2 queries)."""
    jobs = _PLUGIN_JOBS.run(user_id=user.pk, plugin_id=plugin.pk)
    return _rows(jobs, {plugin.pk: plugin})


@dataclass
class HistoryPage:
    runs: list[JobRun]
    total: int
    total_capped: bool
    next_cursor: str | None
    is_first: bool


def encode_cursor(run: JobRun) -> str:
    return f"{int(run.slot.timestamp() * 1_000_000)}.{run.pk}"


def decode_cursor(raw: str) -> tuple[datetime, int] | None:
    try:
        micros, run_id = raw.split(".", 1)
        slot = datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC)
        return slot, int(run_id)
    except (ValueError, OverflowError, OSError):
        return None


def _history(job_id: int) -> Any:
    return JobRun.objects.filter(job_id=job_id).defer("traceback", "error").order_by("-slot", "-id")


_FIRST_HISTORY_PAGE = CompiledQuery(lambda job_id: _history(job_id)[: HISTORY_PAGE + 1], job_id=-7_000_003)


def run_history(job: Job, cursor: str | None = None, page_size: int = HISTORY_PAGE) -> HistoryPage:
    """One page of ``job``'s runs, newest first, after ``cursor`` (keyset on (slot, id))."""
    runs = _history(job.pk)
    after = decode_cursor(cursor) if cursor else None
    if after is not None:
        slot, run_id = after
        # slot <= cursor is an index range on (job, slot); the tie on slot is settled by id.
        runs = runs.filter(slot__lte=slot).exclude(slot=slot, id__gte=run_id)
    if after is None and page_size == HISTORY_PAGE:  # the first page, by far the most viewed
        page = _FIRST_HISTORY_PAGE.run(job_id=job.pk)
    else:
        page = list(runs[: page_size + 1])
    has_more = len(page) > page_size
    page = page[:page_size]
    if after is None and not has_more:
        total = len(page)  # the first page holds the whole history: nothing left to count
    else:
        # A capped count: exact up to the cap, "more than" beyond it, never a scan of a huge history.
        total = JobRun.objects.filter(job=job).order_by()[: HISTORY_COUNT_CAP + 1].count()
    return HistoryPage(
        runs=page,
        total=min(total, HISTORY_COUNT_CAP),
        total_capped=total > HISTORY_COUNT_CAP,
        next_cursor=encode_cursor(page[-1]) if has_more and page else None,
        is_first=after is None,
    )


def run_log_page(
    run: JobRun, before_seq: int | None = None, limit: int = LOG_PAGE
) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` lines of one run just before line ``before_seq`` (the tail without it),
    oldest first as ``streams.line_payload`` dicts (the live lines' shape), and whether
    earlier lines exist. One query on the (run, seq) index, whatever the log's length."""
    lines = LogLine.objects.filter(run_id=run.pk)
    if before_seq is not None:
        lines = lines.filter(seq__lt=before_seq)
    rows = list(lines.order_by("-seq").values("id", "seq", "created_at", "level", "message")[: limit + 1])
    earlier = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    return [streams.line_payload(run_id=run.pk, job_id=run.job_id, **row) for row in rows], earlier


def log_text_chunk(run_id: int, after_seq: int, limit: int = LOG_TEXT_CHUNK) -> tuple[str, int | None]:
    """Plain text of up to ``limit`` lines of a run after line ``after_seq``, and the sequence
    number to continue after (None at the end). The download streams these, so memory stays
    flat for a log of any length."""
    rows = list(
        LogLine.objects.filter(run_id=run_id, seq__gt=after_seq)
        .order_by("seq")
        .values_list("seq", "created_at", "level", "message")[:limit]
    )
    text = "".join(
        f"{created_at.isoformat(timespec='milliseconds')} {logging.getLevelName(level):<8} {message}\n"
        for _, created_at, level, message in rows
    )
    return text, (rows[-1][0] if len(rows) == limit else None)


def replay_lines(
    plugin_id: int, user_id: int, *, after: int | None = None, run_id: int | None = None
) -> list[dict[str, Any]]:
    """Stored lines for a live log view, oldest first, as ``streams.line_payload`` dicts.

    Without ``after``: the newest REPLAY_RECENT lines. With ``after`` (the last LogLine id the
    browser saw): every line after it, up to REPLAY_MAX. ``run_id`` narrows it to one run.
    """
    if run_id is not None:
        run_ids = list(
            JobRun.objects.filter(pk=run_id, job__user_id=user_id, job__plugin_id=plugin_id).values_list(
                "id", flat=True
            )
        )
    else:
        job_ids = list(Job.objects.filter(user_id=user_id, plugin_id=plugin_id).values_list("id", flat=True))
        if not job_ids:
            return []
        # The newest runs, found through the (job, -slot) index; lines of older runs are history, not "live".
        run_ids = list(
            JobRun.objects.filter(job_id__in=job_ids)
            .order_by("-slot", "-id")
            .values_list("id", flat=True)[:REPLAY_RUNS]
        )
    if not run_ids:
        return []
    lines = LogLine.objects.filter(run_id__in=run_ids)
    if after is not None:
        chosen = list(lines.filter(id__gt=after).order_by("id")[:REPLAY_MAX].values(*_LINE_FIELDS))
    else:
        chosen = list(lines.order_by("-id")[:REPLAY_RECENT].values(*_LINE_FIELDS))
        chosen.reverse()
    return [_payload(row) for row in chosen]


def lines_between(gaps: list[tuple[int, int, int]], *, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Stored lines filling ``(run, first seq, next seq)`` gaps, newer than ``after_id``, in order."""
    result: list[dict[str, Any]] = []
    for run_id, first, stop in gaps:
        rows = (
            LogLine.objects.filter(run_id=run_id, seq__gte=first, seq__lt=stop, id__gt=after_id)
            .order_by("seq")
            .values(*_LINE_FIELDS)[: max(0, limit - len(result))]
        )
        result += [_payload(row) for row in rows]
    return result


_LINE_FIELDS = ("id", "run_id", "run__job_id", "seq", "created_at", "level", "message")


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    return streams.line_payload(
        id=row["id"],
        run_id=row["run_id"],
        job_id=row["run__job_id"],
        seq=row["seq"],
        created_at=row["created_at"],
        level=row["level"],
        message=row["message"],
    )


def stream_context(plugin_id: int, user_id: int) -> dict[str, Any]:
    """What a log view needs besides lines: the user's jobs of the plugin (id -> label) and the runs in flight."""
    jobs = {
        str(pk): (desc or f"job {pk}")
        for pk, desc in Job.objects.filter(user_id=user_id, plugin_id=plugin_id).values_list("id", "description")
    }
    live = (
        JobRun.objects.filter(
            job__user_id=user_id,
            job__plugin_id=plugin_id,
            status__in=[JobRun.Status.QUEUED, JobRun.Status.RUNNING],
        )
        .select_related("job")
        .order_by("-id")[:20]
    )
    return {"jobs": jobs, "runs": [streams.run_payload(streams.RunSnapshot.of(r)) for r in live]}
