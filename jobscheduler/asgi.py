"""ASGI entry point: HTTP through Django, websockets through Channels."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobscheduler.settings")

from jobscheduler.asgi_handler import get_asgi_application

# Django must be set up before anything imports models (consumers do). One worker-thread hop
# per HTTP request instead of three (jobscheduler/asgi_handler.py says why).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from jobscheduler.ws_origin import SameOriginValidator  # noqa: E402

websocket_urlpatterns: list = []
try:
    from scheduler_app.routing import websocket_urlpatterns
except ImportError:  # until the consumers land
    pass

from scheduler_app.health import ProbeApp  # noqa: E402
from scheduler_app.socket_flow import with_write_flow  # noqa: E402

# /healthz, /readyz and /metrics are answered in front of Django (scheduler_app/health.py says why).
application = ProbeApp(
    with_write_flow(
        ProtocolTypeRouter(
            {
                "http": django_asgi_app,
                # Same origin as Django's CSRF check (scheme, host and port), not just an allowed host.
                "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
            }
        )
    )
)
