"""Ends a live log stream when its login session ends (logout in any tab, expiry, password change).

A websocket is authenticated once, when it opens; logging out in another tab deletes the
session but leaves the socket streaming. The consumer starts a :class:`SessionWatch`, which
re-reads the session every ``LIVE_LOG_SESSION_CHECK_SECONDS`` and closes the socket with 4401
(the browser shows "log in to see this log" and stops retrying) once it no longer logs this
user in.
"""

from __future__ import annotations

import asyncio
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

CLOSE_UNAUTHENTICATED = 4401


@database_sync_to_async
def session_logs_in(session_key: str, user_pk: Any) -> bool:
    """Whether the stored session ``session_key`` still logs in the (active) user ``user_pk``."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    data = store.load()  # {} for a deleted or expired session
    if str(data.get(SESSION_KEY)) != str(user_pk):
        return False
    user = get_user_model().objects.filter(pk=user_pk, is_active=True).first()
    if user is None:
        return False
    # A password change elsewhere invalidates the other sessions, as Django does for requests.
    return constant_time_compare(str(data.get(HASH_SESSION_KEY, "")), user.get_session_auth_hash())


class SessionWatch:
    """Closes ``consumer``'s socket with 4401 when its session stops logging its user in."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        session = self.consumer.scope.get("session")
        user = self.consumer.scope.get("user")
        key = getattr(session, "session_key", None)
        if key is None or user is None:
            return  # no cookie session to follow (a test scope); nothing to end
        self.task = asyncio.ensure_future(self._watch(key, user.pk))

    async def _watch(self, key: str, user_pk: Any) -> None:
        every = float(getattr(settings, "LIVE_LOG_SESSION_CHECK_SECONDS", 3.0))
        while True:
            await asyncio.sleep(every)
            if not await session_logs_in(key, user_pk):
                await self.consumer.close(code=CLOSE_UNAUTHENTICATED)
                return

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
