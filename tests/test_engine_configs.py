"""What a run needs before it starts (``engine.launch``): its logger, context and first lines,
and which validated configs runs of one job may share: a config that cannot change (frozen, or
no fields) is validated once per spec and code, any other for every run."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from scheduler_app import JobPlugin, hookimpl, plugin_host, schedules
from scheduler_app.engine.engine import Engine
from scheduler_app.engine.launch import Launcher
from scheduler_app.engine.registry import make_registry
from scheduler_app.jobtable import Diff, JobSpec
from scheduler_app.plugin_host import immutable_config
from scheduler_app.streams import RunSnapshot


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str = "x"


class Empty(BaseModel):
    pass


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Settings(BaseModel):
    items: list[int] = []


@pytest.mark.parametrize(("model", "shared"), [(Frozen(), True), (Empty(), True), (Open(), False), (Settings(), False)])
def test_only_a_config_nothing_can_change_is_shared(model, shared):
    assert immutable_config(model) is shared


def counting_plugin(model: type[BaseModel]) -> tuple[plugin_host.LoadedPlugin, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    class Counting(JobPlugin):
        Config = model

        @hookimpl
        def config(self, raw: dict[str, Any]) -> BaseModel:
            seen.append(raw)
            return model.model_validate(raw)

        @hookimpl
        async def run(self, config: Any, context: Any) -> None:
            pass

    return plugin_host.load_class(Counting), seen


def spec(job_id: int = 1, **config: Any) -> JobSpec:
    return JobSpec(id=job_id, user_id=1, username="alice", plugin_id=1, package="t.counting@v1.plugin.Plugin",
                   interval=1, timeout=5, config=config, code_version=1, updated_ms=0)  # fmt: skip


async def prepare_three(model: type[BaseModel], *specs: JobSpec) -> tuple[list[BaseModel], int]:
    plugin, seen = counting_plugin(model)
    launcher = Launcher(make_registry(lambda package, version: plugin))
    try:
        configs = [(await launcher.prepare(s))[1] for s in specs]
    finally:
        launcher.registry.close()
    return configs, len(seen)


async def test_an_immutable_config_is_validated_once_per_spec():
    job = spec()
    configs, validations = await prepare_three(Empty, job, job, job)
    assert validations == 1
    assert configs[0] is configs[1] is configs[2]


async def test_a_changed_spec_is_validated_again():
    configs, validations = await prepare_three(Frozen, spec(name="a"), spec(name="b"))
    assert validations == 2
    assert [c.name for c in configs] == ["a", "b"]  # type: ignore[attr-defined]


async def test_a_mutable_config_is_validated_for_every_run():
    job = spec(items=[1])
    configs, validations = await prepare_three(Settings, job, job, job)
    assert validations == 3
    configs[0].items.append(2)  # type: ignore[attr-defined]
    assert configs[1].items == [1], "a run's changes to its config never reach the next run"  # type: ignore[attr-defined]


async def test_a_removed_job_forgets_its_config():
    plugin, _seen = counting_plugin(Empty)
    engine = Engine(node_name="test")
    engine.registry.close()
    engine.launcher.registry = make_registry(lambda package, version: plugin)
    try:
        await engine.launcher.prepare(spec())
        assert 1 in engine.launcher._configs
        engine.apply(Diff(removed=[1]))
        assert 1 not in engine.launcher._configs
    finally:
        engine.launcher.registry.close()


class Lines:
    """A writer that keeps the lines (the launcher's runs log through it)."""

    def __init__(self) -> None:
        self.lines: list[Any] = []

    def add_line(self, line: Any) -> None:
        self.lines.append(line)


def snapshot(trigger: str, attempt: int = 1) -> RunSnapshot:
    return RunSnapshot(id=42, job_id=1, plugin_id=1, user_id=1, trigger=trigger, slot=SLOT, node="n",
                       status="running", attempt=attempt)  # fmt: skip


SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_launched_run_has_its_context_its_first_lines_and_its_spec():
    writer = Lines()
    launcher = Launcher(make_registry(lambda package, version: None), writer)  # type: ignore[arg-type]
    try:
        job = replace(spec(), max_retries=2, timing=schedules.Timing.of(1, "", 1, "Europe/Paris"))
        supervised = launcher.supervised(snapshot("retry", attempt=2), job, note="coalesced: 3 slots")
        context = supervised.context
        assert (context.run_id, context.job_id, context.username, context.attempt) == (42, 1, "alice", 2)
        assert not context.cancelled.is_set()
        assert [line.message for line in writer.lines] == [
            "coalesced: 3 slots",
            "retry: attempt 2 of 3 for the slot 2026-03-01 13:00:00 CET",
        ], "the note and the retry line, the slot in the job's time zone"
        assert supervised.log_count() == 2 and supervised.timeout == 5
        assert launcher.specs[42] is job
        launcher.ended(42)
        assert 42 not in launcher.specs
    finally:
        launcher.registry.close()
