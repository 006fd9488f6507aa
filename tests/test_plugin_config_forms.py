"""The config form field: every field kind converts, renders, round-trips and maps its errors.

The plugin under test is tests/plugins/kinds_plugin@v1_0_0: one field of every kind of the
issue (constrained str/int/float/bool, Literal, Enum, Optional, nested model, lists of
scalars and of models, SecretStr, dict).
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from django import forms

from scheduler_app import jsonform_schema, secretbox
from scheduler_app.config_forms import ConfigField, form_schema, initial_config
from scheduler_app.models import Plugin

KINDS = "tests.plugins.kinds_plugin@v1_0_0.plugin.Plugin"

STORED = {
    "word": "abc",
    "count": 7,
    "ratio": 0.75,
    "flag": False,
    "must": True,
    "mode": "slow",
    "color": "green",
    "maybe_color": None,
    "note": None,
    "limit": 3,
    "endpoint": {"host": "db", "port": 5432},
    "tags": ["a", "b"],
    "numbers": [4],
    "items": [{"name": "n", "qty": 2}],
    "token": "s3cr3t-value",
    "labels": {"k": "v"},
}


@pytest.fixture
def kinds() -> Plugin:
    # Unsaved is enough: the field needs only the package.
    return Plugin(package=KINDS, interval=10)


def make_form(plugin: Plugin, data: Any = None, stored: dict[str, Any] | None = None) -> forms.Form:
    class JobForm(forms.Form):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.fields["config"] = ConfigField(plugin, stored=stored, initial=initial_config(plugin, stored))

    if data is None:
        return JobForm()
    return JobForm({"config": json.dumps(data)})


def widget_config(form: forms.Form) -> dict[str, Any]:
    """The JSON the widget's JavaScript receives (the data-django-jsonform attribute)."""
    rendered = str(form["config"])
    match = re.search(r'data-django-jsonform="([^"]*)"', rendered)
    assert match, rendered
    return json.loads(html.unescape(match.group(1)))


def submitted(form: forms.Form) -> dict[str, Any]:
    """What an untouched widget posts back: the data it was given."""
    return json.loads(widget_config(form)["data"])


# --- schema conversion ---------------------------------------------------------------------


def test_constrained_scalars_keep_their_constraints_and_show_descriptions(kinds):
    props = form_schema(kinds)["properties"]
    assert props["word"]["minLength"] == 2 and props["word"]["maxLength"] == 10
    assert props["word"]["help_text"] == "Lowercase word"
    assert (props["count"]["minimum"], props["count"]["maximum"], props["count"]["type"]) == (0, 10, "integer")
    assert props["ratio"]["type"] == "number"
    assert props["flag"] == {"default": True, "title": "Flag", "type": "boolean"}


def test_required_bool_is_not_required_and_defaults_to_false(kinds):
    schema = form_schema(kinds)
    assert "must" not in schema.get("required", [])
    assert schema["properties"]["must"]["default"] is False


def test_literal_and_enum_render_as_choices(kinds):
    schema = form_schema(kinds)
    assert schema["properties"]["mode"]["enum"] == ["fast", "slow"]
    assert schema["properties"]["color"]["$ref"] == "#/$defs/Color"
    # A bare $ref gets the field's own label, not the class name.
    assert schema["properties"]["endpoint"]["title"] == "Endpoint"
    assert schema["$defs"]["Color"]["enum"] == ["red", "green"]


def test_optional_fields_lose_the_null_branch_and_are_marked_nullable(kinds):
    props = form_schema(kinds)["properties"]
    assert props["note"] == {"type": "string", "title": "Note", "x-nullable": True}
    assert props["limit"] == {"type": "integer", "title": "Limit", "x-nullable": True}
    # An optional enum is inlined with an empty choice, labelled by its field name.
    assert props["maybe_color"]["title"] == "Maybe Color"
    assert props["maybe_color"]["choices"][0] == {"title": "(none)", "value": ""}
    assert "anyOf" not in json.dumps(props)


