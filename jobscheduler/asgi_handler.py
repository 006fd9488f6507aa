"""Django's ASGI handler with the whole middleware chain and the view run in ONE worker thread.

Django's stock ``ASGIHandler`` builds its chain for async: every middleware that can run
async does, and each sync-only one (WhiteNoise, the audit context) is wrapped by an adapter.
With this project's middleware that meant, per request, a hop to a worker thread for the outer
sync middleware, a hop back to the event loop for the inner async ones (``async_to_sync``),
and a third hop to the thread for the sync view: three thread/loop switches and their
futures for every request, each waiting for the GIL on a busy process (py-spy under load:
``AsyncToSync``/``CurrentThreadExecutor`` in every page's stack). Every view here is sync and
uses the ORM, so this handler builds the plain sync chain (as under WSGI) and runs it with one
``sync_to_async`` per request: one hop, the same middleware, order and behaviour. An async view
would still work (Django's sync handler runs it with ``async_to_sync``), it would just pay the
hops back. Websockets do not pass here (Channels routes them, ``jobscheduler/asgi.py``).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        # Same adapter Django puts on top of a sync chain: thread-sensitive, so the request's
        # work and its request_finished clean-up (the DB connection back to the pool) share a thread.
        chain: Any = self._middleware_chain  # type: ignore[has-type]  # set by load_middleware above
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)


def get_asgi_application() -> SyncChainASGIHandler:
    """``django.core.asgi.get_asgi_application`` with this handler."""
    import django

    django.setup(set_prefix=False)
    return SyncChainASGIHandler()
