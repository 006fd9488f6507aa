"""Health probes and the metrics endpoint, for web processes and scheduler nodes.

Web processes (``asgi.py`` wraps the application with ``ProbeApp``):

- ``/healthz``: the process answers (liveness). Nothing else is checked: restarting a web
  process does not fix a database outage.
- ``/readyz``: the database answers, the channel layer carries a message, and at least one
  scheduler node is alive (readiness). 200 with ``{"status": "ok", "checks": {...}}``, or 503
  with the failing checks named, e.g. ``{"status": "failing", "failing": ["database"], ...}``.
- ``/metrics``: Prometheus text, for ``METRICS_TOKEN`` bearers and ``METRICS_ALLOWED_ADDRESSES``.

They are answered in front of Django: a probe comes from a kubelet or a load balancer with
the pod's address as Host (which ``ALLOWED_HOSTS`` would refuse), over plain HTTP (which
``SECURE_SSL_REDIRECT`` would redirect), and needs no session.

Scheduler nodes (``runscheduler --health-port N``): ``NodeProbeServer`` serves the same three
paths from a thread. ``/healthz`` is "the event loop turns" (a callback scheduled on the
loop runs within ``LOOP_TIMEOUT``); ``/readyz`` adds "this node's heartbeat in the database is
fresh" -- which also proves the database and the writer work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone
from psycopg_pool import PoolTimeout

from scheduler_app import metrics

log = logging.getLogger(__name__)

#: Each readiness check gives up after this long (a black-holed database host must not hang a probe).
CHECK_TIMEOUT = 3.0
#: How long a readiness check or the start-up check waits for a pooled connection: less than
#: CHECK_TIMEOUT, so the pool's own answer (which names the database) comes first.
POOL_WAIT = CHECK_TIMEOUT - 0.5
#: A scheduler's loop that cannot run a callback within this long is not alive.
LOOP_TIMEOUT = 2.0

PROBE_PATHS = ("/healthz", "/readyz", "/metrics")


# --- the checks ---------------------------------------------------------------------------


def check_database() -> str:
    """'' when the database answers a query, else what went wrong."""
    if getattr(connection, "pool", None) is not None:  # PostgreSQL web processes
        return pool_error()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return ""
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()[:500]
    finally:
        connection.close()  # a probe thread must not keep connections (PostgreSQL counts them)


def pool_error(timeout: float = POOL_WAIT) -> str:
    """'' when the process has no connection pool or it lends a connection that answers
    within ``timeout``, else what went wrong.

    The pool's own wait (``DB_POOL_TIMEOUT``, 20 s) is a request's: a probe or the start-up
    checks must not hang that long on a database that is down (nor hold up the process's exit).
    """
    pool = getattr(connection, "pool", None)
    if pool is None:
        return ""
    try:
        pool.open()  # Django opens it at the first request; a no-op once open
        with pool.connection(timeout=timeout) as conn:
            conn.execute("SELECT 1")
        return ""
    except PoolTimeout:
        return f"no connection within {timeout:g} s ({database_name()})"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()[:500]


def database_name() -> str:
    """Which database, for messages: vendor, host, port and name (never the password)."""
    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"database sqlite {cfg['NAME']}"
    return f"database {connection.vendor} at {cfg.get('HOST') or 'localhost'}:{cfg.get('PORT') or 5432}/{cfg['NAME']}"


def live_nodes() -> int:
    from scheduler_app.models import SchedulerNode

    cutoff = timezone.now() - timedelta(seconds=settings.SCHEDULER["LOST_AFTER_SECONDS"])
    try:
        return SchedulerNode.objects.filter(stopped_at__isnull=True, last_heartbeat__gte=cutoff).count()
    finally:
        connection.close()


async def check_channel_layer() -> str:
    """'' when a message sent through the channel layer comes back, else what went wrong."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return "no channel layer is configured (CHANNEL_LAYERS)"
    try:
        channel = await layer.new_channel("health.")
        await layer.send(channel, {"type": "health.ping"})
        message = await layer.receive(channel)
        return "" if message.get("type") == "health.ping" else f"unexpected message {message!r}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()[:500]


async def _with_timeout(awaitable: Any, what: str) -> Any:
    try:
        return await asyncio.wait_for(awaitable, CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g} s ({what})"


async def readiness() -> tuple[bool, dict[str, Any]]:
    """Run every readiness check concurrently; (ok, JSON body)."""
    # Their own threads (not the one thread Django's sync code shares): a hung database
    # connection must not hold up the pages.
    (db_error, nodes), layer_error = await asyncio.gather(
        _database_then_nodes(), _with_timeout(check_channel_layer(), "channel layer")
    )
    checks: dict[str, Any] = {
        "database": {"ok": not db_error, **({"error": db_error} if db_error else {})},
        "channel_layer": {"ok": not layer_error, **({"error": layer_error} if layer_error else {})},
    }
    if isinstance(nodes, int):
        node_error = "" if nodes else "no live scheduler node (start manage.py runscheduler)"
        checks["scheduler_nodes"] = {"ok": nodes > 0, "live": nodes, **({"error": node_error} if node_error else {})}
    else:
        checks["scheduler_nodes"] = {"ok": False, "error": nodes}
    failing = [name for name, check in checks.items() if not check["ok"]]
    return not failing, {"status": "failing" if failing else "ok", "failing": failing, "checks": checks}


async def _database_then_nodes() -> tuple[str, int | str]:
    """The database check, then (only if it answered) the count of live nodes: counting them
    on a database that is down would wait for the pool's full timeout."""
    db_error = await _with_timeout(sync_to_async(check_database, thread_sensitive=False)(), database_name())
    if db_error:
        return db_error, "not checked: the database does not answer"
    nodes = await _with_timeout(sync_to_async(_live_nodes_or_error, thread_sensitive=False)(), "scheduler nodes")
    return db_error, nodes


def _live_nodes_or_error() -> int | str:
    try:
        return live_nodes()
    except Exception as exc:
        return f"cannot count scheduler nodes: {type(exc).__name__}: {exc}"[:500]


# --- web processes: an ASGI wrapper -----------------------------------------------------------


class ProbeApp:
    """Answers the probe paths of HTTP requests; everything else goes to ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/healthz":
            await _respond(send, 200, _json({"status": "ok"}))
        elif path == "/readyz":
            ok, body = await readiness()
            await _respond(send, 200 if ok else 503, _json(body))
        else:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            client = scope.get("client") or (None, None)
            if not metrics.allowed(client[0], headers.get("authorization")):
                await _respond(
                    send,
                    403,
                    b"metrics: forbidden (METRICS_TOKEN / METRICS_ALLOWED_ADDRESSES)\n",
                    "text/plain; charset=utf-8",
                )
                return
            data, content_type = metrics.exposition()
            await _respond(send, 200, data, content_type)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, indent=1).encode()


async def _respond(send: Any, status: int, body: bytes, content_type: str = "application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --- scheduler nodes: a small HTTP server in a thread ---------------------------------------


class NodeProbeServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` of one ``runscheduler`` node."""

    def __init__(self, loop: asyncio.AbstractEventLoop, node_name: str, host: str, port: int) -> None:
        self.loop = loop
        self.node_name = node_name
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="jobscheduler-probes", daemon=True)

    def start(self) -> NodeProbeServer:
        self.thread.start()
        host, port = self.server.server_address[:2]
        log.info("health probes on http://%s:%s/healthz (/readyz, /metrics)", host, port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def loop_error(self) -> str:
        """'' if the event loop runs a callback within LOOP_TIMEOUT."""
        if self.loop.is_closed():
            return "the event loop is closed"
        done = threading.Event()
        t0 = time.monotonic()
        try:
            self.loop.call_soon_threadsafe(done.set)
        except RuntimeError as exc:
            return f"the event loop is gone: {exc}"
        if not done.wait(LOOP_TIMEOUT):
            return f"the event loop did not turn within {LOOP_TIMEOUT:g} s (blocked)"
        lag = time.monotonic() - t0
        return "" if lag < LOOP_TIMEOUT else f"the event loop lags {lag:.1f} s"

    def heartbeat_error(self) -> str:
        from scheduler_app.models import SchedulerNode

        limit = settings.SCHEDULER["LOST_AFTER_SECONDS"]
        try:
            node = SchedulerNode.objects.filter(name=self.node_name).values("last_heartbeat", "stopped_at").first()
        except Exception as exc:
            return f"database: {type(exc).__name__}: {exc}"[:500]
        finally:
            connection.close()
        if node is None:
            return f"node {self.node_name} is not registered yet"
        if node["stopped_at"] is not None:
            return f"node {self.node_name} is stopping"
        age = (timezone.now() - node["last_heartbeat"]).total_seconds()
        if age >= limit:
            return f"last heartbeat {age:.0f} s ago (a node silent {limit:g} s is declared dead)"
        return ""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    error = probe.loop_error()
                    alive = {"status": "failing" if error else "ok", "node": probe.node_name}
                    self._send(503 if error else 200, _json({**alive, **({"error": error} if error else {})}))
                elif path == "/readyz":
                    checks = {"event_loop": probe.loop_error(), "heartbeat": probe.heartbeat_error()}
                    failing = [name for name, error in checks.items() if error]
                    body: dict[str, Any] = {
                        "status": "failing" if failing else "ok",
                        "node": probe.node_name,
                        "failing": failing,
                        "checks": {n: {"ok": not e, **({"error": e} if e else {})} for n, e in checks.items()},
                    }
                    self._send(503 if failing else 200, _json(body))
                elif path == "/metrics":
                    if not metrics.allowed(self.client_address[0], self.headers.get("Authorization")):
                        self._send(
                            403,
                            b"metrics: forbidden (METRICS_TOKEN / METRICS_ALLOWED_ADDRESSES)\n",
                            "text/plain; charset=utf-8",
                        )
                        return
                    data, content_type = metrics.exposition()
                    self._send(200, data, content_type)
                else:
                    self._send(404, _json({"error": "not found: try /healthz, /readyz or /metrics"}))

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: keep quiet
                log.debug("probe %s", format % args)

        return Handler
