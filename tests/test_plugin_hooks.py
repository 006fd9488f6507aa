"""The three hooks of the contract, each as a plugin author uses it (docs/PLUGIN_DEVELOPMENT.md §4)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field, model_validator

from scheduler_app import JobPlugin, RunContext, hookimpl
from scheduler_app.config_forms import form_schema
from scheduler_app.plugin_host import ConfigValidationError, load_class
from scheduler_app.testing import run_plugin


class Range(BaseModel):
    low: int = 0
    high: int = Field(10, description="Upper bound.")

    @model_validator(mode="after")
    def ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError("low must not be above high")
        return self


class RangePlugin(JobPlugin):
    Config = Range

    @hookimpl
    async def run(self, config: Range, context: RunContext) -> None:
        context.logger.info("%d..%d", config.low, config.high)


def test_hook_schema_defaults_to_the_config_model():
    loaded = load_class(RangePlugin)
    assert loaded.schema() == Range.model_json_schema()


def test_hook_schema_can_be_overridden_and_feeds_the_form():
    class Titled(RangePlugin):
        @hookimpl
        def schema(self) -> dict[str, Any]:
            schema = Range.model_json_schema()
            schema["properties"]["low"]["title"] = "Lower bound"
            return schema

    loaded = load_class(Titled)
    assert loaded.schema()["properties"]["low"]["title"] == "Lower bound"
    # The form converts whatever the hook returns (leaf descriptions become help text).
    from scheduler_app import jsonform_schema

    converted = jsonform_schema.to_jsonform_schema(loaded.schema(), loaded.config_model)
    assert converted["properties"]["high"]["help_text"] == "Upper bound."


def test_hook_schema_is_used_by_the_config_form_of_a_registered_plugin():
    from scheduler_app.models import Plugin

    schema = form_schema(Plugin(package="plugins.sample_plugin@v0_1_0.plugin.Plugin"))
    assert schema["properties"]["name"]["help_text"] == "Who to greet."


def test_hook_config_validates_through_the_model_and_reports_field_locations():
    loaded = load_class(RangePlugin)
    assert loaded.validate({"low": 2}).high == 10
    with pytest.raises(ConfigValidationError) as err:
        loaded.validate({"low": "x"})
    assert err.value.errors[0].loc == ("low",)
    with pytest.raises(ConfigValidationError) as err:
        loaded.validate({"low": 20, "high": 1})
    assert err.value.errors[0].loc == () and "low must not be above high" in err.value.errors[0].message


def test_hook_config_can_be_overridden_and_is_called_by_keyword():
    class Normalising(RangePlugin):
        @hookimpl
        def config(self, raw: dict[str, Any]) -> BaseModel:
            low, high = sorted([raw.get("low", 0), raw.get("high", 10)])
            return Range(low=low, high=high)

    result = run_plugin(Normalising, {"low": 20, "high": 1})
    assert result.messages() == ["1..20"]


def test_hook_run_gets_the_validated_config_and_the_context():
    seen: dict[str, Any] = {}

    class Inspect(JobPlugin):
        Config = Range

        @hookimpl
        async def run(self, config: Range, context: RunContext) -> None:
            seen.update(config=config, context=context)
            context.logger.warning("careful")

    result = run_plugin(Inspect, {"low": 1}, username="alice", job_id=7)
    assert isinstance(seen["config"], Range) and seen["config"].low == 1
    context = seen["context"]
    assert (context.username, context.job_id, context.trigger) == ("alice", 7, "manual")
    assert not context.should_stop()
    assert result.lines == ["WARNING careful"]


def test_hook_run_may_take_fewer_parameters():
    class OnlyContext(JobPlugin):
        @hookimpl
        async def run(self, context: RunContext) -> None:
            context.logger.info("no config needed")

    assert run_plugin(OnlyContext, {}).messages() == ["no config needed"]


def test_hook_run_failures_are_captured_with_their_traceback():
    class Failing(JobPlugin):
        @hookimpl
        async def run(self, config: BaseModel, context: RunContext) -> None:
            raise RuntimeError("disk full on /data")

    result = run_plugin(Failing, {})
    assert not result.ok and str(result.error) == "disk full on /data"
    assert "RuntimeError: disk full on /data" in result.traceback
