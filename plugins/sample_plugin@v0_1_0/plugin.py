"""sample_plugin v0.1.0: greets one person a few times, one line per second."""

from __future__ import annotations

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Config(BaseModel):
    name: str = Field("world", min_length=1, max_length=50, description="Who to greet.")
    times: int = Field(3, ge=1, le=10, description="How many greetings per run.")


class Plugin(JobPlugin):
    Config = Config
    title = "Sample greeter"
    description = "Greets someone a few times, one line per second."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        context.logger.debug("greeting %s %d times", config.name, config.times)
        for i in range(1, config.times + 1):
            context.logger.info("Hello, %s! (%d/%d)", config.name, i, config.times)
            if await context.sleep(1):
                context.logger.warning("stopped early, after %d of %d greetings", i, config.times)
                return
        if config.times > 5:
            context.logger.warning("that was a lot of greetings (%d)", config.times)
        context.logger.info("done")
