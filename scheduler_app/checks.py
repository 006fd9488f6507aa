"""System checks (``manage.py check``) for jobscheduler."""

from __future__ import annotations
