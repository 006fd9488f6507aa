"""sample_plugin v0.1.0: greets one person a few times, one line per second."""

from __future__ import annotations

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Config(BaseModel):
    name: str = Field("world", min_length=1, max_length=50, description="Who to greet.")
    times: int = Field(3, ge=1, le=10, description="How many greetings per run.")


class Plugin(JobPlugin):
    Config = Config
    description = "Greets someone a few times."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        for i in range(1, config.times + 1):
            context.logger.info("Hello, %s! (%d/%d)", config.name, i, config.times)
            if await context.sleep(1):
                context.logger.warning("stopped early")
                return
