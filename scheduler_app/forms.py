"""Forms of the users' pages: one job (description + schema-driven config) per form.

The config field comes from ``scheduler_app.config_forms`` (the plugin host's converter from
Pydantic schemas to django-jsonform); Pydantic is the authority, and its errors are put on
the widget's ``error_map`` so each message shows under the input it is about.
"""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms

from scheduler_app import jsonform_schema
from scheduler_app.config_forms import ConfigField, clear_secrets, initial_config
from scheduler_app.models import Plugin
from scheduler_app.plugin_host import ConfigValidationError


class JobForm(forms.Form):
    """A job's description and config; ``cleaned_data["config"]`` is the validated dict."""

    description = forms.CharField(
        label="Description",
        max_length=200,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "e.g. nightly check for the staging team"}),
        help_text="A note to tell this configuration apart from the others.",
    )

    def __init__(
        self,
        plugin: Plugin,
        *args: Any,
        stored: dict[str, Any] | None = None,
        readonly: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.plugin = plugin
        self.fields["config"] = ConfigField(
            plugin, stored=stored, initial=initial_config(plugin, stored), label="Configuration", disabled=readonly
        )
        if readonly:
            self.fields["description"].disabled = True
        if self.is_bound and not readonly:
            # The page's "Clear" boxes: forget those stored secrets before the config is cleaned.
            getlist = getattr(self.data, "getlist", None)  # a QueryDict from a request; a dict in tests
            ticked = getlist(self.add_prefix("clear_secret")) if getlist else []
            clear_secrets(cast(ConfigField, self.fields["config"]), ticked)

    @property
    def has_required(self) -> bool:
        """Whether any input of the config is required (the page then explains the * marker)."""
        return '"required"' in json.dumps(cast(ConfigField, self.fields["config"]).schema)

    @property
    def secret_states(self) -> list[Any]:
        return cast(ConfigField, self.fields["config"]).secret_states

    def add_config_errors(self, exc: ConfigValidationError) -> None:
        """Show errors the service layer found (normally the field already caught them)."""
        field = cast(ConfigField, self.fields["config"])
        field.widget.add_error(jsonform_schema.error_map(field.schema, [(e.loc, e.message) for e in exc.errors]))
        self.add_error("config", "Please correct the errors below.")


class ConfirmDeleteForm(forms.Form):
    """Nothing to fill in: the form exists so the confirmation POST carries CSRF."""
