"""Housekeeping loops: retention of old runs, and SQLite WAL checkpoints.

Both read in the reader thread and write (if at all) in the writer thread, in small batches,
so neither holds up claims or log writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from django.db import connections

from scheduler_app import retention
from scheduler_app.engine.access import Database
from scheduler_app.writer import checkpoint

log = logging.getLogger("scheduler_app.engine")

RETENTION_SECONDS = 60.0
#: SQLite: how often the WAL is checkpointed (off the writer thread).
CHECKPOINT_SECONDS = 1.0


async def prune_once(db: Database, now: datetime, retain_days: float, retain_runs_per_job: int) -> int:
    """Delete what retention allows, batch by batch; return how many runs went."""
    deleted = 0
    while True:
        ids = await db.read(retention.prunable, now, retain_days, retain_runs_per_job)
        if not ids:
            return deleted
        n = await db.write(retention.delete_runs, ids)
        deleted += n
        if n == 0:  # found but gone meanwhile (another node pruned them): done for now
            return deleted
        await asyncio.sleep(0.2)  # let claims and log writes through between batches


async def retention_loop(db: Database, clock: Callable[[], datetime], retain_days: float, per_job: int) -> None:
    await asyncio.sleep(5)
    while True:
        try:
            deleted = await prune_once(db, clock(), retain_days, per_job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("retention failed (%s: %s)", type(exc).__name__, exc)
        else:
            if deleted:
                log.info("retention: deleted %d old runs with their log lines", deleted)
        await asyncio.sleep(RETENTION_SECONDS)


async def checkpoint_loop(db: Database) -> None:
    """SQLite only: checkpoint the WAL from the reader thread (the writer's are switched off)."""
    if connections["default"].vendor != "sqlite":
        return
    while True:
        await asyncio.sleep(CHECKPOINT_SECONDS)
        try:
            await db.read(checkpoint)
        except Exception as exc:
            log.debug("checkpoint failed: %s", exc)
