"""lab_plugin v0.1.0: a simulated experiment that fails now and then with a clear error."""

from __future__ import annotations

import random

from pydantic import BaseModel, Field

from scheduler_app import JobPlugin, RunContext, hookimpl


class ExperimentFailed(RuntimeError):
    """The simulated sensor drifted: the run fails with this message."""


class Config(BaseModel):
    samples: int = Field(5, ge=1, le=50, description="Measurements per run.")
    failure_rate: float = Field(0.2, ge=0, le=1, description="Chance that the experiment fails.")
    seed: int | None = Field(None, description="Random seed, for repeatable runs.")


class Plugin(JobPlugin):
    Config = Config
    title = "Lab experiment"
    description = "Simulates a lab experiment, one sample every 0.3 s; fails now and then."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        rng = random.Random(config.seed)
        context.logger.debug("seed=%s failure_rate=%.2f", config.seed, config.failure_rate)
        context.logger.info("starting experiment with %d samples", config.samples)
        values = []
        for i in range(config.samples):
            value = rng.gauss(20.0, 2.0)
            values.append(value)
            level = context.logger.warning if value > 23 else context.logger.info
            level("sample %d: %.2f °C", i + 1, value)
            if await context.sleep(0.3):
                context.logger.warning("experiment interrupted after %d samples", i + 1)
                return
        mean = sum(values) / len(values)
        if rng.random() < config.failure_rate:
            context.logger.error("calibration check failed")
            raise ExperimentFailed(f"sensor drift: mean {mean:.2f} °C outside calibration")
        context.logger.info("experiment done, mean %.2f °C", mean)
