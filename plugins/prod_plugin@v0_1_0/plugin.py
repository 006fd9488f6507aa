"""prod_plugin v0.1.0: a simulated deployment through stages, with a secret token."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from scheduler_app import JobPlugin, RunContext, hookimpl


class Config(BaseModel):
    environment: Literal["staging", "production"] = Field("staging", description="Where to deploy.")
    version: str = Field("1.0.0", pattern=r"^\d+\.\d+\.\d+$", description="Version to deploy (x.y.z).")
    token: SecretStr = Field(SecretStr(""), description="API token (never logged).")
    dry_run: bool = Field(True, description="Only pretend.")


STAGES = ["build", "test", "upload", "migrate", "switch traffic"]


class Plugin(JobPlugin):
    Config = Config
    title = "Deployment"
    description = "Simulates a deployment through several stages (the token is never logged)."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        context.logger.info(
            "deploying %s to %s%s", config.version, config.environment, " (dry run)" if config.dry_run else ""
        )
        context.logger.debug("%d stages", len(STAGES))
        if not config.token.get_secret_value():
            context.logger.warning("no token set: using anonymous access")
        for stage in STAGES:
            context.logger.info("\x1b[36m%s\x1b[0m ...", stage)
            if await context.sleep(0.4):
                context.logger.warning("deployment interrupted at %s", stage)
                return
        context.logger.info("\x1b[32mdeployed %s\x1b[0m", config.version)
