"""The config field's widget in a real browser: every field kind renders and round-trips.

The form is rendered by Django in this process and opened from a file in Debian's chromium
with django-jsonform's own static files, so what is checked is exactly what the converted
schema does in the widget's JavaScript. What the widget writes back (its hidden textarea)
is then submitted to the same form, as a browser's POST would be. The users' pages and the
admin are tested through a real server by their own browser tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import django_jsonform
import pytest
from django import forms
from django.conf import settings

from scheduler_app import secretbox
from scheduler_app.config_forms import ConfigField, initial_config
from scheduler_app.models import Plugin
from tests.test_plugin_config_forms import KINDS, STORED

pytestmark = pytest.mark.browser

STATIC = Path(django_jsonform.__file__).parent / "static"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class JobForm(forms.Form):
    def __init__(self, *args: Any, plugin: Plugin, stored: dict | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["config"] = ConfigField(plugin, stored=stored, initial=initial_config(plugin, stored))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    page.close()
    assert not errors, errors


def open_form(page, tmp_path: Path, form: forms.Form) -> None:
    media = str(form.media).replace(f'"/{settings.STATIC_URL}', f'"file://{STATIC}/')
    media = media.replace(f'"{settings.STATIC_URL}', f'"file://{STATIC}/')
    html = f"""<!doctype html><html><head><meta charset="utf-8">{media}
        <style>:root {{ --error-fg: #ba2121; }}</style></head>
        <body><form novalidate>{form["config"]}</form></body></html>"""
    path = tmp_path / "form.html"
    path.write_text(html)
    page.goto(path.as_uri())
    page.wait_for_selector(".rjf-form-wrapper, .rjf-form-group", timeout=10_000)
    assert "(!) Error" not in page.inner_text("body")


def posted(page) -> dict:
    """What the widget would submit: the hidden textarea's JSON."""
    return json.loads(page.eval_on_selector("textarea[data-django-jsonform]", "t => t.value"))


def field(page, *coords: str | int):
    return page.locator(f'[name="rjf§{"§".join(map(str, coords))}"]')


def test_a_stored_config_renders_and_comes_back_unchanged(page, tmp_path):
    plugin = Plugin(package=KINDS, interval=10)
    open_form(page, tmp_path, JobForm(plugin=plugin, stored=STORED))
    body = page.inner_text("body")
    for label in ("Word", "Maybe Color", "Endpoint", "Items", "Labels", "Token"):
        assert label in body
    assert "Lowercase word" in body  # a leaf description, shown as help text
    assert field(page, "count").input_value() == "7"
    assert field(page, "endpoint", "port").input_value() == "5432"
    assert field(page, "items", 0, "name").input_value() == "n"
    assert field(page, "token").input_value() == ""  # the stored secret never reaches the page
    assert field(page, "token").get_attribute("type") == "password"
    submitted = posted(page)
    form = JobForm({"config": json.dumps(submitted)}, plugin=plugin, stored=STORED)
    assert form.is_valid(), form.errors
    assert secretbox.reveal(form.cleaned_data["config"]) == STORED  # the secret comes back sealed


def test_editing_optional_enum_list_and_dict_fields_saves_what_was_typed(page, tmp_path):
    plugin = Plugin(package=KINDS, interval=10)
    open_form(page, tmp_path, JobForm(plugin=plugin, stored=STORED))
    field(page, "note").fill("a note")
    field(page, "maybe_color").select_option("green")
    field(page, "limit").fill("")
    field(page, "mode").select_option("fast")
    field(page, "tags", 1).fill("changed")
    field(page, "labels", "k").fill("w")
    field(page, "must").uncheck()
    submitted = posted(page)
    form = JobForm({"config": json.dumps(submitted)}, plugin=plugin, stored=STORED)
    assert form.is_valid(), form.errors
    config = secretbox.reveal(form.cleaned_data["config"])
    assert (config["note"], config["maybe_color"], config["limit"], config["mode"]) == ("a note", "green", None, "fast")
    assert config["tags"] == ["a", "changed"] and config["labels"] == {"k": "w"} and config["must"] is False
    assert config["token"] == STORED["token"]  # left blank: unchanged

    # Back to "nothing" for the optional enum and string.
    field(page, "maybe_color").select_option(label="(none)")
    field(page, "note").fill("")
    form = JobForm({"config": json.dumps(posted(page))}, plugin=plugin, stored=STORED)
    assert form.is_valid(), form.errors
    assert (form.cleaned_data["config"]["maybe_color"], form.cleaned_data["config"]["note"]) == (None, None)


def test_a_fresh_form_submits_the_defaults(page, tmp_path):
    plugin = Plugin(package=KINDS, interval=10)
    open_form(page, tmp_path, JobForm(plugin=plugin))
    submitted = posted(page)
    form = JobForm({"config": json.dumps(submitted)}, plugin=plugin)
    assert form.is_valid(), form.errors
    config = form.cleaned_data["config"]
    assert config["tags"] == ["x"] and config["numbers"] == [1, 2] and config["must"] is False
    assert config["endpoint"] == {"host": "localhost", "port": 8080} and config["note"] is None


def test_errors_show_under_the_right_inputs(page, tmp_path):
    plugin = Plugin(package=KINDS, interval=10)
    bad = {**STORED, "count": 11, "endpoint": {"host": "db", "port": 0}, "items": [{"name": "", "qty": 1}]}
    form = JobForm({"config": json.dumps(bad)}, plugin=plugin, stored=STORED)
    assert not form.is_valid()
    open_form(page, tmp_path, form)
    errors = page.locator(".rjf-error-text").all_inner_texts()
    assert "Input should be less than or equal to 10" in errors
    assert "Input should be greater than or equal to 1" in errors
    assert "String should have at least 1 character" in errors
    # Each message sits in the group of its own input.
    port_group = field(page, "endpoint", "port").locator("xpath=ancestor::*[contains(@class,'rjf-input-group')][1]")
    assert "greater than or equal to 1" in port_group.inner_text()
