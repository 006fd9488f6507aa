"""The form field that edits a job's config: a django-jsonform widget validated by Pydantic.

Usage, in any Django form (a user's page or the admin's Job change form)::

    from scheduler_app.config_forms import ConfigField, initial_config

    class JobForm(forms.Form):
        def __init__(self, *args, plugin, job=None, **kwargs):
            super().__init__(*args, **kwargs)
            stored = job.config if job else None
            self.fields["config"] = ConfigField(plugin, stored=stored, initial=initial_config(plugin, stored))

    # form.cleaned_data["config"] is the validated, normalised dict:
    services.update_job(job, config=form.cleaned_data["config"])

In a ModelForm (the admin), build the field in ``__init__`` the same way, once the plugin is
known (``self.instance.plugin`` or the submitted plugin); ``Job.config`` is a plain JSONField,
so the admin's default widget is replaced by this field.

What the field does:

- Renders the plugin's Config schema converted for the widget (``jsonform_schema``); the
  widget gets a callable returning a fresh copy, so no form instance can mutate another's.
- Parses the submitted text with ``config_input.parse_config_text`` (deep nesting, huge
  integers, NaN give a field error, not a server error).
- Validates on the server with Pydantic through ``services.validate_config`` (the same rule as
  every other path); errors are shown on the matching inputs through the widget's
  ``error_map`` and listed above the widget; a load error of the plugin's code refuses saving.
- Secrets (``SecretStr``) are never sent to the browser: every value rendered goes through
  ``prepare_value``, which blanks them. A blank secret submitted means "unchanged": the value
  in ``stored`` is kept; ``secret_states`` tells the page which secrets are set, and
  ``clear_secrets`` (the page's Clear checkboxes) forgets a stored one so it can be cleared.
  Stored secrets are encrypted (``secretbox``); validation decrypts them for Pydantic.
- ``""`` in an ``Optional`` field is submitted as ``None``.
- A plugin whose code does not load renders a plain JSON textarea with the load error as
  help text, and refuses to save: never a 500.

Pages outside the admin must put ``{{ form.media }}`` in the page, and should define
``:root { --error-fg: #ba2121; }`` (the widget's CSS uses admin variables for errors) and
``novalidate`` on the ``<form>`` if browser-side checks get in the way.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from django_jsonform.forms.fields import JSONFormField

from scheduler_app import config_input, jsonform_schema, plugin_host
from scheduler_app.models import Plugin
from scheduler_app.plugin_host import ConfigValidationError, PluginLoadError

__all__ = ["ConfigField", "form_schema", "initial_config"]


def form_schema(plugin: Plugin | str) -> dict[str, Any]:
    """The converted (widget-ready) schema of a plugin, a copy the caller may change; raises
    PluginLoadError."""
    if isinstance(plugin, str):
        loaded = plugin_host.get_plugin(plugin)
    else:
        # With the code version, a web process that missed a reload picks the new code up here.
        loaded = plugin_host.get_plugin(plugin.package, plugin.code_version)
    cached = _converted.get(loaded.package)
    if cached is None or cached[0] is not loaded:
        schema = jsonform_schema.to_jsonform_schema(loaded.schema(), getattr(loaded.instance, "Config", None))
        cached = _converted[loaded.package] = (loaded, schema)
    return copy.deepcopy(cached[1])


#: The converted schema of each plugin's loaded code, with the ``LoadedPlugin`` it came from.
#: Building it (``model_json_schema`` and the conversion) cost ~1 ms per form, and the plugin
#: page renders one form per configuration; a copy costs a tenth of that. A reload loads the
#: code into a new ``LoadedPlugin``, so new code never gets the old schema.
_converted: dict[str, tuple[plugin_host.LoadedPlugin, dict[str, Any]]] = {}


def initial_config(plugin: Plugin, stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data to show in the form: ``stored`` normalised (missing keys filled with defaults),
    or the Config's defaults for a new job.

    A stored config that no longer validates (the plugin changed) is shown as stored, with
    missing keys filled from the schema's defaults, so the user sees what they had and the
    errors appear when they save. Secrets are still in the
    result; the field blanks them before rendering.
    """
    from scheduler_app import services

    try:
        return services.validate_config(plugin, dict(stored or {}))
    except ConfigValidationError:
        pass
    try:
        defaults = _schema_defaults(form_schema(plugin))
    except PluginLoadError:
        defaults = {}
    # Keys the stored config lacks (added to Config since) start from their defaults.
    return {**defaults, **stored} if isinstance(stored, dict) else defaults


def _schema_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """Defaults from the schema for a config whose Config cannot be built empty."""
    defs = schema.get("$defs", {})
    result: dict[str, Any] = {}
    for name, node in schema.get("properties", {}).items():
        target = jsonform_schema._resolve(node, defs)
        if "default" in node:
            result[name] = copy.deepcopy(node["default"])
        elif target.get("type") == "object" and not node.get("x-nullable"):
            result[name] = _schema_defaults({**target, "$defs": defs})
        elif node.get("x-nullable"):
            result[name] = None
    return result


@dataclass
class SecretState:
    """One secret of a stored config: where it is (a JSON list), its label, and whether a value is set."""

    path: str
    label: str
    is_set: bool


