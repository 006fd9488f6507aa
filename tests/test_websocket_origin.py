"""The websocket accepts only the site's own origins: scheme, host and port, as Django's CSRF check.

End to end on the real ASGI application with alice's session (a refused origin never reaches
her stream), then the rule's cases on handshake scopes: plain HTTP, TLS at the server (wss),
behind a TLS proxy (X-Forwarded-Proto with SECURE_PROXY_SSL_HEADER), a proxy that rewrites
Host (CSRF_TRUSTED_ORIGINS, exact and wildcard).
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings

from jobscheduler.asgi import application
from jobscheduler.ws_origin import origin_allowed
from scheduler_app import services

PROXY = {"SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https")}


def handshake(host: str | None, origin: str | None, *, scheme: str = "ws", **headers: str) -> dict:
    raw = [(b"host", host.encode())] if host else []
    if origin is not None:
        raw.append((b"origin", origin.encode()))
    raw += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "websocket", "scheme": scheme, "headers": raw, "server": ("10.0.0.5", 8000)}


def connect_as(user, path: str, host: str, origin: str) -> WebsocketCommunicator:
    client = Client()
    client.force_login(user)
    headers = [
        (b"host", host.encode()),
        (b"origin", origin.encode()),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "host, origin, accepted",
    [
        ("127.0.0.1:8300", "http://127.0.0.1:8300", True),
        ("127.0.0.1:8300", "http://127.0.0.1:9999", False),  # another port: another site
        ("127.0.0.1:8300", "https://localhost:4444", False),  # an allowed host, but not this site
        ("127.0.0.1:8300", "https://127.0.0.1:8300", False),  # the scheme differs
        ("127.0.0.1:8300", "http://localhost:8300", False),
        ("127.0.0.1:8300", "null", False),  # sandboxed frames and file: pages
        ("evil.example", "http://evil.example", False),  # a host not in ALLOWED_HOSTS
    ],
)
async def test_only_the_sites_own_origin_reaches_alices_stream(alice, sample_plugin, host, origin, accepted):
    await sync_to_async(services.create_job)(alice, sample_plugin, {"name": "Ann"})
    comm = await sync_to_async(connect_as)(alice, f"/ws/logs/{sample_plugin.pk}/{alice.pk}/", host, origin)
    connected, _ = await comm.connect()
    try:
        assert connected is accepted
        if accepted:
            assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
    finally:
        await comm.disconnect()


def test_a_handshake_without_origin_is_refused():
    assert not origin_allowed(handshake("127.0.0.1", None))
    assert not origin_allowed(handshake("127.0.0.1", ""))


def test_the_default_port_is_part_of_the_origin_as_the_browser_sends_it():
    assert origin_allowed(handshake("127.0.0.1", "http://127.0.0.1"))
    assert not origin_allowed(handshake("127.0.0.1", "http://127.0.0.1:80"))


def test_tls_at_the_server_makes_the_own_origin_https():
    assert origin_allowed(handshake("localhost:8443", "https://localhost:8443", scheme="wss"))
    assert not origin_allowed(handshake("localhost:8443", "http://localhost:8443", scheme="wss"))


@override_settings(ALLOWED_HOSTS=["jobs.example.com"], **PROXY)
def test_behind_a_tls_proxy_the_forwarded_scheme_decides():
    assert origin_allowed(handshake("jobs.example.com", "https://jobs.example.com", x_forwarded_proto="https"))
    assert not origin_allowed(handshake("jobs.example.com", "http://jobs.example.com", x_forwarded_proto="https"))
    # Without the proxy's header the connection is plain http, as for Django's CSRF check.
    assert not origin_allowed(handshake("jobs.example.com", "https://jobs.example.com"))


@override_settings(ALLOWED_HOSTS=["jobs.example.com"])
def test_the_forwarded_scheme_is_ignored_unless_the_proxy_is_trusted():
    assert not origin_allowed(handshake("jobs.example.com", "https://jobs.example.com", x_forwarded_proto="https"))


@override_settings(
    ALLOWED_HOSTS=["127.0.0.1"], CSRF_TRUSTED_ORIGINS=["https://jobs.example.com", "https://*.example.org"], **PROXY
)
def test_a_proxy_that_rewrites_host_needs_csrf_trusted_origins():
    # The proxy passes Host: 127.0.0.1:8000; the browser's origin is the public one.
    assert origin_allowed(handshake("127.0.0.1:8000", "https://jobs.example.com", x_forwarded_proto="https"))
    assert origin_allowed(handshake("127.0.0.1:8000", "https://eu.example.org"))
    assert not origin_allowed(handshake("127.0.0.1:8000", "http://jobs.example.com"))
    assert not origin_allowed(handshake("127.0.0.1:8000", "https://jobs.example.com:8443"))
    assert not origin_allowed(handshake("127.0.0.1:8000", "https://example.org.evil.test"))


@override_settings(ALLOWED_HOSTS=["jobs.example.com"], USE_X_FORWARDED_HOST=True)
def test_x_forwarded_host_counts_only_when_django_is_told_to_use_it():
    assert origin_allowed(handshake("127.0.0.1:8000", "http://jobs.example.com", x_forwarded_host="jobs.example.com"))
    with override_settings(USE_X_FORWARDED_HOST=False):
        assert not origin_allowed(
            handshake("127.0.0.1:8000", "http://jobs.example.com", x_forwarded_host="jobs.example.com")
        )
