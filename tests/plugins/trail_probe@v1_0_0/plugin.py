"""trail_probe: every execution leaves a trail in a file, whether or not a node records it.

Each execution appends lines ``<event> <job> <slot_ms> <pid> <time>`` to the file named by
the ``TRAIL_FILE`` environment variable, one ``os.write`` on an ``O_APPEND`` descriptor per
line (lines of concurrent processes never interleave): ``start``, a ``step`` every
``step_seconds``, then ``end``, or ``cancel`` when it is cancelled. ``tests/trail.py`` reads
the file: duplicate executions and overlapping work are seen as a plugin's side effects
would be, including those of a node that was killed before it could record anything.
"""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl
from scheduler_app.slots import to_ms


class Config(BaseModel):
    steps: int = Field(5, ge=0)
    step_seconds: float = Field(0.1, ge=0)


class Plugin(JobPlugin):
    Config = Config
    description = "Failover probe: records every execution's start, steps and end in a file."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        slot_ms = to_ms(context.slot) if context.slot is not None else 0
        fd = os.open(os.environ["TRAIL_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def mark(event: str) -> None:
            os.write(fd, f"{event} {context.job_id} {slot_ms} {os.getpid()} {time.time():.4f}\n".encode())

        try:
            mark("start")
            for _ in range(config.steps):
                await asyncio.sleep(config.step_seconds)
                mark("step")
            mark("end")
            context.logger.info("done")
        except asyncio.CancelledError:
            mark("cancel")
            raise
        finally:
            os.close(fd)
