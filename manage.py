#!/usr/bin/env python
"""Django's command-line utility for jobscheduler.

A wrong environment variable or an unreachable database ends with one line that names the
cause (exit code 2 for configuration, 1 for the database), not a traceback wall; pass
``--traceback`` or LOG_LEVEL=DEBUG to see the traceback anyway.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit, urlunsplit


def redacted(url: str) -> str:
    """The database URL without its password, fit for an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


#: Commands that serve users or check a deployment: they need a real SECRET_KEY (or DEBUG=true).
SERVING_COMMANDS = {"serve", "runscheduler", "runserver", "check", "daphne"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobscheduler.settings")
    import jobscheduler.env

    # Every other command (startplugin, runplugin, migrate, shell...) works from a checkout
    # without exporting anything; production still cannot serve without a real key.
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "help")
    jobscheduler.env.ONE_SHOT_COMMAND = command not in SERVING_COMMANDS
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db.utils import InterfaceError, OperationalError

    want_traceback = "--traceback" in sys.argv or os.environ.get("LOG_LEVEL", "").upper() == "DEBUG"
    try:
        settings.INSTALLED_APPS  # noqa: B018  (load settings now, so a bad variable is reported here)
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        if want_traceback:
            raise
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (OperationalError, InterfaceError) as exc:
        if want_traceback:
            raise
        url = redacted(os.environ.get("DB_CONNECTION", "sqlite:///jobs.db"))
        reason = " ".join(str(exc).split())  # psycopg spreads one cause over several lines
        print(f"database error (DB_CONNECTION={url}): {reason}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
