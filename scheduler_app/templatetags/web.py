"""Template helpers of the users' pages: durations, relative times, status badges, intervals.

Log lines are not rendered here: static/js/logview.js draws stored and live lines alike (one
ANSI renderer, text only through ``textContent``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone

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
