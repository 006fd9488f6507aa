"""Which validated configs runs of one job may share: the engine validates a config that
cannot change (frozen, or no fields) once per spec and code, any other for every run."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from scheduler_app import JobPlugin, hookimpl, plugin_host
from scheduler_app.engine.engine import Engine
from scheduler_app.engine.registry import make_registry
from scheduler_app.jobtable import Diff, JobSpec
from scheduler_app.plugin_host import immutable_config


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
    engine = Engine(node_name="test")
    engine.registry = make_registry(lambda package, version: plugin)
    try:
        configs = [(await engine._prepare(s))[1] for s in specs]
    finally:
        engine.registry.close()
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
    engine.registry = make_registry(lambda package, version: plugin)
    try:
        await engine._prepare(spec())
        assert 1 in engine._configs
        engine.apply(Diff(removed=[1]))
        assert 1 not in engine._configs
    finally:
        engine.registry.close()
