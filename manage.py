#!/usr/bin/env python
"""Django's command-line utility for jobscheduler."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobscheduler.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.conf import settings
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS  # load settings now, so a bad variable is reported here
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A wrong environment variable deserves one clear line, not a traceback wall.
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
