"""Tell running schedulers that something changed, over the channel layer.

Notifications are a speed-up, not the source of truth: schedulers also reconcile from the
database every few seconds, so a lost message (dead Redis, in-memory layer across processes,
a bulk ``update()`` in a shell) delays a change by seconds, never forever. Sending never
raises into the caller: a request must not fail because Redis is down.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from scheduler_app.streams import CONTROL_GROUP

log = logging.getLogger(__name__)


def _send(message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(CONTROL_GROUP, message)
    except Exception as exc:  # Redis down, layer full: the periodic reconcile catches up
        log.warning(
            "could not notify schedulers (%s: %s); they will pick the change up on their next reconcile",
            type(exc).__name__,
            exc,
        )


def send_after_commit(message: dict[str, Any]) -> None:
    """Send once the surrounding transaction commits (immediately outside one)."""
    transaction.on_commit(lambda: _send(message))


def jobs_changed(job_ids: list[int] | None = None, plugin_ids: list[int] | None = None) -> None:
    send_after_commit({"type": "jobs.changed", "job_ids": job_ids or [], "plugin_ids": plugin_ids or []})


def run_queued(run_id: int) -> None:
    send_after_commit({"type": "run.queued", "run_id": run_id})


def run_cancel(run_id: int, by: str) -> None:
    """Ask the node running ``run_id`` to cancel it (the database flag is the fallback)."""
    send_after_commit({"type": "run.cancel", "run_id": run_id, "by": by})


def plugin_reload(plugin_id: int, package: str, code_version: int) -> None:
    send_after_commit(
        {"type": "plugin.reload", "plugin_id": plugin_id, "package": package, "code_version": code_version}
    )
