"""Run statistics for the pages: each job's success rate and duration trend over its recent runs.

``recent_runs(job_ids)`` reads the last ``RECENT`` runs of every job on a page in ONE query
whose cost does not grow with the history: a ``UNION ALL`` of one ``ORDER BY slot DESC
LIMIT n`` per job, each served by the (job, -slot) index. (A window function over all of a
job's runs would read the whole history; PostgreSQL's LATERAL does this too, but SQLite has
none; and Django's ORM refuses ordered, sliced parts of a union on SQLite, hence raw SQL.)

``sparkline(stats)`` draws the trend as a small inline SVG, server-side: one bar per run,
oldest left, height the duration (relative to the longest shown), colour the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from scheduler_app.models import JobRun

#: How many recent runs a job's chart and success rate cover.
RECENT = 20
#: SQLite allows 500 terms in one compound SELECT; bigger pages take one query per chunk.
_CHUNK = 400

_GOOD = JobRun.Status.SUCCEEDED.value
_BAD = {JobRun.Status.FAILED.value, JobRun.Status.TIMED_OUT.value, JobRun.Status.LOST.value}


@dataclass
class JobStats:
    """A job's recent finished runs, oldest first, as (status, duration in seconds)."""

    runs: list[tuple[str, float | None]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.runs)

    @property
    def success_rate(self) -> float | None:
        """Share of succeeded runs among the finished ones (None without any)."""
        judged = [status for status, _ in self.runs if status == _GOOD or status in _BAD]
        return sum(status == _GOOD for status in judged) / len(judged) if judged else None

    @property
    def success_percent(self) -> str:
        rate = self.success_rate
        return "—" if rate is None else f"{rate * 100:.0f} %"

    @property
    def median_duration(self) -> float | None:
        values = sorted(d for _, d in self.runs if d is not None)
        return values[len(values) // 2] if values else None

    @property
    def chart(self) -> SafeString:
        return sparkline(self)


def recent_runs(job_ids: list[int], limit: int = RECENT) -> dict[int, JobStats]:
    """The last ``limit`` finished runs of each job, one query per 400 jobs (not per run)."""
    stats: dict[int, JobStats] = {job_id: JobStats() for job_id in job_ids}
    table = JobRun._meta.db_table
    finished = tuple(str(s) for s in JobRun.FINISHED)
    marks = ", ".join(["%s"] * len(finished))
    for start in range(0, len(job_ids), _CHUNK):
        chunk = job_ids[start : start + _CHUNK]
        parts, params = [], []
        for index, job_id in enumerate(chunk):
            parts.append(
                f"SELECT * FROM (SELECT id, job_id, status, slot, started_at, finished_at FROM {table} "
                f"WHERE job_id = %s AND status IN ({marks}) ORDER BY slot DESC, id DESC LIMIT %s) AS r{index}"
            )
            params.extend([job_id, *finished, limit])
        if not parts:
            continue
        rows: dict[int, list[tuple[Any, int, str, float | None]]] = {}
        for run_id, job_id, status, slot, started, finished in _rows(" UNION ALL ".join(parts), params):
            duration = finished - started if started and finished else None  # as JobRun.duration
            rows.setdefault(job_id, []).append((slot, run_id, status, _seconds(duration)))
        for job_id, runs in rows.items():
            runs.sort(key=lambda r: (r[0], r[1]))
            stats[job_id].runs = [(status, seconds) for _, _, status, seconds in runs]
    return stats


def _rows(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` with the three time columns converted as the ORM converts
    ``JobRun``'s fields (SQLite returns text): what ``JobRun.objects.raw`` gave, without building
    a model per row (``RawQuerySet``'s set-up alone was ~7 % of the dashboard's CPU)."""
    slot_field = JobRun._meta.get_field("slot")
    column = slot_field.get_col(JobRun._meta.db_table)
    converters = [*connection.ops.get_db_converters(column), *slot_field.get_db_converters(connection)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if not converters:
        return rows
    converted = []
    for run_id, job_id, status, *times in rows:
        for convert in converters:
            times = [convert(value, column, connection) for value in times]
        converted.append((run_id, job_id, status, *times))
    return converted


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


_COLOURS = {
    JobRun.Status.SUCCEEDED.value: "#0f9d6b",
    JobRun.Status.FAILED.value: "#d64545",
    JobRun.Status.TIMED_OUT.value: "#e08a1e",
    JobRun.Status.LOST.value: "#8a6d3b",
    JobRun.Status.CANCELLED.value: "#9aa3ae",
}


def sparkline(stats: JobStats, width: int = 120, height: int = 28) -> SafeString:
    """A small SVG bar chart of the recent runs (no script, no external request: CSP-safe)."""
    if not stats.runs:
        return mark_safe('<span class="muted small">no finished runs yet</span>')
    slot = width / RECENT
    longest = max((d for _, d in stats.runs if d), default=0.0) or 1.0
    bars = []
    for index, (status, duration) in enumerate(stats.runs):
        h = max(3.0, (duration or 0.0) / longest * (height - 2))
        label = f"{status.replace('_', ' ')}" + (f", {duration:.2f} s" if duration is not None else "")
        bars.append((f"{index * slot + 1:.1f}", f"{height - h:.1f}", f"{max(slot - 2, 1):.1f}", f"{h:.1f}",
                     _COLOURS.get(status, "#9aa3ae"), label))  # fmt: skip
    title = f"last {stats.count} runs: {stats.success_percent} succeeded"
    return format_html(
        '<svg class="spark" role="img" width="{}" height="{}" viewBox="0 0 {} {}" aria-label="{}">'
        "<title>{}</title>{}</svg>",
        width,
        height,
        width,
        height,
        title,
        title,
        format_html_join("", '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>', bars),
    )
