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

from scheduler_app import auth_backend
from scheduler_app.compiled_sql import CompiledQuery

#: The permission that lets a user read every user's jobs, runs and logs.
VIEW_ALL_PERMISSION = "scheduler_app.view_job"
_APP_LABEL, _CODENAME = VIEW_ALL_PERMISSION.split(".")


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
    one question. With only that backend configured (or ``auth_backend``'s, whose permissions
    are ModelBackend's), the same answer is one EXISTS over the user's own and their groups'
    grants of this permission; any other backend gets ``has_perm`` itself.
    """
    if user.is_superuser:
        return True
    if not set(settings.AUTHENTICATION_BACKENDS) <= auth_backend.MODEL_PERMISSIONS:
        return bool(user.has_perm(VIEW_ALL_PERMISSION))
    return bool(_VIEW_ALL_GRANT.run(user_id=user.pk, group_user_id=user.pk))


def _view_all_grants(user_id: int, group_user_id: int) -> Any:
    from django.contrib.auth.models import Permission

    return (
        Permission.objects.filter(content_type__app_label=_APP_LABEL, codename=_CODENAME)
        .filter(Q(user__id=user_id) | Q(group__user__id=group_user_id))
        .values_list("pk", flat=True)[:1]
    )


# The same SQL for every user: compiled once per process (scheduler_app/compiled_sql.py).
_VIEW_ALL_GRANT = CompiledQuery(_view_all_grants, user_id=-7_000_021, group_user_id=-7_000_022)


def can_view(user: Any, owner: Any) -> bool:
    """Whether ``user`` may read the jobs, runs and logs of ``owner`` (a user or a user id)."""
    if user is None or not user.is_authenticated:
        return False
    owner_id = getattr(owner, "pk", owner)
    return user.pk == owner_id or can_view_all(user)
