"""Strict readers for settings taken from the environment.

Every reader raises ``ImproperlyConfigured`` naming the variable and the expected form, so a
typo stops start-up with one clear line instead of running with a surprising value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

#: The key DEBUG and one-shot commands use when SECRET_KEY is unset; never good for serving.
DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production-0123456789"

#: Set by manage.py before the settings load: True for commands that serve nobody (startplugin,
#: runplugin, migrate...), which may then run from a checkout without SECRET_KEY. A module
#: variable, not an environment variable, so no process started from here inherits it.
ONE_SHOT_COMMAND = False

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: expected one of true/false, 1/0, yes/no, on/off")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a whole number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a whole number >= {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a number >= {minimum}")
    return value


def env_list(name: str, default: list[str], *, sep: str = ",") -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(sep) if item.strip()]


def parse_database_url(url: str, *, base_dir: Path, var: str = "DB_CONNECTION") -> dict:
    """Turn ``sqlite:///rel.db``, ``sqlite:////abs.db`` or ``postgres://u:p@h:5432/db`` into
    a Django ``DATABASES`` entry. SQLite gets WAL, a busy timeout and IMMEDIATE transactions so
    the web process and the scheduler can write at the same time."""
    form = "sqlite:///relative/path.db, sqlite:////absolute/path.db or postgres://user:password@host:5432/name"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc or not parts.path or parts.path == "/":
            raise ImproperlyConfigured(f"{var}={url!r}: expected {form}")
        raw_path = unquote(parts.path[1:])  # sqlite:///x.db -> "x.db"; sqlite:////abs -> "/abs"
        if raw_path == ":memory:" or "mode=memory" in parts.query:
            # Every connection (web threads, the scheduler's writer) would get its own empty
            # database: a login page over no tables. Refuse instead of serving that.
            raise ImproperlyConfigured(
                f"{var}={url!r}: an in-memory database is not supported (each connection would see its "
                "own empty database); use a file, e.g. sqlite:///demo.db (./dev.sh run migrates it and "
                "loads the demo data)"
            )
        path = Path(raw_path)
        if not path.is_absolute():
            path = base_dir / path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(path),
            "OPTIONS": {
                # WAL lets readers and one writer work at once; NORMAL is durable in WAL mode
                # against application crashes and ~10x faster than FULL for small commits.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
            "TEST": {"NAME": str(path.with_name(f"test_{path.stem}.sqlite3"))},
        }
    if scheme in {"postgres", "postgresql", "pgsql"}:
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured(f"{var}={url!r}: the database name is missing; expected {form}")
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(f"{var}={url!r}: the port is not a number; expected {form}") from None
        options = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "OPTIONS": options,
            # A long-lived scheduler keeps its connection; health checks replace a connection
            # that died with a database restart instead of failing the next query. Web processes
            # pool instead (``connections_for_process``).
            "CONN_MAX_AGE": 600,
            "CONN_HEALTH_CHECKS": True,
        }
    raise ImproperlyConfigured(f"{var}={url!r}: unsupported scheme {scheme or '(none)'!r}; expected {form}")


ProcessKind = Literal["web", "scheduler", "command"]
PROCESS_KINDS: tuple[ProcessKind, ...] = ("web", "scheduler", "command")

#: Programs that import ``jobscheduler.asgi`` to serve it: their process is a web process.
ASGI_SERVERS = frozenset({"daphne", "uvicorn", "gunicorn", "hypercorn", "granian"})


def process_kind(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> ProcessKind:
    """What this process is, which decides how it holds database connections.

    - ``web``: ``manage.py serve`` or an ASGI server (daphne, uvicorn...). Under ASGI every
      request runs in a thread of its own and a persistent connection stays with each thread,
      so a burst of requests opened a connection per request until PostgreSQL refused more.
      Web processes borrow from a bounded pool instead.
    - ``scheduler``: ``manage.py runscheduler``: a few threads (reader, writer) that keep one
      connection each for the life of the process; a pool would only add hand-offs.
    - ``command``: any other ``manage.py`` command, a script, the test runner.

    ``JOBSCHEDULER_PROCESS`` overrides the guess (for a launcher not named here).
    """
    raw = environ.get("JOBSCHEDULER_PROCESS", "").strip()
    if raw:
        if raw not in PROCESS_KINDS:
            raise ImproperlyConfigured(f"JOBSCHEDULER_PROCESS={raw!r}: expected one of {', '.join(PROCESS_KINDS)}")
        return raw
    program = Path(argv[0]) if argv else Path()
    if program.name == "__main__.py":  # python -m daphne, python -m django...
        program = program.parent
    if program.name in {"manage.py", "django-admin", "django"}:
        command = argv[1] if len(argv) > 1 else ""
        return "scheduler" if command == "runscheduler" else "web" if command == "serve" else "command"
    if program.name in ASGI_SERVERS:
        return "web"
    return "command"


#: The most connections a scheduler engine keeps (one per thread that touches the database:
#: start-up, writer, claims (PostgreSQL only), reader, heartbeat, plugin loader; 6 measured on
#: PostgreSQL with the demo data, 5 before the claims thread). The sizing rule in
#: docs/deployment.md and an embedded scheduler's share of a web pool use it.
SCHEDULER_CONNECTIONS = 6


class PoolSize(TypedDict):
    """psycopg_pool's ``ConnectionPool`` options a web process uses (docs/operations.md)."""

    min_size: int
    max_size: int
    timeout: float


