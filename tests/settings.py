"""Settings for the test suite: production settings with test-friendly environment defaults.

Subprocesses started by tests (runscheduler, daphne) use this module too, so they see the
same database as the test process.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
os.environ.setdefault("SECURE_HSTS_SECONDS", "0")

from jobscheduler.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
WHITENOISE_USE_FINDERS = True

# Parallel test runs on one machine (several developers, CI) must not share a test database.
_suffix = os.environ.get("TEST_DB_SUFFIX", "")
if _suffix:
    _test = DATABASES["default"].setdefault("TEST", {})  # noqa: F405
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
        _test["NAME"] = str(BASE_DIR / f"test_jobs_{_suffix}.sqlite3")  # noqa: F405
    else:
        _test["NAME"] = f"test_{DATABASES['default']['NAME']}_{_suffix}"  # noqa: F405

# Connections opened in worker threads (channels' database_sync_to_async) are closed after each
# call instead of being kept, or PostgreSQL refuses to drop the test database at the end.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
