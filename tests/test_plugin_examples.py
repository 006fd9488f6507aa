"""The five example plugins, run through the authors' helper (scheduler_app.testing)."""

from __future__ import annotations

import json
import logging

import pytest

from scheduler_app import plugin_host
from scheduler_app.plugin_host import ConfigValidationError
from scheduler_app.testing import arun_plugin, run_plugin
from tests.processes import ROOT

SAMPLE = "plugins.sample_plugin@v0_1_0.plugin.Plugin"
SAMPLE_V2 = "plugins.sample_plugin@v0_2_0.plugin.Plugin"
LAB = "plugins.lab_plugin@v0_1_0.plugin.Plugin"
STABLE = "plugins.stable_plugin@v0_1_0.plugin.Plugin"
PROD = "plugins.prod_plugin@v0_1_0.plugin.Plugin"


def test_sample_greets_once_per_greeting_at_several_levels():
    result = run_plugin(SAMPLE, {"name": "Ada", "times": 1})
    assert result.ok, result.traceback
    assert result.lines == ["DEBUG greeting Ada 1 times", "INFO Hello, Ada! (1/1)", "INFO done"]


def test_sample_refuses_an_invalid_config():
    with pytest.raises(ConfigValidationError) as err:
        run_plugin(SAMPLE, {"name": "", "times": 11})
    assert [e.loc for e in err.value.errors] == [("name",), ("times",)]


def test_sample_versions_differ_in_their_config():
    v1 = plugin_host.get_plugin(SAMPLE).schema()["properties"]
    v2 = plugin_host.get_plugin(SAMPLE_V2).schema()["properties"]
    assert set(v1) == {"name", "times"} and set(v2) == {"names", "style", "pause"}


def test_sample_v2_greets_everyone_in_the_chosen_style():
    result = run_plugin(SAMPLE_V2, {"names": ["ada", "bob"], "style": "excited", "pause": 0})
    assert result.ok, result.traceback
    assert result.messages("WARNING") == ["HELLO ADA!!!", "HELLO BOB!!!"]
    assert result.messages()[-1] == "greeted 2 people"


def test_lab_succeeds_or_fails_with_a_clear_error():
    ok = run_plugin(LAB, {"samples": 2, "failure_rate": 0, "seed": 1})
    assert ok.ok and ok.messages()[-1].startswith("experiment done, mean")
    failed = run_plugin(LAB, {"samples": 2, "failure_rate": 1, "seed": 1})
    assert type(failed.error).__name__ == "ExperimentFailed"
    assert str(failed.error).startswith("sensor drift: mean")
    assert failed.messages("ERROR") == ["calibration check failed"]
    assert "ExperimentFailed" in failed.traceback


def test_stable_checks_nested_and_list_fields():
    config = {
        "services": [{"name": "web", "port": 443}, {"name": "cache", "port": 6379, "healthy": False}],
        "alerting": {"email": "ops@example.com", "threshold": 1},
        "tags": ["core"],
    }
    result = run_plugin(STABLE, config)
    assert result.ok, result.traceback
    assert result.messages("ERROR") == ["cache:6379 is DOWN"]
    assert result.messages("WARNING") == ["1 service(s) down: alerting ops@example.com"]
    assert result.messages("DEBUG") == ["checking 2 services (tags: core)"]


def test_prod_never_logs_its_token():
    result = run_plugin(PROD, {"version": "2.0.0", "token": "tok-123-secret"})
    assert result.ok, result.traceback
    assert "deployed 2.0.0" in result.messages()[-1]
    assert not any("tok-123-secret" in line for line in result.lines)


async def test_a_cancelled_run_stops_early():
    import asyncio

    cancel = asyncio.Event()
    task = asyncio.ensure_future(arun_plugin(SAMPLE, {"times": 10}, cancel=cancel))
    await asyncio.sleep(0.2)
    cancel.set()
    result = await task
    assert result.cancelled and result.messages(logging.WARNING) == ["stopped early, after 1 of 10 greetings"]


def test_a_run_past_its_timeout_is_cut_short():
    result = run_plugin(SAMPLE, {"times": 10}, timeout=0.3)
    assert result.timed_out and not result.ok


def test_the_demo_fixture_configs_are_valid():
    objects = json.loads((ROOT / "fixtures" / "demo.json").read_text())
    packages = {o["pk"]: o["fields"]["package"] for o in objects if o["model"] == "scheduler_app.plugin"}
    jobs = [o for o in objects if o["model"] == "scheduler_app.job"]
    assert len(packages) == 5 and jobs
    for job in jobs:
        package = packages[job["fields"]["plugin"]]
        assert plugin_host.validate_config(package, job["fields"]["config"]) == job["fields"]["config"], job["pk"]


def test_run_plugin_takes_a_class_too():
    from scheduler_app import JobPlugin, hookimpl

    class Inline(JobPlugin):
        @hookimpl
        async def run(self, config, context):
            context.logger.info("inline ran")
            raise ValueError("and failed")

    result = run_plugin(Inline, {})
    assert result.messages() == ["inline ran"] and isinstance(result.error, ValueError)
