"""Template helpers of the users' pages: durations, relative times, status badges, intervals.

Log lines are not rendered here: static/js/logview.js draws stored and live lines alike (one
ANSI renderer, text only through ``textContent``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django import template
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from scheduler_app import schedules
from scheduler_app.fast_urls import id_url as _id_url

if TYPE_CHECKING:
    from scheduler_app.services import SchedulePreview
    from scheduler_app.stats import JobStats

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    """``1.234 s``, ``2 min 5 s``, ``1 h 3 min``; an em dash when unknown."""
    if value is None:
        return "—"
    seconds = value.total_seconds()
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def relative(value: datetime | None) -> str:
    """``12 s ago``, ``in 3 min``: short and unambiguous in a table cell."""
    if value is None:
        return "—"
    delta = (value - timezone.now()).total_seconds()
    future = delta > 0
    seconds = abs(delta)
    if seconds < 1:
        return "now"
    if seconds < 60:
        text = f"{int(seconds)} s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)} min"
    elif seconds < 86400:
        text = f"{int(seconds // 3600)} h"
    else:
        text = f"{int(seconds // 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def _server_text(value: datetime) -> str:
    """The fallback text (before the page's script shows the browser's zone): server time, labelled."""
    return timezone.localtime(value).strftime(schedules.TIME_FORMAT)


@register.filter
def abs_time(value: datetime | None) -> SafeString:
    """A ``<time>`` that static/js/pages.js rewrites in the browser's time zone, with its label."""
    if value is None:
        return mark_safe('<span class="muted">—</span>')
    return format_html('<time datetime="{}" data-time="abs">{}</time>', value.isoformat(), _server_text(value))


@register.filter
def rel_time(value: datetime | None) -> SafeString:
    """``12 s ago`` / ``in 3 min`` that keeps ticking in the browser; the exact time in its title."""
    if value is None:
        return mark_safe('<span class="muted">—</span>')
    return format_html(
        '<time datetime="{}" data-time="rel" title="{}">{}</time>',
        value.isoformat(),
        _server_text(value),
        relative(value),
    )


@register.filter
def status_class(status: str) -> str:
    return f"badge badge-{status.replace('_', '-')}" if status else "badge"


@register.filter
def every(seconds: int) -> str:
    """A plugin interval in words: ``every 10 s``, ``every 5 min``, ``every 2 h``."""
    if seconds % 3600 == 0:
        return f"every {seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"every {seconds // 60} min"
    return f"every {seconds} s"


@register.filter
def next_runs_items(preview: SchedulePreview) -> SafeString:
    """A schedule preview's next runs as ``<li><time>`` items, in its zone (the runs are already)."""
    return format_html_join(
        "",
        '<li><time datetime="{}">{}</time></li>',
        ((run.isoformat(), run.strftime(preview.TIME_FORMAT)) for run in preview.next_runs),
    )


# --- the cells every job shows (dashboard rows, plugin page cards) ---------------------------------
# Written here rather than as included templates: a page shows them for every job, and an
# {% include %} with its context and a dozen variable lookups cost ~a quarter of the dashboard
# (cProfile). Same HTML as the partial templates they replace (tests/test_page_rendering.py).


@register.simple_tag
def run_cell(run: Any, url: str) -> SafeString:
    """A job's last run: its status badge linking to it, when, and how long it took."""
    if not run:
        return mark_safe('<span class="muted">never ran</span>\n')
    html = format_html(
        '<a href="{}" class="{}" data-run-id="{}">{}</a>\n{}',
        url,
        status_class(run.status),
        run.pk,
        run.get_status_display(),
        rel_time(run.finished_at or run.started_at or run.slot),  # the template's `default` chain
    )
    if run.duration:
        html += format_html(' <span class="muted">· {}</span>', duration(run.duration))
    return mark_safe(html + "\n")


@register.simple_tag
def next_run_cell(next_run: datetime | None, interval: int, none_text: str = "") -> SafeString:
    """A job's next run. ``data-interval`` (evenly spaced slots only; 0 for cron) lets
    static/js/pages.js roll it forward as slots pass."""
    if not next_run:
        return format_html('<span class="muted">{}</span>\n', none_text or "—")
    local = timezone.localtime(next_run)  # as the `date` filter shows an aware time (USE_TZ)
    return format_html(
        '<time datetime="{}" data-time="rel" data-interval="{}" title="{}">{}</time>\n',
        local.isoformat(),
        interval,
        local.strftime(schedules.TIME_FORMAT),
        relative(next_run),
    )


@register.simple_tag
def run_stats_cell(stats: JobStats | None) -> SafeString:
    """A job's recent runs (scheduler_app/stats.py): bars = durations, colours = outcomes, then
    the success rate."""
    if not stats:
        return mark_safe("\n")
    rate = ""
    if stats.count:
        rate = format_html(
            ' <span class="spark-rate" title="succeeded among the last {} finished runs">{}</span>',
            stats.count,
            stats.success_percent,
        )
    return format_html('<span class="spark-wrap">{}{}</span>\n', stats.chart, rate)


@register.filter
def id_url(pk: int, name: str) -> str:
    """``{{ job.pk|id_url:"job_save" }}``: ``{% url "job_save" job.pk %}`` without a reverse per link."""
    return _id_url(name, pk)