def connections_for_process(database: dict[str, Any], kind: ProcessKind, pool: PoolSize) -> dict[str, Any]:
    """The ``DATABASES`` entry for a process of ``kind``: PostgreSQL web processes use a pool of
    at most ``pool["max_size"]`` connections (a request waits up to ``pool["timeout"]`` seconds for
    one); schedulers and commands keep their persistent per-thread connections. Each process kind
    names itself in ``pg_stat_activity.application_name`` unless the URL sets one."""
    if not database["ENGINE"].endswith("postgresql"):
        return database
    database = {**database, "OPTIONS": dict(database["OPTIONS"])}
    database["OPTIONS"].setdefault("application_name", f"jobscheduler-{kind}")
    if kind == "web":
        # Django returns the connection to the pool when each request ends (CONN_MAX_AGE=0;
        # a pool refuses persistent connections); CONN_HEALTH_CHECKS makes the pool check a
        # connection before lending it, so a database restart costs no failed request.
        database["OPTIONS"]["pool"] = dict(pool)
        database["CONN_MAX_AGE"] = 0
    return database


def redis_channel_layer(
    url: str,
    *,
    prefix: str = "jobscheduler",
    max_connections: int = 50,
    pool_timeout: float = 20.0,
    client_name: str = "",
) -> dict[str, Any]:
    """The ``CHANNEL_LAYERS`` entry for Redis at ``url``; tests building their own layer use it too.

    redis-py 8 reads with a 5 s socket timeout by default, the same as channels_redis's blocking
    BZPOPMIN: an idle receive (a quiet websocket, a scheduler waiting for notifications) then fails
    every ~5 s (django/channels_redis#422). A longer timeout keeps idle reads alive and still
    notices a dead server.

    Each process holds at most ``max_connections`` connections to Redis; a command that finds
    them all busy (a burst of websockets joining their groups) waits up to ``pool_timeout``
    seconds for one instead of failing (``jobscheduler.redis_layer``). ``client_name`` names the
    connections in Redis's ``CLIENT LIST``, so an operator sees which process holds which.
    """
    return {
        "BACKEND": "jobscheduler.redis_layer.WaitingRedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": url,
                    "socket_timeout": 15,
                    "socket_connect_timeout": 5,
                    "max_connections": max_connections,
                    "timeout": pool_timeout,
                    **({"client_name": client_name} if client_name else {}),
                }
            ],
            "capacity": 5000,
            "expiry": 30,
            # several deployments (or test runs) can share one Redis under different prefixes
            "prefix": prefix,
        },
    }
