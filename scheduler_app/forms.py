"""Forms of the users' pages: one job (description + schema-driven config) per form.

The config field comes from ``scheduler_app.config_forms`` (the plugin host's converter from
Pydantic schemas to django-jsonform); Pydantic is the authority, and its errors are put on
the widget's ``error_map`` so each message shows under the input it is about.
"""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms

from scheduler_app import jsonform_schema, services
from scheduler_app.config_forms import ConfigField, clear_secrets, initial_config
from scheduler_app.form_renderer import PAGE_FORM_RENDERER
from scheduler_app.models import Job, Plugin
from scheduler_app.plugin_host import ConfigValidationError
from scheduler_app.schedules import ScheduleError, seconds_in_words
from scheduler_app.services import JobSchedule, ScheduleValidationError

#: The form fields that make up a ``services.JobSchedule`` (same names as the Job fields).
SCHEDULE_FIELDS = tuple(JobSchedule.__dataclass_fields__)


def schedule_fields() -> dict[str, forms.Field]:
    """The schedule and retry inputs; their rules are ``services.validate_schedule``'s, not here."""
    return {
        "schedule": forms.CharField(
            label="Schedule",
            max_length=120,
            required=False,
            widget=forms.TextInput(
                attrs={
                    "placeholder": "e.g. 0 8 * * 1-5  or  every 5m",
                    "autocomplete": "off",
                    "spellcheck": "false",
                    "data-schedule": "schedule",
                    "class": "mono",
                }
            ),
            help_text="Empty: the plugin's interval. An interval: every 30s, every 5m, every 2h, every 1d. "
            "Cron: minute hour day month weekday (0 8 * * 1-5 = weekdays at 08:00); "
            "6 fields add seconds first (*/2 * * * * * = every 2 seconds).",
        ),
        "timezone": forms.CharField(
            label="Time zone",
            max_length=64,
            required=False,
            widget=forms.TextInput(attrs={"list": "tz-names", "autocomplete": "off", "data-schedule": "timezone"}),
            help_text="The wall clock a cron schedule follows, e.g. Europe/Paris.",
        ),
        "jitter_seconds": forms.IntegerField(
            label="Jitter (seconds)",
            min_value=0,
            initial=0,
            required=False,
            widget=forms.NumberInput(attrs={"data-schedule": "jitter_seconds", "min": 0}),
            help_text="Start each run up to this much later (spreads load; the same delay on every node).",
        ),
        "max_retries": forms.IntegerField(
            label="Retries",
            min_value=0,
            max_value=services.MAX_RETRIES,
            initial=0,
            required=False,
            widget=forms.NumberInput(attrs={"min": 0, "max": services.MAX_RETRIES}),
            help_text="Try a failed or timed-out run again this many times (not a cancelled one).",
        ),
        "retry_delay_seconds": forms.IntegerField(
            label="First retry after (s)",
            min_value=1,
            initial=10,
            required=False,
            widget=forms.NumberInput(attrs={"min": 1}),
            help_text="Doubled for each next retry…",
        ),
        "retry_max_delay_seconds": forms.IntegerField(
            label="Longest delay (s)",
            min_value=1,
            initial=600,
            required=False,
            widget=forms.NumberInput(attrs={"min": 1}),
            help_text="…up to this delay.",
        ),
    }


def validate_schedule_fields(form: forms.BaseForm, plugin: Plugin | None, user: Any) -> None:
    """Validate a form's schedule fields through ``services.validate_schedule`` (the one place
    the rules live) and put the result in ``cleaned_data["job_schedule"]`` or the errors on
    their fields. Used by the users' form and the admin's."""
    data = form.cleaned_data
    if plugin is None or any(name in form.errors for name in SCHEDULE_FIELDS):
        return
    values: dict[str, Any] = {}
    for name in SCHEDULE_FIELDS:
        # A post without the field (an older page, a script) keeps what is stored.
        posted = form.add_prefix(name) in form.data
        value = data.get(name) if posted else form.initial.get(name)
        if value is None or value == "":
            value = "" if name in ("schedule", "timezone") else form.fields[name].initial
        values[name] = value
    try:
        data["job_schedule"] = services.validate_schedule(plugin, JobSchedule(**values), user=user)
    except ScheduleValidationError as exc:
        for name, message in exc.errors.items():
            form.add_error(name, message)


class JobForm(forms.Form):
    """A job's description, schedule and config.

    ``cleaned_data["config"]`` is the validated config dict and
    ``cleaned_data["job_schedule"]`` the validated ``services.JobSchedule``.
    """

    # The plugin page renders several of these per request: the input widgets without their templates.
    default_renderer = PAGE_FORM_RENDERER

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
        user: Any = None,
        job: Job | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.plugin = plugin
        self.user = user
        self.job = job
        self.fields.update(schedule_fields())
        self.fields["schedule"].widget.attrs["placeholder"] = (
            f"empty = every {seconds_in_words(plugin.interval)} (the plugin's interval)"
        )
        if plugin.min_interval > 1:
            limit = seconds_in_words(plugin.min_interval)
            self.fields["schedule"].help_text += f" This plugin runs at most once every {limit}."
        self.fields["config"] = ConfigField(
            plugin, stored=stored, initial=initial_config(plugin, stored), label="Configuration", disabled=readonly
        )
        if readonly:
            for name in ("description", *SCHEDULE_FIELDS):
                self.fields[name].disabled = True
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
    def retry_fields(self) -> list[forms.BoundField]:
        """The retry inputs, laid out in a row of their own."""
        return [self[name] for name in ("max_retries", "retry_delay_seconds", "retry_max_delay_seconds")]

    @property
    def secret_states(self) -> list[Any]:
        return cast(ConfigField, self.fields["config"]).secret_states

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        validate_schedule_fields(self, self.plugin, self.user)
        return data

    def schedule_preview(self) -> services.SchedulePreview | None:
        """The preview shown before any typing (static/js/schedule.js refreshes it as one types)."""
        if self.is_bound:
            if not self.is_valid() or "job_schedule" not in self.cleaned_data:
                return None
            wanted = self.cleaned_data["job_schedule"]
        else:
            wanted = JobSchedule(
                schedule=self.initial.get("schedule") or "",
                timezone=self.initial.get("timezone") or "",
                jitter_seconds=self.initial.get("jitter_seconds") or 0,
            )
        try:
            return services.preview_schedule(self.plugin, wanted, job=self.job, user=self.user)
        except (ScheduleValidationError, ScheduleError):
            return None

    def add_schedule_errors(self, exc: ScheduleValidationError) -> None:
        for name, message in exc.errors.items():
            self.add_error(name if name in self.fields else None, message)

    def add_config_errors(self, exc: ConfigValidationError) -> None:
        """Show errors the service layer found (normally the field already caught them)."""
        field = cast(ConfigField, self.fields["config"])
        field.widget.add_error(jsonform_schema.error_map(field.schema, [(e.loc, e.message) for e in exc.errors]))
        self.add_error("config", "Please correct the errors below.")


class ConfirmDeleteForm(forms.Form):
    """Nothing to fill in: the form exists so the confirmation POST carries CSRF."""
