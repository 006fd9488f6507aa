"""The websocket's origin check: only the site's own origins (scheme, host and port) connect.

Channels' ``AllowedHostsOriginValidator`` compares the Origin's *host* with ALLOWED_HOSTS and
ignores scheme and port, so a page on ``http://127.0.0.1:9999`` could open a user's stream
with their cookie. Browsers send no CSRF token on a websocket handshake, so this check is the
websocket's CSRF protection, and it follows Django's own CSRF origin check exactly
(``CsrfViewMiddleware._origin_verified``): the Origin header must be

- the request's own origin, ``<scheme>://<host>``, where the host is the Host header (or
  X-Forwarded-Host with USE_X_FORWARDED_HOST), validated against ALLOWED_HOSTS, and the scheme
  is ``https`` when the connection is ``wss`` or, behind a TLS proxy, when
  SECURE_PROXY_SSL_HEADER says so (``BEHIND_TLS_PROXY=true``); or
- listed in CSRF_TRUSTED_ORIGINS (exactly, or by a ``https://*.example.com`` wildcard).

Host, port and scheme are Django's own answers (``HttpRequest.get_host``/``scheme`` over the
handshake's headers), so what a form POST may do and what a websocket may do cannot drift
apart. A handshake without an Origin header is refused (every browser sends one).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils.http import is_same_domain

__all__ = ["SameOriginValidator", "origin_allowed"]


class _HandshakeRequest(HttpRequest):
    """The handshake seen as a Django request, for ``get_host()`` and ``scheme`` only."""

    def __init__(self, scope: dict[str, Any]) -> None:
        super().__init__()
        self._secure_transport = scope.get("scheme") in ("wss", "https")
        server = scope.get("server") or ("", 0)
        meta: dict[str, str] = {"SERVER_NAME": str(server[0] or ""), "SERVER_PORT": str(server[1] or 0)}
        for raw_name, raw_value in scope.get("headers", []):
            name = "HTTP_" + raw_name.decode("latin1").upper().replace("-", "_")
            value = raw_value.decode("latin1")
            # Repeated headers are joined as Django's ASGIRequest does.
            meta[name] = f"{meta[name]},{value}" if name in meta else value
        self.META = meta

    def _get_scheme(self) -> str:
        return "https" if self._secure_transport else "http"


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether a websocket handshake's Origin is the site's own (see the module docstring)."""
    request = _HandshakeRequest(scope)
    origin = request.META.get("HTTP_ORIGIN")
    if not origin:
        return False
    try:
        own = f"{request.scheme}://{request.get_host()}"
    except DisallowedHost:
        own = None
    if origin == own:
        return True
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in (entry for entry in trusted if "*" not in entry):
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    for entry in trusted:
        if "*" in entry:
            pattern = urlsplit(entry)
            if pattern.scheme == parsed.scheme and is_same_domain(parsed.netloc, pattern.netloc.lstrip("*")):
                return True
    return False


class SameOriginValidator:
    """ASGI middleware: a websocket whose Origin is not the site's own is refused (HTTP 403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
