"""bench_probe: the trivial plugin of the engine benchmarks: one log line per run."""

from __future__ import annotations

from scheduler_app import JobPlugin, RunContext, hookimpl


class Plugin(JobPlugin):
    description = "Benchmark probe: logs one line."

    @hookimpl
    async def run(self, config: object, context: RunContext) -> None:
        context.logger.info("tick")
