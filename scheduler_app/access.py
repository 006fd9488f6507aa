"""Who may read whose jobs, runs and logs: the one rule, used by the pages and the websocket.

A user always reads their own. Reading another user's jobs, runs and live logs needs the
Django permission ``scheduler_app.view_job`` ("Can view job"), the same permission that shows
every job in the admin, so an operator sees the same things in both places. ``is_staff``
alone is not enough: it lets a person into the admin, where each model needs its own
permission too. Superusers have every permission. Changing another user's jobs is not
reading: the users' pages never allow it (operators use the admin).
"""

from __future__ import annotations

from typing import Any

#: The permission that lets a user read every user's jobs, runs and logs.
VIEW_ALL_PERMISSION = "scheduler_app.view_job"


def can_view_all(user: Any) -> bool:
    """Whether ``user`` may read every user's jobs, runs and logs."""
    return bool(user is not None and user.is_authenticated and user.is_active and user.has_perm(VIEW_ALL_PERMISSION))


def can_view(user: Any, owner: Any) -> bool:
    """Whether ``user`` may read the jobs, runs and logs of ``owner`` (a user or a user id)."""
    if user is None or not user.is_authenticated:
        return False
    owner_id = getattr(owner, "pk", owner)
    return user.pk == owner_id or can_view_all(user)
