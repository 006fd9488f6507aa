"""Template helpers of the users' pages: durations, relative times, status badges, intervals.

Log lines are not rendered here: static/js/logview.js draws stored and live lines alike (one
ANSI renderer, text only through ``textContent``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

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
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


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
