"""This node's liveness: register, heartbeat, mark runs of dead nodes lost, say it stopped.

The rules live in ``scheduler_app.nodes`` (the statements) and ``models.alive_condition``
(who is alive); this is the loop that applies them every ``HEARTBEAT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from scheduler_app import metrics, nodes
from scheduler_app.engine.access import Database
from scheduler_app.streams import RunSnapshot

log = logging.getLogger("scheduler_app.engine")


class Heartbeat:
    def __init__(
        self,
        db: Database,
        node: str,
        *,
        seconds: float,
        lost_after_seconds: float,
        load: Callable[[], tuple[int, int]],
        publish: Callable[[RunSnapshot], None],
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.node = node
        self.seconds = seconds
        self.lost_after_seconds = lost_after_seconds
        self.load = load  # (running runs, scheduled jobs), reported with each beat
        self.publish = publish
        self.clock = clock

    async def register(self) -> None:
        await self.db.write(nodes.register, self.node, self.clock())

    async def sweep(self) -> list[RunSnapshot]:
        """Mark lost the runs of dead nodes (also those that died while no node watched)."""
        lost: list[RunSnapshot] = await self.db.write(
            nodes.mark_lost_runs, self.node, self.clock(), self.lost_after_seconds
        )
        for run in lost:
            log.warning("run %s of job %s marked lost: %s", run.id, run.job_id, run.error)
            self.publish(run)
        return lost

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            try:
                running, scheduled = self.load()
                at = self.clock()
                await self.db.write(nodes.heartbeat, self.node, at, running, scheduled)
                metrics.node_heartbeat(at.timestamp())
                await self.sweep()
            except Exception as exc:
                log.warning("heartbeat failed (%s: %s)", type(exc).__name__, exc)

    async def stopped(self) -> None:
        try:
            await self.db.write(nodes.mark_stopped, self.node, self.clock())
        except Exception as exc:
            log.warning("could not mark node %s stopped: %s", self.node, exc)
