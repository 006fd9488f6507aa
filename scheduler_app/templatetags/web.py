"""Template helpers of the users' pages: durations, status badges and ANSI-coloured log text.

``ansi`` escapes every character of a log message first and only then turns SGR codes into
``<span class>`` tags, so a plugin logging ``<script>`` shows text; the browser view
(static/js/logview.js) follows the same rules with ``textContent``.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_OTHER_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


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
def level_name(level: int) -> str:
    return logging.getLevelName(level)


@register.filter
def status_class(status: str) -> str:
    return f"badge badge-{status.replace('_', '-')}" if status else "badge"


def _sgr_classes(codes: list[int], state: dict[str, object]) -> None:
    for code in codes or [0]:
        if code == 0:
            state.clear()
        elif code == 1:
            state["bold"] = True
        elif code == 22:
            state.pop("bold", None)
        elif 30 <= code <= 37 or 90 <= code <= 97:
            state["fg"] = code
        elif code == 39:
            state.pop("fg", None)


@register.filter
def ansi(message: str) -> SafeString:
    """Escape ``message`` and render SGR colour codes (30-37, 90-97, bold, reset) as spans."""
    out: list[str] = []
    state: dict[str, object] = {}
    pos = 0
    for match in _SGR.finditer(message):
        _append(out, message[pos : match.start()], state)
        try:
            codes = [int(c) for c in match.group(1).split(";") if c != ""]
        except ValueError:
            codes = []
        _sgr_classes(codes, state)
        pos = match.end()
    _append(out, message[pos:], state)
    return mark_safe("".join(out))  # every piece of text went through escape()


def _append(out: list[str], text: str, state: dict[str, object]) -> None:
    text = _OTHER_ESCAPES.sub("", text)
    if not text:
        return
    classes = []
    if "fg" in state:
        classes.append(f"ansi-{state['fg']}")
    if state.get("bold"):
        classes.append("ansi-bold")
    if classes:
        out.append(f'<span class="{" ".join(classes)}">{escape(text)}</span>')
    else:
        out.append(escape(text))


@register.filter
def every(seconds: int) -> str:
    """A plugin interval in words: ``every 10 s``, ``every 5 min``, ``every 2 h``."""
    if seconds % 3600 == 0:
        return f"every {seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"every {seconds // 60} min"
    return f"every {seconds} s"
