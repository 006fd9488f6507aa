"""The authentication backend: Django's ``ModelBackend``, with the per-request user lookup compiled.

Every page loads the logged-in user (``django.contrib.auth.get_user`` -> the session's backend
-> ``get_user(pk)``); ``ModelBackend`` builds and compiles ``User.objects.get(pk=...)`` each
time, about a tenth of the run history's CPU (cProfile, in-process). This backend runs the
same query with its SQL compiled once per process (``scheduler_app.compiled_sql``) and applies
the same rule afterwards (``user_can_authenticate``: inactive users get no user). Everything
else (passwords, permissions) is ``ModelBackend``'s, unchanged.

It is first in ``AUTHENTICATION_BACKENDS`` so new logins record it in their session;
``ModelBackend`` stays in the list because ``get_user`` only honours a session whose stored
backend path is listed: sessions from before the switch keep working (through
``ModelBackend``) instead of being logged out. ``authenticate()`` tries the backends in order,
so a wrong password is refused by both, with the same answer.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

from scheduler_app.compiled_sql import CompiledQuery

PATH = "scheduler_app.auth_backend.CompiledModelBackend"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
#: Backends whose permission answers are ModelBackend's (``access.can_view_all`` may then ask
#: one EXISTS instead of ``has_perm``); settings.AUTHENTICATION_BACKENDS lists these two.
MODEL_PERMISSIONS = frozenset({PATH, MODEL_BACKEND})

_USER = CompiledQuery(lambda pk: get_user_model()._default_manager.filter(pk=pk), pk=-7_000_031)


class CompiledModelBackend(ModelBackend):
    def get_user(self, user_id: Any) -> Any:
        rows = _USER.run(pk=user_id)
        if not rows:
            return None
        user = rows[0]
        return user if self.user_can_authenticate(user) else None
