"""sample_plugin v0.2.0: greets several people in a chosen style (a Config unlike v0.1.0's)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Style(StrEnum):
    plain = "plain"
    excited = "excited"
    formal = "formal"


class Config(BaseModel):
    names: list[str] = Field(default_factory=lambda: ["alice", "bob"], description="Who to greet.")
    style: Style = Field(Style.plain, description="How to greet.")
    pause: float = Field(0.5, ge=0, le=5, description="Seconds between greetings.")


class Plugin(JobPlugin):
    Config = Config
    title = "Sample greeter, v0.2"
    description = "Greets several people in a chosen style."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        if not config.names:
            context.logger.warning("nobody to greet")
            return
        context.logger.debug("greeting %d people, %s style", len(config.names), config.style.value)
        for name in config.names:
            if config.style is Style.excited:
                context.logger.warning("HELLO %s!!!", name.upper())
            elif config.style is Style.formal:
                context.logger.info("Good day to you, %s.", name)
            else:
                context.logger.info("Hello, %s.", name)
            if await context.sleep(config.pause):
                context.logger.warning("stopped early")
                return
        context.logger.info("greeted %d people", len(config.names))
