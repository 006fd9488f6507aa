"""chatty: logs ``lines`` lines of about ``width`` characters at ``rate`` lines per second, then
"chatty done" (live-log tests: a stream heavy enough to fill a stalled socket)."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Config(BaseModel):
    lines: int = Field(1000, ge=1, le=19_000)
    rate: int = Field(1000, ge=1, le=100_000)
    width: int = Field(100, ge=0, le=5000)


class Plugin(JobPlugin):
    Config = Config
    description = "Logs a steady stream of lines (live-log tests)."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        padding = "x" * config.width
        start = time.monotonic()
        sent = 0
        while sent < config.lines:
            due = min(config.lines, int((time.monotonic() - start) * config.rate) + 1)
            while sent < due:
                sent += 1
                context.logger.info("chatty %d of %d %s", sent, config.lines, padding)
            await asyncio.sleep(0.005)
        context.logger.info("chatty done")