def test_default_factory_values_become_defaults(kinds):
    props = form_schema(kinds)["properties"]
    assert props["tags"]["default"] == ["x"]
    assert props["numbers"]["default"] == [1, 2]
    assert props["items"]["default"] == []


def test_dicts_get_empty_properties_and_secrets_lose_their_default(kinds):
    props = form_schema(kinds)["properties"]
    assert props["labels"]["properties"] == {}
    assert props["labels"]["additionalProperties"] == {"type": "string"}
    assert "default" not in props["token"]
    assert props["token"]["format"] == "password"


def test_union_options_get_titles_and_examples_become_placeholders():
    schema = jsonform_schema.to_jsonform_schema(
        {
            "type": "object",
            "properties": {
                "u": {"anyOf": [{"type": "integer"}, {"type": "string"}], "default": 1, "title": "U"},
                "e": {"type": "string", "examples": ["foo", "bar"], "title": "E"},
            },
        }
    )
    assert [o["title"] for o in schema["properties"]["u"]["anyOf"]] == ["integer", "string"]
    assert schema["properties"]["e"]["placeholder"] == "e.g. foo, bar"


def test_conversion_does_not_touch_the_input():
    original = {"type": "object", "properties": {"o": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    snapshot = json.dumps(original)
    jsonform_schema.to_jsonform_schema(original)
    assert json.dumps(original) == snapshot


# --- round trips ----------------------------------------------------------------------------


def test_a_stored_config_of_every_kind_loads_back_unchanged(kinds):
    form = make_form(kinds, stored=STORED)
    posted = make_form(kinds, submitted(form), stored=STORED)
    assert posted.is_valid(), posted.errors
    assert posted.cleaned_data["config"]["token"].startswith("fernet:")  # what is stored is encrypted
    assert secretbox.reveal(posted.cleaned_data["config"]) == STORED


def test_a_fresh_form_saves_the_defaults(kinds):
    form = make_form(kinds)
    data = submitted(form)
    assert data["tags"] == ["x"] and data["endpoint"] == {"host": "localhost", "port": 8080}
    posted = make_form(kinds, data)
    assert posted.is_valid(), posted.errors
    config = posted.cleaned_data["config"]
    assert config["must"] is False and config["note"] is None and config["token"] == ""


def test_empty_optional_inputs_are_saved_as_none(kinds):
    data = {**STORED, "note": "", "maybe_color": "", "limit": None}
    form = make_form(kinds, data, stored=STORED)
    assert form.is_valid(), form.errors
    config = form.cleaned_data["config"]
    assert (config["note"], config["maybe_color"], config["limit"]) == (None, None, None)


def test_optional_values_are_kept(kinds):
    data = {**STORED, "note": "hi", "maybe_color": "red", "limit": 9}
    form = make_form(kinds, data, stored=STORED)
    assert form.is_valid(), form.errors
    assert {k: form.cleaned_data["config"][k] for k in ("note", "maybe_color", "limit")} == {
        "note": "hi",
        "maybe_color": "red",
        "limit": 9,
    }


# --- secrets ---------------------------------------------------------------------------------


def test_a_stored_secret_never_reaches_the_browser(kinds):
    form = make_form(kinds, stored=STORED)
    assert "s3cr3t-value" not in str(form["config"])
    assert widget_config(form)["data"] and json.loads(widget_config(form)["data"])["token"] == ""


def test_a_blank_secret_keeps_the_stored_one_and_a_new_one_replaces_it(kinds):
    kept = make_form(kinds, {**STORED, "token": ""}, stored=STORED)
    assert kept.is_valid(), kept.errors
    assert secretbox.reveal(kept.cleaned_data["config"])["token"] == "s3cr3t-value"
    changed = make_form(kinds, {**STORED, "token": "new-one"}, stored=STORED)
    assert changed.is_valid(), changed.errors
    assert secretbox.reveal(changed.cleaned_data["config"])["token"] == "new-one"


def test_a_form_redisplayed_with_errors_does_not_echo_the_secret(kinds):
    form = make_form(kinds, {**STORED, "count": 99, "token": "typed-secret"}, stored=STORED)
    assert not form.is_valid()
    assert "typed-secret" not in str(form["config"])


# --- errors on the right input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        ({"word": "a"}, "word", "at least 2 characters"),
        ({"word": "ABC"}, "word", "match pattern"),
        ({"count": 11}, "count", "less than or equal to 10"),
        ({"count": None}, "count", "valid integer"),
        ({"ratio": 2.0}, "ratio", "less than or equal to 1"),
        ({"mode": "medium"}, "mode", "'fast' or 'slow'"),
        ({"color": "blue"}, "color", "'red' or 'green'"),
        ({"maybe_color": "blue"}, "maybe_color", "'red' or 'green'"),
        ({"limit": "many"}, "limit", "valid integer"),
        ({"endpoint": {"host": "h", "port": 0}}, "endpoint§port", "greater than or equal to 1"),
        ({"numbers": [1, "x"]}, "numbers§1", "valid integer"),
        ({"items": [{"name": "", "qty": 1}]}, "items§0§name", "at least 1 character"),
        ({"items": [{"qty": 1}]}, "items§0§name", "Field required"),
        ({"labels": {"k": 5}}, "labels§k", "valid string"),
        ({"token": 5}, "token", "valid string"),
    ],
)
def test_an_invalid_value_is_refused_on_its_field(kinds, change, key, fragment):
    form = make_form(kinds, {**STORED, **change}, stored=STORED)
    assert not form.is_valid()
    error_map = widget_config(form)["errorMap"]
    assert list(error_map) == [key], error_map
    assert any(fragment in message for message in error_map[key]), error_map
    # The errors are also listed above the widget, with the labels the user sees.
    assert any(fragment in message for message in form.errors["config"])


