"""bench_logger: logs lines at a steady rate, for the live-log benchmark (bench/web_live_logs.py)."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Config(BaseModel):
    rate: int = Field(1000, ge=1, le=100_000, description="Lines per second.")
    seconds: float = Field(5.0, gt=0, le=600, description="How long to log.")


class Plugin(JobPlugin):
    Config = Config
    description = "Logs lines at a steady rate (benchmark)."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        total = int(config.rate * config.seconds)
        start = time.monotonic()
        sent = 0
        while sent < total:
            # Emit what is due by now, then sleep until the next line is due (at least 5 ms):
            # a steady rate, without 200 wake-ups a second for a run logging 10 lines/s.
            due = min(total, int((time.monotonic() - start) * config.rate) + 1)
            while sent < due:
                sent += 1
                context.logger.info("line %d of %d", sent, total)
            await asyncio.sleep(max(0.005, start + sent / config.rate - time.monotonic()))
