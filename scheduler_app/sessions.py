"""The session engine: Django's database sessions, read with SQL compiled once per process.

Same table, same encoding, same expiry and revocation as ``django.contrib.sessions.backends.db``
(a logout or an operator deleting the row ends the session at once, on every process:
docs/architecture.md, "Sessions stay in the database"); only the lookup every page does first
skips Django's per-request SQL compilation (``scheduler_app.compiled_sql``). Existing sessions
keep working when the setting changes: nothing stored differs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.models import Session
from django.core.exceptions import SuspiciousOperation
from django.utils import timezone

from scheduler_app.compiled_sql import CompiledQuery

_LIVE_SESSION = CompiledQuery(
    lambda key, now: Session.objects.filter(session_key=key, expire_date__gt=now),
    key="compiled-sql-sentinel-session-key",
    now=datetime(2001, 2, 3, 4, 5, 6, 789, tzinfo=UTC),
)


class SessionStore(DatabaseSessionStore):
    def _get_session_from_db(self) -> Any:
        if self.get_model_class() is not Session:  # a subclass with its own model: Django's lookup
            return super()._get_session_from_db()  # type: ignore[misc]
        try:
            rows = _LIVE_SESSION.run(key=self.session_key, now=timezone.now())
        except SuspiciousOperation as exc:  # as Django's engine does
            logging.getLogger(f"django.security.{exc.__class__.__name__}").warning(str(exc))
            rows = []
        if not rows:
            self._session_key = None
            return None
        return rows[0]
