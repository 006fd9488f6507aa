"""Ends a live log stream when its login session ends (logout in any tab, expiry, password change).

A websocket is authenticated once, when it opens; logging out in another tab deletes the
session but leaves the socket streaming. The consumer starts a :class:`SessionWatch`; every
``LIVE_LOG_SESSION_CHECK_SECONDS`` one checker per process re-reads the sessions of all its
sockets together and closes, with 4401 (the browser shows "log in to see this log" and stops
retrying), each socket whose session no longer logs its user in.
"""

from __future__ import annotations

import asyncio
import weakref
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

CLOSE_UNAUTHENTICATED = 4401

#: Session engines that keep sessions in Django's session table (scheduler_app/sessions.py reads it
#: with SQL compiled once): their sessions are checked with one query.
DATABASE_ENGINES = frozenset({"django.contrib.sessions.backends.db", "scheduler_app.sessions"})


@database_sync_to_async
def sessions_ended(pairs: set[tuple[str, Any]]) -> set[tuple[str, Any]]:
    """Which ``(session_key, user_pk)`` no longer log their (active) user in: the session was
    deleted or expired, names another user, or predates a password change. Two queries for any
    number of sockets with database sessions."""
    engine = import_module(settings.SESSION_ENGINE)
    users = {
        str(user.pk): user for user in get_user_model().objects.filter(pk__in={pk for _, pk in pairs}, is_active=True)
    }
    keys = {key for key, _ in pairs}
    if settings.SESSION_ENGINE in DATABASE_ENGINES:
        from django.contrib.sessions.models import Session
        from django.utils import timezone

        store = engine.SessionStore()
        rows = Session.objects.filter(session_key__in=keys, expire_date__gt=timezone.now())
        data = {row.session_key: store.decode(row.session_data) for row in rows}
    else:  # cache, signed cookies...: one load each
        data = {key: engine.SessionStore(session_key=key).load() for key in keys}
    ended = set()
    for key, pk in pairs:
        session = data.get(key) or {}
        user = users.get(str(pk))
        if (
            str(session.get(SESSION_KEY)) != str(pk)
            or user is None
            # A password change elsewhere invalidates the other sessions, as Django does for requests.
            or not constant_time_compare(str(session.get(HASH_SESSION_KEY, "")), user.get_session_auth_hash())
        ):
            ended.add((key, pk))
    return ended


class _Checker:
    """One loop per process checking every watched socket's session together.

    A hundred open live logs used to cost a hundred session reads (each a thread hop and, on
    SQLite, a new connection) every few seconds: most of the web process's CPU at 1,000
    lines/s. Now it is two queries per round, whatever the number of sockets.
    """

    def __init__(self) -> None:
        self.watches: dict[SessionWatch, tuple[str, Any]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, watch: SessionWatch, key: str, user_pk: Any) -> None:
        self.watches[watch] = (key, user_pk)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="live log session checks")

    def remove(self, watch: SessionWatch) -> None:
        self.watches.pop(watch, None)

    async def _run(self) -> None:
        while self.watches:
            await asyncio.sleep(float(getattr(settings, "LIVE_LOG_SESSION_CHECK_SECONDS", 3.0)))
            if not self.watches:
                break
            ended = await sessions_ended(set(self.watches.values()))
            for watch, pair in list(self.watches.items()):
                if pair in ended:
                    self.remove(watch)
                    await watch.consumer.close(code=CLOSE_UNAUTHENTICATED)
        self.task = None


_CHECKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Checker] = weakref.WeakKeyDictionary()


class SessionWatch:
    """Closes ``consumer``'s socket with 4401 when its session stops logging its user in."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self._checker: _Checker | None = None

    def start(self) -> None:
        session = self.consumer.scope.get("session")
        user = self.consumer.scope.get("user")
        key = getattr(session, "session_key", None)
        if key is None or user is None:
            return  # no cookie session to follow (a test scope); nothing to end
        loop = asyncio.get_running_loop()
        self._checker = _CHECKERS.get(loop)
        if self._checker is None:
            self._checker = _CHECKERS[loop] = _Checker()
        self._checker.add(self, key, user.pk)

    def stop(self) -> None:
        if self._checker is not None:
            self._checker.remove(self)
            self._checker = None
