"""Names and message shapes shared by the log publisher (engine side) and the consumer.

Channel-layer groups:
- ``logs.<plugin_id>.<user_id>``: log lines and run status changes of one user's jobs of one
  plugin. Messages: ``{"type": "log.lines", "lines": [line, ...]}`` and
  ``{"type": "run.status", "run": {...}}``.
- ``scheduler.control``: change notifications for every running scheduler
  (see ``notify.py``).

A line is ``{"id", "run", "job", "seq", "ts", "level", "message"}``; ``id`` is the LogLine
primary key, the cursor a reconnecting browser resumes from.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

CONTROL_GROUP = "scheduler.control"


def log_group_name(plugin_id: int, user_id: int) -> str:
    return f"logs.{plugin_id}.{user_id}"


def line_payload(
    *, id: int, run_id: int, job_id: int, seq: int, created_at: datetime, level: int, message: str
) -> dict[str, Any]:
    return {
        "id": id,
        "run": run_id,
        "job": job_id,
        "seq": seq,
        "ts": created_at.isoformat(),
        "level": logging.getLevelName(level),
        "message": message,
    }


def run_payload(run: Any) -> dict[str, Any]:
    """The run fields a live page shows (``run`` is a JobRun)."""
    return {
        "id": run.pk,
        "job": run.job_id,
        "status": run.status,
        "trigger": run.trigger,
        "slot": run.slot.isoformat() if run.slot else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "node": run.node,
        "error": run.error,
    }
