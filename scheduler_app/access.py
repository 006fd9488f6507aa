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

from django.conf import settings
from django.db.models import Q

#: The permission that lets a user read every user's jobs, runs and logs.
VIEW_ALL_PERMISSION = "scheduler_app.view_job"
_APP_LABEL, _CODENAME = VIEW_ALL_PERMISSION.split(".")
_MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


def can_view_all(user: Any) -> bool:
    """Whether ``user`` may read every user's jobs, runs and logs."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    cached = getattr(user, "_can_view_all", None)  # asked again within the same request
    if cached is None:
        cached = user._can_view_all = _has_view_all_permission(user)
    return bool(cached)


def _has_view_all_permission(user: Any) -> bool:
    """``user.has_perm(VIEW_ALL_PERMISSION)`` in one query instead of ModelBackend's two.

    Django's ModelBackend loads *all* of a user's permissions, then all of their groups'
    (two queries and two sets on every dashboard view, py-spy: 14 % of its CPU), to answer
    one question. With only that backend configured, the same answer is one EXISTS over
    the user's own and their groups' grants of this permission; any other backend gets
    ``has_perm`` itself.
    """
    if user.is_superuser:
        return True
    if list(settings.AUTHENTICATION_BACKENDS) != [_MODEL_BACKEND]:
        return bool(user.has_perm(VIEW_ALL_PERMISSION))
    from django.contrib.auth.models import Permission

    return (
        Permission.objects.filter(content_type__app_label=_APP_LABEL, codename=_CODENAME)
        .filter(Q(user=user) | Q(group__user=user))
        .exists()
    )


def can_view(user: Any, owner: Any) -> bool:
    """Whether ``user`` may read the jobs, runs and logs of ``owner`` (a user or a user id)."""
    if user is None or not user.is_authenticated:
        return False
    owner_id = getattr(owner, "pk", owner)
    return user.pk == owner_id or can_view_all(user)
