"""sample_plugin v0.2.0: greets several people in a chosen style (a Config unlike v0.1.0's)."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Style(str, Enum):
    plain = "plain"
    excited = "excited"
    formal = "formal"


class Config(BaseModel):
    names: list[str] = Field(default_factory=lambda: ["alice", "bob"], description="Who to greet.")
    style: Style = Field(Style.plain, description="How to greet.")
    pause: float = Field(0.5, ge=0, le=5, description="Seconds between greetings.")


class Plugin(JobPlugin):
    Config = Config
    description = "Greets several people in a chosen style."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        for name in config.names:
            if config.style is Style.excited:
                context.logger.info("HELLO %s!!!", name.upper())
            elif config.style is Style.formal:
                context.logger.info("Good day to you, %s.", name)
            else:
                context.logger.info("Hello, %s.", name)
            if await context.sleep(config.pause):
                return
        context.logger.debug("greeted %d people", len(config.names))
