"""What the pages compute once instead of per request (each plugin's converted form schema, per
loaded code: a reload gets a fresh one), and the pages' faster ``date`` filter."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.template import engines
from django.utils import timezone
from django.utils.html import conditional_escape

from scheduler_app import config_forms, plugin_host
from tests.plugins.helpers import PluginFolder, module_path_fixture  # noqa: F401 - the fixture


def test_the_form_schema_is_built_once_per_loaded_code(module_path: PluginFolder, monkeypatch):
    package = module_path.write_good(marker="v1")
    plugin_host.get_plugin(package)  # loading checks the conversion once; count the pages' own
    built: list[str] = []
    convert = config_forms.jsonform_schema.to_jsonform_schema

    def counting(schema, model=None):
        built.append(package)
        return convert(schema, model)

    monkeypatch.setattr(config_forms.jsonform_schema, "to_jsonform_schema", counting)
    first = config_forms.form_schema(package)
    second = config_forms.form_schema(package)
    assert first == second and len(built) == 1
    # Each caller gets its own copy: a form that marks kept secrets changes only its own.
    first["properties"]["greeting"]["title"] = "changed by one form"
    assert config_forms.form_schema(package)["properties"]["greeting"]["title"] != "changed by one form"


def test_a_reloaded_plugin_gets_the_schema_of_its_new_code(module_path: PluginFolder):
    package = module_path.write_good(marker="v1")
    assert "greeting" in config_forms.form_schema(package)["properties"]
    module_path.write(
        """
        from pydantic import BaseModel
        from scheduler_app import JobPlugin, hookimpl

        class Config(BaseModel):
            farewell: str = "bye"

        class Plugin(JobPlugin):
            Config = Config

            @hookimpl
            async def run(self, config, context):
                context.logger.info(config.farewell)
        """
    )
    plugin_host.reload(package)
    assert list(config_forms.form_schema(package)["properties"]) == ["farewell"]


# -- the date filter's fast path gives Django's output -------------------------------------------

MOMENTS = [
    datetime(2026, 11, 27, 21, 5, 9, 123456, tzinfo=UTC),
    datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
    datetime(999, 3, 4, 5, 6, 7, tzinfo=UTC),  # a year below 1000 keeps its four digits
    # Europe/Paris: summer time, winter time, the hour that happens twice, the hour that never does
    datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(2026, 12, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),
]


@pytest.mark.parametrize("time_zone", ["UTC", "Europe/Paris", "America/New_York"])
@pytest.mark.parametrize("fmt", ["c", "Y-m-d H:i:s", "Y-m-d H:i:s T", "N j, Y", None])
def test_the_fast_date_filter_renders_what_djangos_does(time_zone: str, fmt: str | None):
    from django.template.defaultfilters import date as djangos_date
    from django.utils.timezone import template_localtime

    page = engines["django"].from_string("{{ when|date:fmt }}" if fmt else "{{ when|date }}")
    with timezone.override(ZoneInfo(time_zone)):
        for when in [*MOMENTS, datetime(2026, 5, 6, 7, 8, 9), None, ""]:
            # what a template shows: the value in the current time zone, through Django's filter
            expected = djangos_date(template_localtime(when), fmt) if fmt else djangos_date(template_localtime(when))
            assert page.render({"when": when, "fmt": fmt}) == conditional_escape(expected), (when, fmt)


def test_templates_use_the_fast_date_filter():
    from django.template.defaultfilters import date as djangos_date

    from scheduler_app.templatetags.fast_dates import date as fast_date

    parser_filters: dict = {}
    for library in engines["django"].engine.template_builtins:
        parser_filters.update(library.filters)  # later builtins win, as in the template parser
    assert parser_filters["date"] is fast_date and fast_date is not djangos_date


def test_a_runs_labels_are_djangos_labels():
    from scheduler_app.models import JobRun

    for status in [*JobRun.Status.values, "unknown"]:
        for trigger in [*JobRun.Trigger.values, "other"]:
            run = JobRun(status=status, trigger=trigger)
            assert run.get_status_display() == run._get_FIELD_display(JobRun._meta.get_field("status"))
            assert run.get_trigger_display() == run._get_FIELD_display(JobRun._meta.get_field("trigger"))
    assert JobRun(status="timed_out").get_status_display() == "timed out"