def clear_secrets(field: ConfigField, paths: list[str]) -> None:
    """Forget the stored values at ``paths`` (JSON lists) so a blank submission clears them."""
    for raw in paths:
        try:
            path = json.loads(raw)
        except ValueError:
            continue
        node = field.stored
        for key in path[:-1] if isinstance(path, list) else []:
            node = node[key] if isinstance(node, (dict, list)) and _has(node, key) else None
        if isinstance(path, list) and path and isinstance(node, (dict, list)) and _has(node, path[-1]):
            node[path[-1]] = None


def _has(node: Any, key: Any) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(key, int) and 0 <= key < len(node)


class ConfigField(JSONFormField):
    """A job config edited with django-jsonform and validated by the plugin's Pydantic Config.

    :param plugin: the ``Plugin`` whose Config this edits.
    :param stored: the config saved so far (``job.config``), used to keep secrets left blank.
    Other keyword arguments go to Django's field (``initial``, ``label``, ``help_text``...).
    """

    def __init__(self, plugin: Plugin, *, stored: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.plugin = plugin
        self.stored = copy.deepcopy(stored) if stored is not None else None
        self.load_error: str | None = None
        try:
            self.schema = form_schema(plugin)
        except PluginLoadError as exc:
            self.load_error = str(exc)
            self.schema = {"type": "object", "properties": {}}
        #: The secrets of the stored config, for the page to say which are set (and offer Clear).
        self.secret_states: list[SecretState] = []
        if self.stored:
            jsonform_schema.hint_kept_secrets(self.schema, self.stored)
            for path in jsonform_schema.secret_paths(self.schema, self.stored):
                value = jsonform_schema._get(self.stored, path)
                self.secret_states.append(
                    SecretState(json.dumps(list(path)), _label(self.schema, path), value not in (None, ""))
                )
        # An empty config ({}) is valid for a plugin without settings; Pydantic decides.
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Configuration")
        if self.load_error:
            kwargs["widget"] = forms.Textarea(attrs={"rows": 8, "cols": 80})
            kwargs["help_text"] = f"The plugin's code does not load, so this config cannot be edited: {self.load_error}"
        schema = self.schema
        super().__init__(schema=lambda: copy.deepcopy(schema), **kwargs)

    def prepare_value(self, value: Any) -> Any:
        """What goes to the browser: secrets blanked, whatever the value came from."""
        if isinstance(value, dict):
            value = jsonform_schema.mask_secrets(self.schema, value)
        elif isinstance(value, str) and not isinstance(value, InvalidJSONInput) and not self.load_error:
            try:
                parsed = config_input.parse_config_text(value)
            except ConfigValidationError:
                parsed = None
            if isinstance(parsed, dict):
                value = jsonform_schema.mask_secrets(self.schema, parsed)
        return super().prepare_value(value)

    def to_python(self, value: Any) -> Any:
        """Parse the submitted text with the config rules' parser (never a 500 on hostile JSON)."""
        if self.disabled or not isinstance(value, str) or value in self.empty_values:
            return super().to_python(value)
        try:
            return config_input.parse_config_text(value)
        except ConfigValidationError as exc:
            raise ValidationError([e.message for e in exc.errors], code="invalid") from exc

    def bound_data(self, data: Any, initial: Any) -> Any:
        """What a re-rendered form shows: the parsed input, or the text as typed if it cannot be
        stored (Django's own json.loads would raise on deep or huge input, and a lone surrogate
        parsed from ``\\ud800`` cannot be encoded into the page)."""
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            parsed = config_input.parse_config_text(data)
            config_input.check_storable(parsed)
        except ConfigValidationError:
            return InvalidJSONInput(data)
        return parsed

    def validate(self, value: Any) -> None:
        # Only Django's own checks: django-jsonform's validator rejects nulls and demands
        # every key, so Pydantic (in clean) is the one authority on the content.
        forms.JSONField.validate(self, value)

    def clean(self, value: Any) -> dict[str, Any]:
        data = self.to_python(value)
        self.validate(data)
        if data in (None, ""):
            data = {}
        from scheduler_app import services

        try:
            if isinstance(data, dict):
                # The storable check first: the widget's helpers walk the data recursively.
                config_input.check_storable(data)
                data = jsonform_schema.prepare_submission(self.schema, data, self.stored)
            return services.validate_config(self.plugin, data)
        except ConfigValidationError as exc:
            errors = [(e.loc, e.message) for e in exc.errors]
            if hasattr(self.widget, "add_error"):
                self.widget.add_error(jsonform_schema.error_map(self.schema, errors))
            raise ValidationError(
                [_describe(self.schema, loc, message) for loc, message in errors], code="invalid_config"
            ) from exc

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return super().has_changed(initial, data)
        except (TypeError, ValueError, RecursionError, ValidationError):
            return True


def _describe(schema: dict[str, Any], loc: tuple[Any, ...], message: str) -> str:
    """``Alerting → Threshold: Input should be ...`` (labels as the widget shows them)."""
    where = _label(schema, loc)
    return f"{where}: {message}" if where else message


def _label(schema: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """``Alerting → Threshold``: the place ``loc`` in the words the widget shows."""
    defs = schema.get("$defs", {})
    labels: list[str] = []
    node: dict[str, Any] = schema
    path, rest = jsonform_schema.widget_path(schema, loc)
    for key in path:
        target = jsonform_schema._resolve(node, defs)
        if isinstance(key, int):
            labels.append(f"#{key + 1}")
            node = target.get("items", {})
        else:
            node = target.get("properties", {}).get(key) or target.get("additionalProperties") or {}
            labels.append(str(node.get("title") or key) if key in target.get("properties", {}) else str(key))
    labels.extend(str(r) for r in rest)
    return " → ".join(labels)