def test_an_unknown_key_is_reported_at_the_form_level():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert jsonform_schema.error_map(schema, [(("zzz",), "Extra inputs are not permitted")]) == {
        "": ["zzz: Extra inputs are not permitted"]
    }


def test_union_tags_are_stripped_from_error_locations():
    schema = jsonform_schema.to_jsonform_schema(
        {"type": "object", "properties": {"u": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}}
    )
    assert jsonform_schema.error_map(schema, [(("u", "int"), "bad int"), (("u", "str"), "bad str")]) == {
        "u": ["bad int", "bad str"]
    }


def test_each_form_gets_its_own_schema_copy(kinds):
    first = make_form(kinds, {**STORED, "count": 99}, stored=STORED)
    assert not first.is_valid()
    second = make_form(kinds, stored=STORED)
    assert widget_config(second)["errorMap"] == {}
    assert widget_config(second)["schema"] == widget_config(first)["schema"]


def test_a_plugin_that_does_not_load_shows_the_error_and_saves_nothing():
    broken = Plugin(package="tests.plugins.no_such_plugin@v1_0_0.plugin.Plugin", interval=10)
    form = make_form(broken, {"a": 1})
    assert "does not load" in str(form["config"].help_text)
    assert not form.is_valid()
    assert "module not found" in " ".join(form.errors["config"])


def test_secret_inputs_say_that_empty_keeps_the_saved_value(kinds):
    schema = widget_config(make_form(kinds, stored=STORED))["schema"]
    assert schema["properties"]["token"]["help_text"] == "Leave empty to keep the saved value."
    assert "help_text" not in widget_config(make_form(kinds))["schema"]["properties"]["token"]


def test_a_secret_with_nothing_saved_has_no_keep_hint(kinds):
    schema = widget_config(make_form(kinds, stored={**STORED, "token": ""}))["schema"]
    assert "help_text" not in schema["properties"]["token"]


def test_an_outdated_stored_config_is_shown_as_stored_with_new_keys_filled(kinds):
    outdated = {"word": "TOO LONG FOR THE FIELD", "must": True}
    data = initial_config(kinds, outdated)
    assert data["word"] == "TOO LONG FOR THE FIELD" and data["count"] == 5 and data["tags"] == ["x"]
    form = make_form(kinds, submitted(make_form(kinds, stored=outdated)), stored=outdated)
    assert not form.is_valid()
    assert list(widget_config(form)["errorMap"]) == ["word"]
