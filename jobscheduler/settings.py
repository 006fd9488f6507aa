"""Django settings for jobscheduler, read strictly from the environment.

Every variable is documented in docs/operations.md; a malformed value stops start-up with a
message naming the variable (see jobscheduler/env.py).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from jobscheduler import env as env_module
from jobscheduler.env import (
    DEVELOPMENT_SECRET_KEY,
    SCHEDULER_CONNECTIONS,
    PoolSize,
    connections_for_process,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_database_url,
    process_kind,
    redis_channel_layer,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
#: True when SECRET_KEY is the built-in development key (the secret box refuses to encrypt with it in production).
SECRET_KEY_IS_DEVELOPMENT = not SECRET_KEY
if not SECRET_KEY:
    # Serving (serve, runscheduler, the ASGI app, check) needs a real key unless DEBUG is on;
    # one-shot commands from a checkout (startplugin, runplugin, migrate...) do not sign anything
    # a browser keeps, so manage.py lets them run with the development key (env.ONE_SHOT_COMMAND).
    if not DEBUG and not env_module.ONE_SHOT_COMMAND:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: set SECRET_KEY to a long random string (or DEBUG=true for a development key)"
        )
    SECRET_KEY = DEVELOPMENT_SECRET_KEY

# Old keys still accepted while sessions (and secrets sealed with a derived key) move to the new one.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
# Fernet keys for secrets in job configs (first encrypts, all decrypt); unset: derived from
# SECRET_KEY and SECRET_KEY_FALLBACKS. Rotation: docs/operations.md, scheduler_app/secretbox.py.
CONFIG_SECRET_KEYS = env_list("CONFIG_SECRET_KEYS", [])

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"CSRF_TRUSTED_ORIGINS={os.environ['CSRF_TRUSTED_ORIGINS']!r}: each entry must start with http:// or https://"
        )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_jsonform",
    "scheduler_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # who changed what, through the admin or a page (scheduler_app/audit.py)
    "scheduler_app.audit.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "jobscheduler.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # A faster `date` filter with Django's output (scheduler_app/templatetags/fast_dates.py).
            "builtins": ["scheduler_app.templatetags.fast_dates"],
        },
    },
]

ASGI_APPLICATION = "jobscheduler.asgi.application"

# Web processes borrow PostgreSQL connections from a bounded pool; the scheduler and commands keep
# theirs (jobscheduler/env.py: process_kind, connections_for_process; sizing in docs/deployment.md).
PROCESS_KIND = process_kind(sys.argv)
DB_POOL: PoolSize = {
    "min_size": env_int("DB_POOL_MIN_SIZE", 1, minimum=0),
    "max_size": env_int("DB_POOL_MAX_SIZE", 4, minimum=1),
    "timeout": env_float("DB_POOL_TIMEOUT", 20.0, minimum=0.1),
}
if DB_POOL["min_size"] > DB_POOL["max_size"]:
    raise ImproperlyConfigured(
        f"DB_POOL_MIN_SIZE={DB_POOL['min_size']}: expected at most DB_POOL_MAX_SIZE ({DB_POOL['max_size']})"
    )
DATABASES = {
    "default": connections_for_process(
        parse_database_url(env_str("DB_CONNECTION", "sqlite:///jobs.db"), base_dir=BASE_DIR), PROCESS_KIND, DB_POOL
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: Redis when REDIS_URL is set (required whenever the scheduler runs in its own
# process); otherwise the in-memory layer, which only works inside one process.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r}: expected redis://host:6379/0")
    CHANNEL_LAYERS = {
        "default": redis_channel_layer(
            REDIS_URL,
            prefix=env_str("CHANNEL_LAYER_PREFIX", "jobscheduler"),
            max_connections=env_int("REDIS_MAX_CONNECTIONS", 50, minimum=1),
            pool_timeout=env_float("REDIS_POOL_TIMEOUT", 20.0, minimum=0.1),
            # `CLIENT LIST` shows each connection as <prefix>-<process kind>-<pid>
            client_name=f"{env_str('CHANNEL_LAYER_PREFIX', 'jobscheduler')}-{PROCESS_KIND}-{os.getpid()}",
        )
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5000}}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

FIXTURE_DIRS = [BASE_DIR / "fixtures"]

LOGIN_URL = "login"
# How often an open live log re-checks its login session (a logout elsewhere closes it with 4401).
LIVE_LOG_SESSION_CHECK_SECONDS = env_float("LIVE_LOG_SESSION_CHECK_SECONDS", 3.0, minimum=0.5)
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
try:
    import zoneinfo

    zoneinfo.ZoneInfo(TIME_ZONE)
except Exception:
    raise ImproperlyConfigured(
        f"TIME_ZONE={TIME_ZONE!r}: expected an IANA time zone name such as UTC or Europe/Paris"
    ) from None
USE_I18N = True
# Times with seconds everywhere (the admin's lists too): runs 10 s apart must not look the same.
FORMAT_MODULE_PATH = ["jobscheduler.formats"]
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Serve files straight from the finders in development so `collectstatic` is not needed.
WHITENOISE_USE_FINDERS = DEBUG

# Production hardening; `manage.py check --deploy` is clean with the environment in docs/deployment.md.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Database sessions (revocable at once on every process), read with SQL compiled once per process.
SESSION_ENGINE = "scheduler_app.sessions"
# ModelBackend with the per-request user lookup compiled once per process; ModelBackend itself
# stays listed so sessions that recorded it keep working (scheduler_app/auth_backend.py).
AUTHENTICATION_BACKENDS = [
    "scheduler_app.auth_backend.CompiledModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 3600, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Plugins: extra folders (os.pathsep-separated) searched besides the repo's plugins/ folder.
MODULE_PATH = [Path(p) for p in env_list("MODULE_PATH", [], sep=os.pathsep)]
for _folder in MODULE_PATH:
    if not _folder.is_dir():
        raise ImproperlyConfigured(
            f"MODULE_PATH={os.environ['MODULE_PATH']!r}: {str(_folder)!r} is not a folder; "
            f"expected existing folders separated by {os.pathsep!r}"
        )
PLUGINS_DIR = BASE_DIR / "plugins"

# Scheduler knobs (docs/operations.md).
SCHEDULER: dict[str, Any] = {
    # seconds between node heartbeats; a node silent for LOST_AFTER seconds is declared lost and
    # its jobs move to the others (docs/operations.md, "Nodes that die, pause or lose the database")
    "HEARTBEAT_SECONDS": env_float("SCHEDULER_HEARTBEAT_SECONDS", 0.5, minimum=0.5),
    "LOST_AFTER_SECONDS": env_float("SCHEDULER_LOST_AFTER_SECONDS", 3.0, minimum=2.0),
    # fallback reconcile from the database when a change notification was missed
    "RECONCILE_SECONDS": env_float("SCHEDULER_RECONCILE_SECONDS", 3.0, minimum=0.5),
    # how long running runs may finish after SIGTERM before they are cancelled
    "GRACE_SECONDS": env_float("SCHEDULER_GRACE_SECONDS", 10.0, minimum=0),
    # retention: keep runs newer than RETAIN_DAYS, and at most RETAIN_RUNS_PER_JOB per job
    "RETAIN_DAYS": env_float("SCHEDULER_RETAIN_DAYS", 30.0, minimum=0),
    "RETAIN_RUNS_PER_JOB": env_int("SCHEDULER_RETAIN_RUNS_PER_JOB", 1000, minimum=1),
    # run the scheduler inside the web process (the embedded default of `./dev.sh run`)
    "EMBEDDED": env_bool("SCHEDULER_EMBEDDED", False),
    "NODE_NAME": env_str("SCHEDULER_NODE_NAME"),
}

# An embedded scheduler's threads keep their connections for the life of the web process: give
# them room on top of the requests' pool, or they would hold most of it.
if SCHEDULER["EMBEDDED"] and "pool" in DATABASES["default"]["OPTIONS"]:
    DATABASES["default"]["OPTIONS"]["pool"]["max_size"] += SCHEDULER_CONNECTIONS

# A node is declared dead after LOST_AFTER seconds without a heartbeat: with less than two
# heartbeats in that window, one late heartbeat would mark a live node's runs lost.
if SCHEDULER["LOST_AFTER_SECONDS"] < 2 * SCHEDULER["HEARTBEAT_SECONDS"]:
    raise ImproperlyConfigured(
        f"SCHEDULER_LOST_AFTER_SECONDS={SCHEDULER['LOST_AFTER_SECONDS']:g}: expected at least twice "
        f"SCHEDULER_HEARTBEAT_SECONDS ({SCHEDULER['HEARTBEAT_SECONDS']:g} s)"
    )

# Live logs: the most encoded bytes one websocket may have queued and unsent before it is told
# it fell behind and resumes from the database (scheduler_app/live_hub.py).
LIVE_LOG_VIEWER_BUFFER = env_int("LIVE_LOG_VIEWER_BUFFER", 1_000_000, minimum=10_000)

# Operations (docs/operations.md): who may read /metrics, failure alerts and their mail.
# /metrics answers a request that carries "Authorization: Bearer <METRICS_TOKEN>" or comes from
# one of METRICS_ALLOWED_ADDRESSES (addresses or networks; loopback by default).
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_ADDRESSES = env_list("METRICS_ALLOWED_ADDRESSES", ["127.0.0.1/32", "::1/128"])
for _net in METRICS_ALLOWED_ADDRESSES:
    try:
        ipaddress.ip_network(_net, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_ADDRESSES={os.environ.get('METRICS_ALLOWED_ADDRESSES')!r}: {_net!r} is not an "
            "address or network; expected e.g. 127.0.0.1,10.0.0.0/8"
        ) from None

ALERTS: dict[str, Any] = {
    # send failure alerts from scheduler processes (each runs a small alert thread)
    "ENABLED": env_bool("ALERTS_ENABLED", True),
    "POLL_SECONDS": env_float("ALERTS_POLL_SECONDS", 1.0, minimum=0.1),
    # runs whose record was committed this late after they finished are still looked at
    "LOOKBACK_SECONDS": env_float("ALERTS_LOOKBACK_SECONDS", 60.0, minimum=1.0),
    # first retry after this long, doubling each time, MAX_ATTEMPTS tries in all
    "RETRY_SECONDS": env_float("ALERTS_RETRY_SECONDS", 30.0, minimum=0.1),
    "MAX_ATTEMPTS": env_int("ALERTS_MAX_ATTEMPTS", 6, minimum=1),
    "WEBHOOK_TIMEOUT": env_float("ALERTS_WEBHOOK_TIMEOUT", 10.0, minimum=0.1),
    # links in alerts point here, e.g. https://jobs.example.com
    "SITE_URL": env_str("SITE_URL"),
}

# Mail for alerts: Django's backends (smtp by default; console or file for trials).
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "jobscheduler@localhost")
if env_str("EMAIL_FILE_PATH"):
    EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH")

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").strip().upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL={os.environ['LOG_LEVEL']!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "apscheduler": {"level": "WARNING"},
    },
}
