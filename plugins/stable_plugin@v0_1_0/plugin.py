"""stable_plugin v0.1.0: checks a list of simulated services (nested models and lists)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class Service(BaseModel):
    name: str = Field(..., min_length=1, description="Service name.")
    port: int = Field(80, ge=1, le=65535)
    healthy: bool = Field(True, description="Simulated health.")


class Alerting(BaseModel):
    email: str = Field("ops@example.com", description="Where alerts would go.")
    threshold: int = Field(1, ge=1, description="Unhealthy services before alerting.")


class Config(BaseModel):
    services: list[Service] = Field(
        default_factory=lambda: [Service(name="web", port=443), Service(name="db", port=5432)]
    )
    alerting: Alerting = Field(default_factory=Alerting)
    tags: list[str] = Field(default_factory=list, description="Free-form labels.")


class Plugin(JobPlugin):
    Config = Config
    title = "Service checks"
    description = "Checks simulated services and alerts when too many are down."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        down = 0
        context.logger.debug("checking %d services (tags: %s)", len(config.services), ", ".join(config.tags) or "-")
        for service in config.services:
            if await context.sleep(0.5):
                context.logger.warning("check interrupted")
                return
            if service.healthy:
                context.logger.info("%s:%d is up", service.name, service.port)
            else:
                down += 1
                context.logger.error("%s:%d is DOWN", service.name, service.port)
        if down >= config.alerting.threshold:
            context.logger.warning("%d service(s) down: alerting %s", down, config.alerting.email)
        else:
            context.logger.info("all good (%d checked)", len(config.services))
