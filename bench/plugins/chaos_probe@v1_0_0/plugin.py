"""chaos_probe: the plugin of the chaos benchmark; every execution leaves a trail in a file.

Each execution appends lines ``<event> <job> <slot_ms> <pid> <time>`` to the file named by
``CHAOS_EFFECTS`` (one ``os.write`` on an ``O_APPEND`` descriptor per line, so lines of
concurrent processes never interleave): ``start``, a ``step`` every ``step_seconds``, then
``end``, or ``cancel`` if it was cancelled. The benchmark reads the file, not the database:
it sees executions the way a plugin's side effects would, including the ones a node never
managed to record. A ``step`` or ``end`` is work done; ``cancel`` is not.
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
    description = "Chaos benchmark probe: records every execution's start, steps and end in a file."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        slot_ms = to_ms(context.slot) if context.slot is not None else 0
        fd = os.open(os.environ["CHAOS_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def effect(event: str) -> None:
            os.write(fd, f"{event} {context.job_id} {slot_ms} {os.getpid()} {time.time():.4f}\n".encode())

        try:
            effect("start")
            for _ in range(config.steps):
                await asyncio.sleep(config.step_seconds)
                effect("step")
            effect("end")
            context.logger.info("done")
        except asyncio.CancelledError:
            effect("cancel")
            raise
        finally:
            os.close(fd)
