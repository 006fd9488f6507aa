"""``manage.py rotatesecrets``: re-encrypt every secret in stored job configs with the first key.

Run it after putting a new key first in ``CONFIG_SECRET_KEYS`` (or a new ``SECRET_KEY`` with
the old one in ``SECRET_KEY_FALLBACKS``); afterwards the old key can be dropped. Secrets stored
in clear (before encryption existed) are encrypted too. See docs/operations.md.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from scheduler_app import services
from scheduler_app.secretbox import SecretDecryptError


class Command(BaseCommand):
    help = "Re-encrypt the secrets of every job's config with the first configured key."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            changed = services.rotate_secrets()
        except SecretDecryptError as exc:
            raise CommandError(f"{exc} (nothing after the failing job was changed)") from exc
        self.stdout.write(f"re-encrypted the secrets of {changed} job{'s' if changed != 1 else ''}")
