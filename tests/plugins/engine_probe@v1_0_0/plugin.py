"""engine_probe: behaviours the engine tests need, chosen by config.

- ``fast``: log ``lines`` lines and return.
- ``fail``: log a line, then raise ``RuntimeError(message)``.
- ``hang``: sleep ``seconds`` ignoring cancellation requests politely (plain ``asyncio.sleep``).
- ``polite``: sleep ``seconds`` through ``context.sleep`` (returns early when cancelled).
- ``block``: block the event loop with ``time.sleep(seconds)`` (what plugins must not do).
- ``stubborn``: sleep ``seconds``, swallowing every cancellation (what plugins must not do either).

With ``record`` set to a file path, every execution first appends one line ``<job> <slot> <run>``
to it: tests count executions there, not rows (a row per slot is what the unique constraint
guarantees anyway). ``Control`` is the same plugin under another package, for a second plugin.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Config(BaseModel):
    mode: Literal["fast", "fail", "hang", "polite", "block", "stubborn"] = "fast"
    seconds: float = Field(0.0, ge=0)
    lines: int = Field(1, ge=0)
    message: str = "probe failure"
    record: str = ""


class Plugin(JobPlugin):
    Config = Config
    description = "Engine test probe."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        if config.record:
            slot = context.slot.isoformat() if context.slot else "-"
            # One short write in append mode: lines of concurrent processes never interleave.
            with open(config.record, "a", encoding="utf-8") as f:
                f.write(f"{context.job_id} {slot} {context.run_id}\n")
        for i in range(config.lines):
            context.logger.info(
                "probe line %d of %d (job %s, run %s)", i + 1, config.lines, context.job_id, context.run_id
            )
        if config.mode == "fail":
            raise RuntimeError(config.message)
        if config.mode == "hang":
            await asyncio.sleep(config.seconds)
        elif config.mode == "polite":
            if await context.sleep(config.seconds):
                context.logger.warning("probe stopped early")
        elif config.mode == "stubborn":
            deadline = time.monotonic() + config.seconds
            while time.monotonic() < deadline:
                try:
                    await asyncio.sleep(deadline - time.monotonic())
                except asyncio.CancelledError:
                    context.logger.info("probe ignores the cancellation")
        elif config.mode == "block":
            time.sleep(config.seconds)  # deliberately blocks the loop
        context.logger.info("probe done")


class Control(Plugin):
    description = "Engine test probe, registered as a second plugin."
