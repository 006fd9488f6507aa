"""``loaddata`` with one-line errors: Django's command, with this app's fixture rules.

The rules themselves are in ``scheduler_app.fixtures`` (a ``pre_save`` receiver). Django's
command already runs in one transaction and names the fixture file and the object in the
error; it lets everything but ``CommandError`` out as a traceback. Here any refusal becomes
a ``CommandError`` (exit code 1, one line on stderr, nothing of the fixture stored).
"""

from __future__ import annotations

from typing import Any

from django.core.management import CommandError
from django.core.management.commands import loaddata
from django.core.serializers.base import DeserializationError
from django.db import DatabaseError


class Command(loaddata.Command):
    def handle(self, *fixture_labels: str, **options: Any) -> None:
        try:
            super().handle(*fixture_labels, **options)
        except (ValueError, DatabaseError, DeserializationError) as exc:
            # Database messages span lines (DETAIL, HINT); the operator gets them on one.
            raise CommandError(" ".join(str(exc).split())) from exc
