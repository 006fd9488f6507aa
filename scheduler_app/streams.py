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
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler_app.models import JobRun

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


@dataclass(slots=True)
class RunSnapshot:
    """A run as the engine and live pages see it: the one shape of a run outside the ORM.

    The engine makes one when it claims a run and updates it as the run ends; lost runs and
    stored rows (``RunSnapshot.of``) take the same shape, so ``run_payload`` has one input.
    """

    id: int
    job_id: int
    plugin_id: int
    user_id: int
    trigger: str
    slot: datetime
    node: str
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str = ""
    #: 1 for the first run of a slot, 2, 3... for its retries
    attempt: int = 1

    @classmethod
    def of(cls, run: JobRun) -> RunSnapshot:
        """The snapshot of a stored run (select_related("job") avoids a query per run)."""
        return cls(
            id=run.pk,
            job_id=run.job_id,
            plugin_id=run.job.plugin_id,
            user_id=run.job.user_id,
            trigger=run.trigger,
            slot=run.slot,
            node=run.node,
            status=run.status,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=run.error,
            attempt=run.attempt,
        )


def run_payload(run: RunSnapshot) -> dict[str, Any]:
    """The run fields a live page shows."""
    return {
        "id": run.id,
        "job": run.job_id,
        "status": run.status,
        "trigger": run.trigger,
        "slot": run.slot.isoformat() if run.slot else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "node": run.node,
        "error": run.error,
        "attempt": run.attempt,
    }
