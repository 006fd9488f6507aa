"""URLs of one-id routes (``/jobs/<id>/save/``) without a ``reverse()`` per link.

A page lists many objects with several links each (the plugin page: eight per job, the run
history: one per run), and ``reverse()`` (or ``{% url %}``) resolves the route anew every time.
The pattern of each route name is reversed once per process with a placeholder id and filled in
with ``str.format``: the same URL for an integer id (the script prefix of a deployment under a
sub-path is the same for every request, so it is kept with the pattern).
"""

from __future__ import annotations

from django.urls import reverse

_PLACEHOLDER = 987654321
_PATTERNS: dict[str, str] = {}


def id_url(name: str, pk: int) -> str:
    """``reverse(name, args=[pk])`` for a route whose only argument is an integer id."""
    pattern = _PATTERNS.get(name)
    if pattern is None:
        pattern = _PATTERNS[name] = reverse(name, args=[_PLACEHOLDER]).replace(str(_PLACEHOLDER), "{}")
    return pattern.format(int(pk))
